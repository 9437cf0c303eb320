"""End-to-end fixtures: the real server as a subprocess, real headless Chromium (Debian's).

The server runs exactly as an operator runs it (`opportune serve`), on a free port, with a
temporary data folder and a copy of the example workspace whose site allows that port's
origin. Chromium is the system package driven by Playwright: no browser is downloaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_WORKSPACE = ROOT / "src/opportune/examples/workspace"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@dataclass
class Server:
    base: str
    api_key: str
    log: Path

    def api(self, path: str, **params: Any) -> Any:
        """GET an admin read endpoint; fails the test on anything but 200."""
        r = httpx.get(
            f"{self.base}{path}", params=params, headers={"X-API-Key": self.api_key}, timeout=10
        )
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()

    def sessions_of_visitor(self, visitor_id: str) -> list[dict[str, Any]]:
        """All sessions of a visitor, oldest first (the endpoint pages newest first)."""
        return list(reversed(_all_pages(self, f"/v1/visitors/{visitor_id}/sessions")))

    def events_of_session(self, session_id: str) -> list[dict[str, Any]]:
        return _all_pages(self, f"/v1/sessions/{session_id}/events", limit=7)

    def events_of_visitor(self, visitor_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for s in self.sessions_of_visitor(visitor_id):
            out.extend(self.events_of_session(s["id"]))
        return out


def _all_pages(server: Server, path: str, **params: Any) -> list[dict[str, Any]]:
    # A small page size on purpose: the journey spans several pages, so paging is exercised.
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = server.api(path, **params, **({"cursor": cursor} if cursor else {}))
        items.extend(page["items"])
        cursor = page.get("nextCursor")
        if not cursor:
            return items


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def start_server(tmp: Path, *extra: str) -> Iterator[Server]:
    """`opportune serve` on a free port with a copy of the example workspace whose site
    allows that port's origin, a fresh data folder under ``tmp``; stopped at the end."""
    port = _free_port()
    workspace = tmp / "workspace"
    workspace.mkdir()
    # Every file of the example workspace (its segments and outcomes too), the site's
    # origins rewritten to allow this port.
    for source in sorted([*EXAMPLE_WORKSPACE.glob("*.yaml"), *EXAMPLE_WORKSPACE.glob("*.yml")]):
        shutil.copyfile(source, workspace / source.name)
    site = yaml.safe_load((EXAMPLE_WORKSPACE / "sites.yaml").read_text())
    site["origins"] = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    (workspace / "sites.yaml").write_text(yaml.safe_dump(site))
    api_key = "e2e-test-key"
    log = tmp / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opportune.cli",
                "serve",
                "--workspace",
                str(workspace),
                "--data-dir",
                str(tmp / "data"),
                "--port",
                str(port),
                "--api-key",
                api_key,
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a loaded 2-core machine starts slowly
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not start in 90 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield Server(base, api_key, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def serve() -> Callable[..., contextlib.AbstractContextManager[Server]]:
    """``start_server``, for a module that needs a server of its own."""
    return start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`opportune serve` on a free port, shared by the session's tests."""
    with start_server(tmp_path_factory.mktemp("e2e")) as s:
        yield s


# Module scope, not session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, and later tests that call asyncio.run() would then fail.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def launch(playwright: Any) -> Iterator[Callable[..., Any]]:
    """Start Debian's chromium with extra command-line arguments; all closed at the end.

    Missing chromium is a broken test environment, not a reason to skip.
    """
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's `chromium` is not installed (apt-get install chromium)")
    started: list[Any] = []

    def start(*extra: str) -> Any:
        b = playwright.chromium.launch(executable_path=path, args=[*CHROMIUM_ARGS, *extra])
        started.append(b)
        return b

    yield start
    for b in started:
        b.close()


@pytest.fixture(scope="module")
def browser(launch: Callable[..., Any]) -> Any:
    return launch()


def watch(browser: Any, **context: Any) -> tuple[Any, Any, list[str]]:
    """A new context and page whose console errors and warnings, uncaught errors and
    dialogs are collected (a page test ends by asserting the list is empty)."""
    ctx = browser.new_context(accept_downloads=True, **context)
    page = ctx.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: (
            problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    return ctx, page, problems


@pytest.fixture
def watched(browser: Any) -> Callable[..., tuple[Any, Any, list[str]]]:
    """``watch`` on the module's browser: ``ctx, page, problems = watched(viewport=...)``."""
    return lambda **context: watch(browser, **context)
