"""The browser scripts as a browser receives them: minified (calmjs.parse) with a source map,
compressed once (brotli, gzip), tagged with a strong ETag so revisits cost a 304.

The sources in ``sdk/`` stay readable and are what the repository holds; the minified form
is built from them the first time it is asked for and kept for the process's life, keyed by
the source's hash, so there is no build step to forget and no generated file to commit.
The source map points at the readable file, served beside it under ``/sdk/src/``.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import brotli
from calmjs.parse import es5
from calmjs.parse import io as js_io
from calmjs.parse.rules import minify, obfuscate
from calmjs.parse.unparsers.es5 import Unparser
from fastapi import APIRouter, Request, Response

SDK_DIR = Path(__file__).resolve().parent.parent / "sdk"
SCRIPTS = ("opportune.js", "opportune-widget.js")

# The snippet's URL is not versioned (sites paste it once), so browsers keep it briefly and
# revalidate with the ETag; a change of the file reaches every visitor within five minutes.
CACHE_CONTROL = "public, max-age=300"
_JS = "application/javascript; charset=utf-8"
_MAP = "application/json"


@dataclass(frozen=True, slots=True)
class Encoded:
    """One body in every encoding a browser may accept, and its ETag."""

    identity: bytes
    gzip: bytes
    br: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Encoded:
        digest = hashlib.sha256(body).hexdigest()[:20]
        return cls(
            identity=body,
            gzip=gzip.compress(body, compresslevel=9, mtime=0),
            br=brotli.compress(body, quality=11),
            etag=f'"{digest}"',
        )


@dataclass(frozen=True, slots=True)
class Script:
    """A script as served: its minified code and its source map."""

    code: Encoded
    source_map: Encoded
    source: Encoded


def minify_script(source: str, *, name: str) -> tuple[str, str]:
    """``(minified code, source map)`` of an ES5 script; the licence header (``/*! … */``)
    is kept as minifiers do. The map names the readable file as ``src/<name>``.

    >>> code, smap = minify_script("/*! x */\\nfunction f(longName) { return longName + 1; }",
    ...                            name="f.js")
    >>> code.splitlines()[:2]
    ['/*! x */', 'function f(a){return a+1}']
    >>> '"src/f.js"' in smap
    True
    """
    program = es5(source)
    program.sourcepath = f"src/{name}"
    out, smap = io.StringIO(), io.StringIO()
    out.name, smap.name = name, f"{name}.map"
    js_io.write(
        Unparser(rules=(minify(), obfuscate())),
        program,
        out,
        smap,
        sourcemap_normalize_paths=False,
        source_mapping_url=f"{name}.map",
    )
    header = source.split("*/", 1)[0] + "*/\n" if source.startswith("/*!") else ""
    return header + out.getvalue(), smap.getvalue()


class ScriptCache:
    """Builds each script once per content; safe to ask from several threads at once."""

    def __init__(self, directory: Path = SDK_DIR) -> None:
        self._dir = directory
        self._lock = threading.Lock()
        self._built: dict[str, tuple[tuple[int, int], Script]] = {}

    def get(self, name: str) -> Script:
        # A stat per request, not a read and a hash: the snippet is fetched on page views.
        st = (self._dir / name).stat()
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._built.get(name)
            if hit is not None and hit[0] == key:
                return hit[1]
            raw = (self._dir / name).read_bytes()
            code, smap = minify_script(raw.decode("utf-8"), name=name)
            script = Script(
                code=Encoded.of(code.encode()),
                source_map=Encoded.of(smap.encode()),
                source=Encoded.of(raw),
            )
            self._built[name] = (key, script)
            return script


def negotiated(request: Request, body: Encoded, media_type: str) -> Response:
    """The body in the best encoding the request accepts, or 304 if the browser has it."""
    headers = {
        "cache-control": CACHE_CONTROL,
        "access-control-allow-origin": "*",
        "etag": body.etag,
        "vary": "Accept-Encoding",
    }
    wanted = request.headers.get("if-none-match", "")
    if body.etag in (t.strip().removeprefix("W/") for t in wanted.split(",")):
        return Response(status_code=304, headers=headers)
    accepts = _accepted(request.headers.get("accept-encoding", ""))
    if "br" in accepts:
        headers["content-encoding"] = "br"
        return Response(body.br, media_type=media_type, headers=headers)
    if "gzip" in accepts:
        headers["content-encoding"] = "gzip"
        return Response(body.gzip, media_type=media_type, headers=headers)
    return Response(body.identity, media_type=media_type, headers=headers)


def _accepted(header: str) -> set[str]:
    """Codings an ``Accept-Encoding`` header allows (``q=0`` refuses one)."""
    out = set()
    for part in header.split(","):
        coding, _, params = part.partition(";")
        try:
            q = float(params.strip().removeprefix("q=")) if "q=" in params else 1.0
        except ValueError:
            q = 1.0
        if coding.strip() and q > 0:
            out.add(coding.strip().lower())
    return out


def assets_router(cache: ScriptCache | None = None) -> APIRouter:
    """``/sdk/<script>`` minified, ``/sdk/<script>.map`` its map, ``/sdk/src/<script>`` the
    readable source the map points at."""
    scripts = cache if cache is not None else ScriptCache()
    router = APIRouter(include_in_schema=False)

    def add(name: str) -> None:
        # The first build takes about half a second: off the event loop.
        async def code(request: Request) -> Response:
            return negotiated(request, (await asyncio.to_thread(scripts.get, name)).code, _JS)

        async def source_map(request: Request) -> Response:
            built = await asyncio.to_thread(scripts.get, name)
            return negotiated(request, built.source_map, _MAP)

        async def source(request: Request) -> Response:
            built = await asyncio.to_thread(scripts.get, name)
            return negotiated(request, built.source, _JS)

        router.add_api_route(f"/sdk/{name}", code, methods=["GET"])
        router.add_api_route(f"/sdk/{name}.map", source_map, methods=["GET"])
        router.add_api_route(f"/sdk/src/{name}", source, methods=["GET"])

    for name in SCRIPTS:
        add(name)
    return router
