"""Print the tracking snippet's size: raw, gzip, and gzip after a conservative minification.

The target is under 8 KB minified+gzip. The engagement widget (opportune-widget.js, loaded
only when the server first offers something) is measured the same way; it has no budget of
its own, but is printed so that its growth is seen.

There is no JavaScript minifier in the project (no build step by design), so this minifies
crudely but safely: it drops comments and indentation and never touches string or
regular-expression literals, which a real minifier would also shorten (so the figure
printed is an upper bound of what a minifier reaches).

    python bench/snippet_size.py [path/to/opportune.js]   # also prints the widget's size
"""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

SNIPPET = Path(__file__).resolve().parent.parent / "src/opportune/sdk/opportune.js"
WIDGET = SNIPPET.with_name("opportune-widget.js")

# Characters after which a "/" starts a regular expression rather than a division.
_REGEX_AFTER = set("(,=:[!&|?{};+-*%<>~^")


def minify(source: str) -> str:
    """Remove comments and the whitespace around lines; keep literals byte for byte.

    A small scanner, not a parser: it knows strings, template literals, regex literals
    (by the usual "what came before the slash" rule) and both comment forms, which is all
    the snippet uses. The ``/*! ... */`` licence header is kept, as minifiers do.
    """
    out: list[str] = []
    i, n = 0, len(source)
    last = ""  # last significant character emitted
    while i < n:
        c = source[i]
        nxt = source[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "*":
            end = source.index("*/", i + 2) + 2
            if source.startswith("/*!", i):
                out.append(source[i:end] + "\n")
            i = end
            continue
        if c == "/" and nxt == "/":
            while i < n and source[i] != "\n":
                i += 1
            continue
        if c in "'\"`" or (c == "/" and (last in _REGEX_AFTER or last == "")):
            j = i + 1
            in_class = False
            while j < n:
                ch = source[j]
                if ch == "\\":
                    j += 2
                    continue
                if c == "/" and ch == "[":
                    in_class = True
                elif c == "/" and ch == "]":
                    in_class = False
                elif ch == c and not in_class:
                    break
                j += 1
            j += 1
            if c == "/":  # regex flags
                while j < n and source[j].isalpha():
                    j += 1
            out.append(source[i:j])
            last = source[j - 1]
            i = j
            continue
        if c.isspace():
            j = i
            while j < n and source[j].isspace():
                j += 1
            newline = "\n" in source[i:j]
            prev = out[-1][-1:] if out else ""
            follow = source[j] if j < n else ""
            # Keep one separator only where two words would otherwise merge, and keep line
            # breaks (automatic semicolon insertion may depend on them).
            if newline:
                out.append("\n")
            elif re.match(r"[\w$]", prev) and re.match(r"[\w$]", follow):
                out.append(" ")
            i = j
            continue
        out.append(c)
        last = c
        i += 1
    text = "".join(out)
    return re.sub(r"\n+", "\n", text).strip() + "\n"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else SNIPPET
    raw = path.read_bytes()
    small = minify(raw.decode("utf-8")).encode("utf-8")
    print(f"snippet: {path.name}")
    print(f"raw:               {len(raw):6d} bytes, gzip {len(gzip.compress(raw, 9)):6d} bytes")
    print(f"minified (crude):  {len(small):6d} bytes, gzip {len(gzip.compress(small, 9)):6d} bytes")
    print(f"gzip size (minified, target < 8192): {len(gzip.compress(small, 9))} bytes")
    if len(sys.argv) == 1 and WIDGET.exists():
        raw = WIDGET.read_bytes()
        small = minify(raw.decode("utf-8")).encode("utf-8")
        gz_raw, gz_small = len(gzip.compress(raw, 9)), len(gzip.compress(small, 9))
        print(f"widget: {WIDGET.name} (loaded only when an action arrives)")
        print(f"raw:               {len(raw):6d} bytes, gzip {gz_raw:6d} bytes")
        print(f"minified (crude):  {len(small):6d} bytes, gzip {gz_small:6d} bytes")


if __name__ == "__main__":
    main()
