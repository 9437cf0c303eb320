"""The shipped deployment files: ``deploy/nginx.conf`` passes ``nginx -t`` and, run in
front of a real Opportune, proxies what the browser does through it — a batch from the
demo page (its own origin, port included), the chat socket upgraded, Live Now's event
stream unbuffered, the request id of nginx carried to Opportune's log and back;
``compose.yaml`` and the ``Dockerfile`` say what docs/deployment.md says.

Docker cannot run here (no daemon), so the compose file is checked as YAML, not started.
``nginx -t`` resolves the upstream's name, and ``opportune`` (compose's service name) is
no name of this machine: the tests point the upstream (and the listening port) at this
machine, every other line as shipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from opportune.store import users
from opportune.store.db import make_engine

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_conf(tmp: Path, upstream_port: int, listen_port: int) -> Path:
    """The shipped file with its upstream and port on this machine; the rest untouched."""
    text = NGINX_CONF.read_text()
    assert text.count("server opportune:8000") == 1 and text.count("listen 80;") == 1
    text = text.replace("server opportune:8000", f"server 127.0.0.1:{upstream_port}")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx_args(conf: Path, tmp: Path) -> list[str]:
    assert NGINX is not None
    return [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]


@needs_nginx
def test_the_shipped_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = local_conf(tmp_path, 8000, free_port())
    args = [*nginx_args(conf, tmp_path), "-g", f"pid {tmp_path / 'nginx.pid'};", "-t"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_compose_runs_postgres_redis_a_migration_the_workers_and_the_proxy() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "opportune", "proxy"}
    app = services["opportune"]
    env = app["environment"]
    assert env["OPPORTUNE_DATABASE_URL"].startswith("postgresql://")
    assert env["OPPORTUNE_REDIS_URL"].startswith("redis://redis:")
    assert env["OPPORTUNE_WORKERS"].startswith("${OPPORTUNE_WORKERS:-")
    assert env["OPPORTUNE_LOG_FORMAT"] == "json"
    assert env["OPPORTUNE_TRUSTED_PROXY_HEADERS"] == "true"
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(app["healthcheck"]["test"])
    assert services["migrate"]["command"] == ["opportune", "migrate"]
    proxy = services["proxy"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert proxy["depends_on"]["opportune"]["condition"] == "service_healthy"
    # The upstream nginx names is the service compose starts, on the port it serves.
    assert "server opportune:8000" in NGINX_CONF.read_text()
    assert "8000" in " ".join(app["command"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["opportune", "serve"]' in dockerfile


@dataclass
class Proxied:
    base: str  # nginx
    server_log: Path


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Proxied]:
    """One Opportune (SQLite, JSON logs) and nginx with the shipped config in front."""
    app_port, proxy_port = free_port(), free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "OPPORTUNE_DATA_DIR": str(data),
        "OPPORTUNE_LOG_FORMAT": "json",
        "OPPORTUNE_TRUSTED_PROXY_HEADERS": "true",
        "OPPORTUNE_RETRAIN_INTERVAL_H": "0",
        "OPPORTUNE_REDIS_URL": "",
    }
    env.pop("OPPORTUNE_DATABASE_URL", None)
    server_log = tmp_path / "server.log"
    with server_log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "opportune.cli", "serve", "--port", str(app_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    conf = local_conf(tmp_path, app_port, proxy_port)
    args = nginx_args(conf, tmp_path)
    args += ["-g", f"daemon off; pid {tmp_path / 'nginx.pid'};"]
    proxy = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{proxy_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or proxy.poll() is not None:
                pytest.fail(f"did not start: {server_log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready in time: {server_log.read_text()[-2000:]}")
            time.sleep(0.3)
        engine = make_engine(f"sqlite:///{data / 'opportune.db'}")
        with engine.begin() as conn:
            users.create_user(
                conn,
                email="sup@bank.example",
                name="Sup",
                role="supervisor",
                password="a long enough password",
                now_ms=int(time.time() * 1000),
            )
        engine.dispose()
        yield Proxied(base, server_log)
    finally:
        for proc in (proxy, server):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@needs_nginx
def test_a_browser_works_through_the_proxy(proxied: Proxied) -> None:
    base = proxied.base
    # nginx's $request_id reaches Opportune, which logs it and sends it back.
    r = httpx.get(base + "/readyz", timeout=10)
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)

    # A batch from the demo page: the Origin is the proxy's address, port included.
    now = int(time.time() * 1000)
    body = {
        "siteKey": "demo-site-key",
        "visitorId": "through-nginx",
        "sentAt": now,
        "events": [{"id": "e1", "type": "page_view", "ts": now, "url": base + "/demo/"}],
    }
    r = httpx.post(base + "/v1/events", content=json.dumps(body), headers={"origin": base})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1

    # The chat socket is upgraded through the proxy, and the server's close reaches us.
    ws_url = base.replace("http://", "ws://") + "/v1/chat?siteKey=demo-site-key"
    with connect(ws_url, origin=base, open_timeout=10) as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"type": "hello", "visitorId": "through-nginx"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert "start or resume" in closed.value.rcvd.reason

    # Live Now's stream: signed in, its first event arrives while the stream stays open
    # (a buffering proxy would hold it back). Two safeguards make it so, the config's
    # `proxy_buffering off` and Opportune's `X-Accel-Buffering: no`: either one suffices.
    with httpx.Client(base_url=base, timeout=10) as c:
        page = c.get("/agent/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        form = {
            "csrf": csrf.group(1),
            "email": "sup@bank.example",
            "password": "a long enough password",
            "next": "",
        }
        assert c.post("/agent/login", data=form).status_code in (200, 303)
        with c.stream("GET", "/live/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            first = next(stream.iter_lines())
        assert first == "event: snapshot"

    # Opportune logged nginx's id for the readiness request.
    logged = [json.loads(x) for x in proxied.server_log.read_text().splitlines() if x[:1] == "{"]
    assert any(x.get("request_id") == rid and x.get("path") == "/readyz" for x in logged)
