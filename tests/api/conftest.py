"""Fixtures of the signed-in pages' tests: the app on the example workspace with an agent, a
supervisor and an admin who can sign in, and signing in through the real form."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opportune.api.app import EXAMPLE_WORKSPACE, create_app
from opportune.settings import Settings
from opportune.store import users

PASSWORD = "correct horse battery"
STAFF = {
    "ana@bank.test": ("agent", "ana"),
    "sue@bank.test": ("supervisor", None),
    "root@bank.test": ("admin", None),
}


@pytest.fixture
def staffed(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """The app (API key ``k``) with the people of ``STAFF``, all with ``PASSWORD``."""
    ws = tmp_path / "ws"
    shutil.copytree(EXAMPLE_WORKSPACE, ws)
    settings = Settings(database_url=db_url, workspace=ws, data_dir=tmp_path, api_key="k")
    app = create_app(settings)
    with TestClient(app) as c:
        engine = app.app.state.runtime.ingestor.engine
        with engine.begin() as conn:
            for email, (role, agent) in STAFF.items():
                users.create_user(
                    conn,
                    email=email,
                    name=email.split("@")[0].title(),
                    role=role,  # type: ignore[arg-type]
                    password=PASSWORD,
                    now_ms=int(time.time() * 1000),
                    agent_id=agent,
                )
        yield c


@pytest.fixture
def sign_in() -> Callable[..., str]:
    """Sign in through the form (signed out first); where the sign-in sends the browser."""

    def go(c: TestClient, email: str, next_: str = "") -> str:
        c.cookies.clear()  # a signed-in browser is not shown the form
        page = c.get("/agent/login")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, page.text
        form = {"csrf": found.group(1), "email": email, "password": PASSWORD, "next": next_}
        r = c.post("/agent/login", data=form, follow_redirects=False)
        assert r.status_code == 303
        return str(r.headers["location"])

    return go
