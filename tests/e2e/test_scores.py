"""Outcome scores moving live: a visitor on the demo loan form, in real Chromium, scored by
models the project trained itself.

The server is started the way a newcomer starts it, with ``opportune demo``: with no
model in its data folder it backfills simulated history through the real ingestion,
trains a model per scoring-enabled outcome with the project's training code, activates
them and only then serves. A scripted visitor then reads about the loan, opens the
application and gets through its first step — and starts to struggle: field errors, an
idle spell, back a step, and off to the home page, leaving the form.

Asserted against the server's own word — the answers to ``POST /v1/events`` the page
received, and ``GET /v1/visitors/{id}/live`` — never on exact numbers: the loan outcome is
scored after every batch, its probability moves as the visitor progresses, rises on the
way into the form, and once the visitor struggles and leaves it is below the visit's
maximum; the live view explains the score with contributing features. The simulator's
ground truth makes that direction safe: leaving the form lowers the chance of submitting
(a visitor who leaves it is, by the chain's numbers, mostly not an applicant), and form
errors and idling raise the hidden frustration that lowers it further.
"""

from __future__ import annotations

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

pytestmark = pytest.mark.e2e

EXAMPLE_WORKSPACE = Path(__file__).resolve().parents[2] / "src/opportune/examples/workspace"
OUTCOMES = ("demo_booked", "loan_submitted", "purchase_confirmed", "quote_requested")

SITE_KEY = "demo-site-key"
OUTBOX_KEY = f"opp_outbox:{SITE_KEY}"
LOAN = "loan_submitted"
DESKTOP = {
    "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36",
    "viewport": {"width": 1366, "height": 900},
    "locale": "en-IE",
    "timezone_id": "Europe/Dublin",
}
# Backfill and training take ~25 s on two idle cores; a loaded machine takes longer.
START_DEADLINE_S = 300
API_KEY = "scores-test-key"


@dataclass
class Demo:
    base: str
    log: Path
    data: Path
    workspace: Path

    def api(self, path: str, **params: Any) -> Any:
        """GET an admin read endpoint; fails the test on anything but 200."""
        r = httpx.get(f"{self.base}{path}", params=params, headers={"X-API-Key": API_KEY})
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()

    def event_types(self, visitor_id: str) -> list[str]:
        out: list[str] = []
        for s in self.api(f"/v1/visitors/{visitor_id}/sessions", limit=100)["items"]:
            page = self.api(f"/v1/sessions/{s['id']}/events", limit=500)
            out += [e["type"] for e in page["items"]]
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_demo(workspace: Path, data: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`opportune demo` on a free port, as a newcomer runs it (plus a fixed key and no
    agents, so that no chat offer covers the form); returns once it answers."""
    port = _free_port()
    site = yaml.safe_load((EXAMPLE_WORKSPACE / "sites.yaml").read_text())
    site["origins"] = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    (workspace / "sites.yaml").write_text(yaml.safe_dump(site))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPPORTUNE_")}
    cmd = [
        sys.executable,
        "-m",
        "opportune.cli",
        "demo",
        "--workspace",
        str(workspace),
        "--no-traffic",
    ]
    cmd += ["--data-dir", str(data), "--port", str(port), "--agents", "0", "--api-key", API_KEY]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"the demo did not start in {START_DEADLINE_S} s:\n{log.read_text()}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo with an empty data folder: it trains its models, then serves."""
    tmp = tmp_path_factory.mktemp("scores")
    workspace = tmp / "workspace"
    workspace.mkdir()
    for source in sorted(EXAMPLE_WORKSPACE.glob("*.yaml")):
        shutil.copyfile(source, workspace / source.name)
    log = tmp / "demo.log"
    proc, base = _start_demo(workspace, tmp / "data", log)
    try:
        yield Demo(base, log, tmp / "data", workspace)
    finally:
        _stop(proc)


@dataclass
class Answers:
    """The answers the browser context received to ``POST /v1/events`` (fetches; a beacon
    sent while a page unloads has no answer to see)."""

    received: list[dict[str, Any]]

    @classmethod
    def attach(cls, context: Any) -> Answers:
        answers = cls([])

        def on_response(resp: Any) -> None:
            if resp.url.endswith("/v1/events") and resp.request.method == "POST":
                assert 200 <= resp.status < 300, (resp.status, resp.text())
                answers.received.append(resp.json())

        context.on("response", on_response)
        return answers


def wait_until(page: Any, check: Callable[[], Any], timeout: float = 15, what: str = "") -> Any:
    """Poll ``check`` with the page's timer (Playwright runs the response callbacks only
    inside its own calls) until it is truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(100)


@dataclass
class Visit:
    """One scripted visitor: the page, what the server answered, and the live view."""

    server: Demo
    page: Any
    answers: Answers
    steps: list[tuple[str, float, float]]  # (step, probability, visit max) after each

    def vid(self) -> str:
        ids = [c["value"] for c in self.page.context.cookies() if c["name"] == "opp_vid"]
        assert ids, "no opp_vid cookie"
        return str(ids[0])

    def settle(self, step: str, before: int) -> dict[str, Any]:
        """Send what the snippet holds, wait for every event to be acknowledged and for an
        answer beyond the first ``before``; check the loan score in that answer and in the
        live view, and note it under ``step``."""
        page = self.page
        page.wait_for_function("() => window.opportune && window.opportune.loaded")
        page.evaluate("opportune('flush')")
        page.wait_for_function(
            f"() => localStorage.getItem({OUTBOX_KEY!r}) === null", timeout=15_000
        )
        wait_until(page, lambda: len(self.answers.received) > before, what=f"answer ({step})")
        answer = self.answers.received[-1]
        score = answer.get("scores", {}).get(LOAN)
        assert score is not None, f"{step}: no {LOAN} score in the answer {answer}"
        assert 0.0 < score["probability"] < 1.0, score
        assert score["maxProbability"] >= score["probability"], score
        assert 0.0 <= score["quantile"] <= score["maxQuantile"] <= 1.0, score
        view = self.server.api(f"/v1/visitors/{self.vid()}/live")
        scored = {s["outcome"]: s for s in view["scores"]}
        assert LOAN in scored, f"{step}: no {LOAN} score in the live view {view}"
        live = scored[LOAN]
        # Every event is acknowledged, so the live view is the state after the answer
        # (which gives four decimals).
        assert live["probability"] == pytest.approx(score["probability"], abs=1e-4), step
        assert live["maxProbability"] == pytest.approx(score["maxProbability"], abs=1e-4)
        self.steps.append((step, live["probability"], live["maxProbability"]))
        return dict(live)


def test_the_loan_score_rises_into_the_form_and_drops_when_the_visitor_struggles(
    demo: Demo, browser: Any
) -> None:
    # Models for every example outcome were trained and activated before serving.
    for outcome in OUTCOMES:
        assert (demo.data / "models" / outcome / "active").read_text().strip()
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    # Timers run when the test says so: the idle spell below takes no wall-clock time.
    page.clock.install()
    visit = Visit(demo, page, Answers.attach(context), [])
    answers = visit.answers.received

    # 1. Lands on the home page.
    page.goto(f"{demo.base}/demo/index.html")
    home = visit.settle("home", 0)
    assert home["why"], home
    for w in home["why"]:
        assert isinstance(w["feature"], str) and w["feature"]
        assert isinstance(w["contribution"], float) and "value" in w

    # 2. Reads about the loan.
    n = len(answers)
    page.get_by_role("link", name="Personal loan").first.click()
    page.wait_for_url("**/demo/product.html")
    visit.settle("product", n)

    # 3. Opens the application, and gets through its first step (the form's buttons are
    # named for the snippet, so each press is a click event, as in the simulated history).
    n = len(answers)
    page.get_by_role("link", name="Apply now").first.click()
    page.wait_for_url("**/demo/apply.html")
    apply = visit.settle("apply", n)
    # The way into the form raised the chance of an application above the landing's.
    assert apply["probability"] > home["probability"], visit.steps
    page.fill("#amount", "8000")
    page.select_option("#term", "36")
    page.select_option("#purpose", "Car")
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("First name").wait_for()

    # 4. Struggles: the second step refused twice, with several fields wrong each time.
    n = len(answers)
    page.fill("#firstName", "Ana")
    page.fill("#email", "ana@")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Enter an email like").wait_for()
    visit.settle("errors", n)
    n = len(answers)
    page.fill("#email", "")
    page.fill("#income", "-5")
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Enter your email", exact=True).wait_for()
    visit.settle("more errors", n)

    # 5. Stops, does nothing for over half a minute: the snippet reports idle.
    n = len(answers)
    page.clock.run_for("00:35")
    visit.settle("idle", n)

    # 6. Goes back to the loan's page, abandoning the form, then on to the home page.
    n = len(answers)
    page.go_back()
    page.wait_for_url("**/demo/product.html")
    visit.settle("back", n)
    n = len(answers)
    page.get_by_role("link", name="Home", exact=True).first.click()
    page.wait_for_url("**/demo/index.html")
    gone = visit.settle("home again", n)

    # Scored after every batch (checked in settle), and moving with the journey.
    probabilities = [p for _, p, _ in visit.steps]
    assert len(set(probabilities)) >= 4, visit.steps
    # The visit's maximum never falls and covers every probability seen; events between
    # the answers looked at here (the form's button presses) may have gone higher still.
    maxima = [m for _, _, m in visit.steps]
    assert maxima == sorted(maxima), visit.steps
    assert gone["maxProbability"] >= max(probabilities) - 1e-6, visit.steps
    peak = gone["maxProbability"]
    # The visit's best moment was on the form: the visit maximum (which counts the form's
    # button presses between the answers read here) had reached its final value by the
    # last form step, before the idle spell and leaving; struggling then leaving took the
    # score clearly below it. Which of the form's own answers scores highest is left open:
    # those differ by noise (0.127 against 0.131 seen), since the demo models are trained
    # on history simulated up to the hour the demo starts.
    by_step = {step: m for step, _, m in visit.steps}
    assert by_step["more errors"] >= peak - 1e-9, visit.steps
    best = max(visit.steps, key=lambda s: s[1])[0]
    assert best in ("apply", "errors", "more errors", "idle"), visit.steps
    struggling = {step: p for step, p, _ in visit.steps}
    assert struggling["idle"] < peak, visit.steps
    assert gone["probability"] < 0.8 * peak, visit.steps
    # The live view says why: the features contributing most, with their values.
    assert len(gone["why"]) >= 3, gone
    assert all(isinstance(w["feature"], str) and w["feature"] for w in gone["why"])
    stored = demo.event_types(visit.vid())
    assert stored.count("form_error") >= 3 and "idle" in stored, stored
    assert "form_abandoned" in stored, stored
    context.close()


def test_a_second_start_serves_the_models_it_has(demo: Demo, tmp_path: Path) -> None:
    """The first start said what it did and how long it took; started again on the same
    data, the demo neither backfills nor trains: its models are active already."""
    first = demo.log.read_text()
    assert "backfilled" in first and "trained in" in first, first
    for outcome in OUTCOMES:
        assert f"{outcome}: v1 activated" in first, first
    log = tmp_path / "again.log"
    proc, base = _start_demo(demo.workspace, demo.data, log)
    try:
        again = log.read_text()
        assert "outcome models active: " + ", ".join(f"{o} v1" for o in OUTCOMES) in again
        assert "backfilled" not in again and "training" not in again, again
        assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        _stop(proc)
