"""Print the scripts' sizes as a browser receives them: the minified build the server sends
(``opportune.api.assets``: calmjs.parse, then brotli or gzip), beside the readable source.

The target is the snippet under 8 KB on the wire; the engagement widget (loaded only with
the first offer) has no budget of its own but is printed so that its growth is seen. The
Chromium test ``tests/e2e/test_snippet_served.py`` checks what a browser really downloads.

    python bench/snippet_size.py
"""

from __future__ import annotations

from opportune.api.assets import SCRIPTS, ScriptCache


def main() -> None:
    cache = ScriptCache()
    for name in SCRIPTS:
        s = cache.get(name)
        print(
            f"{name}: source {len(s.source.identity):,} B (gzip {len(s.source.gzip):,}), "
            f"minified {len(s.code.identity):,} B, gzip {len(s.code.gzip):,} B, "
            f"brotli {len(s.code.br):,} B"
        )
    snippet = cache.get("opportune.js").code
    print(
        f"| snippet `opportune.js` as served (minified, brotli / gzip) | "
        f"{len(snippet.br):,} / {len(snippet.gzip):,} bytes (< 8 KB) | "
        "`python bench/snippet_size.py` |"
    )


if __name__ == "__main__":
    main()
