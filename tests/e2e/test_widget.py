"""The engagement widget on the demo site, in real headless Chromium, against the real server.

What to offer is the test's: the answers of `/v1/events` (the real server's answer, its own
`actions` and `recheckInMs` replaced by the test's) and of `/v1/recheck` come from the test,
so that each test decides exactly what is shown. Everything else is real: the widget script
comes from the server, and every report and recheck the browser sends goes to it too, and
must be accepted as well-formed (200). The server then refuses the test's action ids, which
are not instances it made, so for those the test answers "accepted" in the server's stead,
and its chat socket (`/v1/chat`, which would close with 4404 for them) answers `start` with
`started` in the queue. The conversation itself is tested in test_widget_chat.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

pytestmark = pytest.mark.e2e

SITE_KEY = "demo-site-key"

# Beacons sent while a page unloads are invisible to Playwright: a wrapper keeps a copy of
# each report sent by beacon in localStorage, for the next page to read.
BEACON_LOG = """
(() => {
  const send = navigator.sendBeacon.bind(navigator);
  navigator.sendBeacon = (url, body) => {
    const ok = send(url, body);
    if (ok && String(url).endsWith('/v1/actions')) {
      const log = JSON.parse(localStorage.getItem('e2e-action-beacons') || '[]');
      log.push(String(body));
      localStorage.setItem('e2e-action-beacons', JSON.stringify(log));
    }
    return ok;
  };
})();
"""

# The deepest focused element, through shadow roots: what a keyboard user is on.
FOCUSED = """() => {
  let e = document.activeElement;
  while (e && e.shadowRoot && e.shadowRoot.activeElement) e = e.shadowRoot.activeElement;
  if (!e) return null;
  return {
    inWidget: e.getRootNode() !== document,
    role: e.getAttribute('role'),
    name: e.getAttribute('aria-label') || e.getAttribute('placeholder') ||
      (e.labels && e.labels[0] && e.labels[0].textContent.replace(' *', '')) ||
      e.textContent.trim().slice(0, 60),
  };
}"""


def init_first(**options: Any) -> str:
    """An init script that queues `init` with these options before the page's own loader.

    The demo pages' loader keeps an existing `window.opportune`, and a second `init` is
    ignored: so the real page runs the real snippet with the test's options.
    """
    opts = {"siteKey": SITE_KEY, "endpoint": "/v1/events", **options}
    return (
        "window.opportune = function () { (window.opportune.q = window.opportune.q || [])"
        f".push(arguments); }}; window.opportune('init', {json.dumps(opts)});"
    )


def set_visibility(page: Any, state: str) -> None:
    page.evaluate(
        """(s) => {
          const own = (k, get) => Object.defineProperty(document, k, {configurable: true, get});
          own('visibilityState', () => s);
          own('hidden', () => s === 'hidden');
          document.dispatchEvent(new Event('visibilitychange'));
        }""",
        state,
    )


LAYOUT_IDS = {"modal": "a", "banner": "b", "slide-in": "c"}


def content(layout: str, n: int = 1, **over: Any) -> dict[str, Any]:
    action: dict[str, Any] = {
        "id": f"ai_{LAYOUT_IDS[layout]}{n:07x}",  # the server's form: ai_ and hex
        "map": "loan-rates-offer",
        "type": "content",
        "timeoutMs": 30000,
        "locale": "en",
        "content": {
            "title": "A rate just for you",
            "body": "Borrow up to €20,000 at 5.4% APR until Friday.",
            "cta": {"label": "See my rate", "url": "/demo/product.html"},
            "layout": layout,
        },
    }
    for k, v in over.items():
        if k in ("title", "body", "cta", "style", "imageUrl", "imageAlt"):
            action["content"][k] = v
        else:
            action[k] = v
    return action


CHAT = {
    "id": "ai_d0000001",
    "map": "loan-help-chat",
    "type": "chat",
    "timeoutMs": 30000,
    "locale": "en",
    "chat": {
        "invitation": {
            "title": "Questions about your loan?",
            "body": "A loans adviser can answer them now.",
            "accept": "Chat now",
            "decline": "Not now",
        },
        "queue": "loans",
        "form": {
            "title": "Before we start",
            "fields": [
                {
                    "name": "name",
                    "label": "Your name",
                    "type": "text",
                    "required": True,
                    "value": "Ana",
                },
                {"name": "email", "label": "Email", "type": "email", "required": True},
                {
                    "name": "topic",
                    "label": "Topic",
                    "type": "select",
                    "required": False,
                    "options": ["Rates", "Repayment"],
                    "value": "Repayment",
                },
                {
                    "name": "question",
                    "label": "Your question",
                    "type": "textarea",
                    "required": False,
                },
            ],
            "submit": "Start the chat",
        },
    },
}


def _unless_closing(handler: Callable[[Any], None]) -> Callable[[Any], None]:
    """A route handler that lets go when its page closes under it (the last page's beacons)."""

    def handle(route: Any) -> None:
        try:
            handler(route)
        except PlaywrightError as exc:
            closing = "disposed" in str(exc) or "closed" in str(exc)
            if not (closing or route.request.frame.page.is_closed()):
                raise

    return handle


@dataclass
class Engage:
    """Plays the server's decisions for one page and records what the browser sent back.

    ``events`` and ``rechecks`` are the answers still to give, one per request, in order;
    once used up, `/v1/events` answers as the real server does and `/v1/recheck` with `{}`.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    rechecks: list[dict[str, Any]] = field(default_factory=list)
    events_answered: int = 0
    recheck_bodies: list[dict[str, Any]] = field(default_factory=list)
    report_bodies: list[dict[str, Any]] = field(default_factory=list)
    # The real server's answers to what the browser sent: (path, status, body).
    server_answers: list[tuple[str, int, Any]] = field(default_factory=list)
    widget_requests: int = 0

    def attach(self, page: Any) -> Engage:
        page.add_init_script(BEACON_LOG)
        page.route("**/v1/events", _unless_closing(self._on_events))
        page.route("**/v1/recheck", _unless_closing(self._on_recheck))
        page.route("**/v1/actions", _unless_closing(self._on_actions))
        page.route_web_socket("**/v1/chat*", self._on_chat)
        page.on("request", self._on_request)
        return self

    def _on_events(self, route: Any) -> None:
        response = route.fetch()  # the real server stores the batch
        body = response.json()
        if response.status == 200:
            body.pop("actions", None)  # the server's own decisions: not this test's
            body.pop("recheckInMs", None)
            if self.events:
                body.update(self.events.pop(0))
            self.events_answered += 1
        route.fulfill(response=response, json=body)

    def _on_recheck(self, route: Any) -> None:
        response = route.fetch()  # the real server must take the request as it is
        self.server_answers.append(("/v1/recheck", response.status, response.json()))
        route.fulfill(json=self.rechecks.pop(0) if self.rechecks else {})

    def _on_chat(self, ws: Any) -> None:
        def on(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "start":
                started = {"conversation": "c_e2e", "state": "queued", "queue": "loans"}
                ws.send(json.dumps({"type": "started", **started}))

        ws.on_message(on)

    def _on_actions(self, route: Any) -> None:
        response = route.fetch()
        body = response.json()
        self.server_answers.append(("/v1/actions", response.status, body))
        if response.status == 200 and body.get("refused"):
            # Well-formed, but not instances the server made: accepted in its stead.
            n = len(json.loads(route.request.post_data)["reports"])
            route.fulfill(json={"accepted": n, "refused": []})
        else:
            route.fulfill(response=response)

    def assert_server_took_the_shapes(self, page: Any) -> None:
        """Every report and recheck body was valid for the real server (no 400)."""
        sent = len(self.report_bodies) + len(self.recheck_bodies)
        assert sent, "nothing was sent to /v1/actions or /v1/recheck"
        wait_until(page, lambda: len(self.server_answers) >= sent, what="the server's answers")
        assert all(status == 200 for _, status, _ in self.server_answers), self.server_answers

    def _on_request(self, request: Any) -> None:
        if request.method == "POST" and request.url.endswith("/v1/actions"):
            self.report_bodies.append(json.loads(request.post_data))
        elif request.method == "POST" and request.url.endswith("/v1/recheck"):
            self.recheck_bodies.append(json.loads(request.post_data))
        elif request.url.endswith("/sdk/opportune-widget.js"):
            self.widget_requests += 1

    def reports(self) -> list[tuple[str, str]]:
        return [(r["id"], r["state"]) for b in self.report_bodies for r in b["reports"]]

    def states(self) -> list[str]:
        return [s for _, s in self.reports()]


def wait_until(
    page: Any, check: Callable[[], Any], timeout: float = 10, what: str = "condition"
) -> Any:
    """Poll with the page's timer (route handlers only run inside Playwright calls)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(50)


def box_of(locator: Any) -> dict[str, float]:
    """The bounding box once the slide-up animation (if motion is allowed) has ended."""
    locator.evaluate("el => Promise.all(el.getAnimations().map(a => a.finished))")
    return locator.bounding_box()


def focused(page: Any) -> dict[str, Any]:
    return page.evaluate(FOCUSED)


def visitor_id(page: Any) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "opp_vid")


def widget_count(page: Any) -> int:
    return page.evaluate("document.querySelectorAll('opportune-widget').length")


@pytest.fixture
def page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


def test_modal_traps_focus_escape_reports_rejected_and_restores_focus(
    server: Any, page: Any
) -> None:
    engage = Engage(events=[{"actions": [content("modal")]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    search = page.get_by_placeholder("e.g. early repayment")
    search.focus()
    dialog = page.get_by_role("dialog", name="A rate just for you")
    dialog.wait_for()
    assert dialog.get_attribute("aria-modal") == "true"
    described = dialog.evaluate(
        "el => el.getRootNode().getElementById(el.getAttribute('aria-describedby')).textContent"
    )
    assert described == "Borrow up to €20,000 at 5.4% APR until Friday."
    # Focus moved into the dialog (onto the dialog itself, so its title and text are read).
    now = focused(page)
    assert now["inWidget"] and now["role"] == "dialog", now
    # Centred on a wide screen, at most 480 px wide.
    box = box_of(dialog)
    assert box["width"] <= 480 and abs(box["x"] + box["width"] / 2 - 640) < 2

    tabbed = []
    for _ in range(4):
        page.keyboard.press("Tab")
        tabbed.append(focused(page)["name"])
    assert tabbed == ["See my rate", "No thanks", "Close", "See my rate"]  # trapped, wraps
    page.keyboard.press("Shift+Tab")
    assert focused(page)["name"] == "Close"  # and back
    page.mouse.click(5, 400)  # a click on the page behind (the backdrop) does not get out
    assert focused(page)["inWidget"]

    page.keyboard.press("Escape")
    dialog.wait_for(state="detached")
    assert widget_count(page) == 0
    assert focused(page) == {"inWidget": False, "role": None, "name": "Search"}  # where it was
    wait_until(page, lambda: len(engage.reports()) == 2, what="two reports")
    assert engage.reports() == [
        ("ai_a0000001", "offered"),
        ("ai_a0000001", "rejected"),
    ]
    body = engage.report_bodies[-1]
    assert set(body) == {"siteKey", "visitorId", "sentAt", "reports"}
    assert body["siteKey"] == SITE_KEY and body["visitorId"] == visitor_id(page)
    assert isinstance(body["sentAt"], int)
    assert isinstance(body["reports"][0]["ts"], int) and "form" not in body["reports"][0]
    assert engage.widget_requests == 1
    engage.assert_server_took_the_shapes(page)


def test_banner_does_not_take_focus_and_its_cta_reports_accepted(server: Any, page: Any) -> None:
    engage = Engage(events=[{"actions": [content("banner")]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    banner = page.get_by_role("region", name="A rate just for you")
    banner.wait_for()
    wait_until(page, lambda: engage.states() == ["offered"], what="offered")
    assert not focused(page)["inWidget"]
    box = box_of(banner)
    assert box["y"] == 0 and box["width"] == 1280  # across the top
    # First in the page's tab order, as it is first on screen.
    page.keyboard.press("Tab")
    assert focused(page)["name"] == "See my rate"
    page.keyboard.press("Shift+Tab")
    banner.get_by_role("link", name="See my rate").click()
    page.wait_for_url("**/demo/product.html")
    wait_until(page, lambda: "accepted" in engage.states(), what="accepted")
    assert engage.reports() == [
        ("ai_b0000001", "offered"),
        ("ai_b0000001", "accepted"),
    ]


def test_server_texts_are_text_and_only_http_links_are_kept(server: Any, page: Any) -> None:
    evil = '<img src=x onerror="window.__xss = 1">'
    action = content(
        "slide-in",
        title=f"Hello {evil}",
        body=f"<b>bold</b> {evil}",
        cta={"label": "Go", "url": "javascript:window.__xss = 2"},
        imageUrl="javascript:window.__xss = 3",
    )
    Engage(events=[{"actions": [action]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    box = page.get_by_role("complementary", name=f"Hello {evil}")
    box.wait_for()
    assert box.get_by_text(f"<b>bold</b> {evil}").is_visible()
    assert box.locator("a, img").count() == 0  # a javascript: CTA or image is not rendered
    assert page.evaluate("window.__xss") is None


def test_unanswered_offer_times_out_and_is_hidden(server: Any, page: Any) -> None:
    engage = Engage(events=[{"actions": [content("slide-in", timeoutMs=1500)]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    offer = page.get_by_role("complementary", name="A rate just for you")
    offer.wait_for()
    shown = time.monotonic()
    box = box_of(offer)
    assert box["x"] + box["width"] == 1280 - 16 and box["y"] + box["height"] == 800 - 16
    assert not focused(page)["inWidget"]
    offer.wait_for(state="detached", timeout=5000)
    assert time.monotonic() - shown > 1.2
    wait_until(page, lambda: len(engage.reports()) == 2, what="the timeout report")
    assert engage.states() == ["offered", "timeout"]
    assert widget_count(page) == 0


def test_touched_offer_does_not_time_out(server: Any, page: Any) -> None:
    engage = Engage(events=[{"actions": [content("slide-in", timeoutMs=1000)]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    offer = page.get_by_role("complementary", name="A rate just for you")
    offer.wait_for()
    offer.hover()  # the visitor is reading it
    page.wait_for_timeout(1800)
    assert offer.is_visible()
    offer.get_by_role("button", name="Close").click()
    wait_until(page, lambda: engage.states() == ["offered", "rejected"], what="rejected")


def test_chat_invitation_form_validation_and_queue(server: Any, page: Any) -> None:
    engage = Engage(events=[{"actions": [CHAT]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    invitation = page.get_by_role("complementary", name="Questions about your loan?")
    invitation.wait_for()
    assert not focused(page)["inWidget"]
    invitation.get_by_role("button", name="Chat now").click()

    chat = page.get_by_role("dialog", name="Questions about your loan?")
    chat.wait_for()
    assert chat.get_by_label("Your name").input_value() == "Ana"  # prefilled by the server
    assert chat.get_by_label("Topic").input_value() == "Repayment"
    email = chat.get_by_label("Email")
    assert focused(page) == {"inWidget": True, "role": None, "name": "Email"}  # first to fill
    wait_until(page, lambda: engage.states() == ["offered", "accepted"], what="accepted")

    def error_of(locator: Any) -> str:
        return locator.evaluate(
            "el => el.getRootNode().getElementById(el.getAttribute('aria-describedby')).textContent"
        )

    chat.get_by_role("button", name="Start the chat").click()
    assert email.get_attribute("aria-invalid") == "true"
    assert error_of(email) == "Please fill in this field"
    assert focused(page)["name"] == "Email"  # focus went to the first invalid field
    assert chat.get_by_label("Your name").get_attribute("aria-invalid") is None
    email.fill("ana@example")
    page.keyboard.press("Enter")
    assert error_of(email) == "Enter an email address like name@example.com"
    email.fill("ana@example.com")
    assert email.get_attribute("aria-invalid") is None  # cleared as soon as it is right
    chat.get_by_label("Your question").fill("Can I repay early?")
    chat.get_by_role("button", name="Start the chat").click()

    status = chat.get_by_role("status")
    status.get_by_text("You’re in the queue — an agent will be with you shortly").wait_for()
    assert status.get_attribute("aria-live") == "polite"
    assert chat.locator("form").count() == 0
    assert engage.states() == ["offered", "accepted", "started"]
    started = engage.report_bodies[-1]["reports"][0]
    assert started["form"] == {
        "name": "Ana",
        "email": "ana@example.com",
        "topic": "Repayment",
        "question": "Can I repay early?",
    }
    chat.get_by_role("button", name="Close").click()
    wait_until(page, lambda: engage.states()[-1] == "abandoned", what="abandoned")
    engage.assert_server_took_the_shapes(page)  # the form values included


def test_bot_opens_the_chat_window_and_reports_started(server: Any, page: Any) -> None:
    bot = {
        "id": "ai_e0000001",
        "map": "device-help-bot",
        "type": "bot",
        "timeoutMs": 30000,
        "locale": "en",
        "bot": {
            "flow": "device-activation",
            "title": "Opportune assistant",
            "greeting": "Hi! Stuck?",
        },
    }
    engage = Engage(events=[{"actions": [bot]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    window = page.get_by_role("complementary", name="Opportune assistant")
    window.wait_for()
    assert window.get_by_text("Hi! Stuck?").is_visible()
    assert not focused(page)["inWidget"]  # it opened by itself: it does not take focus
    wait_until(page, lambda: engage.states() == ["offered", "started"], what="started")
    assert len(engage.report_bodies) == 1  # made in one task: one request, in order
    engage.assert_server_took_the_shapes(page)


def test_widget_texts_in_spanish_and_overridden(server: Any, browser: Any) -> None:
    # <html lang="es">: the widget's own words in Spanish.
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script(
        "document.addEventListener('DOMContentLoaded', () => document.documentElement.lang = 'es')"
    )
    Engage(
        events=[{"actions": [content("modal", locale="es", title="Un tipo para usted")]}]
    ).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    dialog = page.get_by_role("dialog", name="Un tipo para usted")
    dialog.wait_for()
    assert dialog.get_by_role("button", name="No, gracias").is_visible()
    assert dialog.get_by_role("button", name="Cerrar").is_visible()
    context.close()

    # init's `locale` wins over <html lang="en">; `texts` overrides any word.
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script(init_first(locale="es", texts={"es": {"noThanks": "Ahora no"}}))
    chat = {
        **CHAT,
        "locale": "es",
        "chat": {
            "invitation": {"title": "¿Dudas sobre su préstamo?"},
            "queue": "loans",
            "form": {
                "fields": [{"name": "email", "label": "Correo", "type": "email", "required": True}]
            },
        },
    }
    Engage(events=[{"actions": [chat]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    invitation = page.get_by_role("complementary", name="¿Dudas sobre su préstamo?")
    invitation.wait_for()
    assert invitation.get_by_role("button", name="Ahora no").is_visible()
    invitation.get_by_role("button", name="Iniciar chat").click()
    window = page.get_by_role("dialog", name="¿Dudas sobre su préstamo?")
    window.get_by_role("button", name="Iniciar chat").click()
    assert window.get_by_text("Rellene este campo").is_visible()
    window.get_by_label("Correo").fill("ana@example.com")
    window.get_by_role("button", name="Iniciar chat").click()
    window.get_by_text("Está en la cola: un agente le atenderá en breve").wait_for()
    context.close()


def test_phone_gets_a_bottom_sheet_with_large_targets_and_no_motion(
    server: Any, browser: Any
) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        reduced_motion="reduce",
    )
    page = context.new_page()
    Engage(events=[{"actions": [content("modal")]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    dialog = page.get_by_role("dialog", name="A rate just for you")
    dialog.wait_for()
    box = box_of(dialog)
    assert (box["x"], box["width"]) == (0, 390)
    assert abs(box["y"] + box["height"] - 844) < 1  # on the bottom edge
    for control in [*dialog.get_by_role("button").all(), *dialog.get_by_role("link").all()]:
        b = control.bounding_box()
        assert b["height"] >= 44 and b["width"] >= 44, control
    assert dialog.evaluate("el => getComputedStyle(el).animationName") == "none"
    dialog.get_by_role("button", name="No thanks").tap()
    dialog.wait_for(state="detached")
    context.close()


def test_host_page_styles_do_not_reach_the_widget_and_the_theme_does(
    server: Any, browser: Any
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.add_init_script(
        init_first(theme={"primary": "#7b1fa2", "radius": "4px", "font": "Georgia, serif"})
    )
    page.add_init_script(
        """document.addEventListener('DOMContentLoaded', () => {
          const s = document.createElement('style');
          s.textContent = 'button, a { display: none !important } '
            + '* { color: red !important; font-size: 3px !important; background: lime !important } '
            + 'opportune-widget, body > * { display: none !important; opacity: 0 !important }';
          document.head.appendChild(s);
        })"""
    )
    action = content("slide-in", style={"background": "#fffbe6", "text": "#222"})
    engage = Engage(events=[{"actions": [action]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    offer = page.get_by_role("complementary", name="A rate just for you")
    offer.wait_for()
    cta = offer.get_by_role("link", name="See my rate")
    no = offer.get_by_role("button", name="No thanks")
    close = offer.get_by_role("button", name="Close")
    for control in (cta, no, close):
        assert control.is_visible()
        assert control.bounding_box()["height"] >= 44
    style = cta.evaluate(
        """el => { const s = getComputedStyle(el), p = getComputedStyle(el.closest('.panel'));
          return {bg: s.backgroundColor, color: s.color, font: s.fontFamily, size: s.fontSize,
                  radius: p.borderRadius, panel: p.backgroundColor, text: p.color}; }"""
    )
    assert style == {
        "bg": "rgb(123, 31, 162)",  # init's theme
        "color": "rgb(255, 255, 255)",  # white contrasts best with that purple
        "font": "Georgia, serif",
        "size": "16px",
        "radius": "4px",
        "panel": "rgb(255, 251, 230)",  # the action's own style wins over the theme
        "text": "rgb(34, 34, 34)",
    }
    no.click()
    wait_until(page, lambda: engage.states() == ["offered", "rejected"], what="rejected")
    engage.assert_server_took_the_shapes(page)
    context.close()


def test_recheck_is_scheduled_replaced_and_waits_while_hidden(server: Any, page: Any) -> None:
    engage = Engage(
        events=[{"recheckInMs": 1500}, {"recheckInMs": 3000}],
        rechecks=[{"actions": [content("slide-in")], "recheckInMs": 1000}],
    ).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    wait_until(page, lambda: engage.events_answered >= 1, what="the first events answer")
    page.evaluate("opportune('record', 'second_batch'); opportune('flush')")
    wait_until(page, lambda: engage.events_answered >= 2, what="the second events answer")
    answered = time.monotonic()
    page.wait_for_timeout(2000)
    assert engage.recheck_bodies == []  # the 1.5 s timer was replaced by the 3 s one
    wait_until(page, lambda: engage.recheck_bodies, what="a recheck")
    assert 2.7 < time.monotonic() - answered < 4.5
    body = engage.recheck_bodies[0]
    assert set(body) == {"siteKey", "visitorId", "sentAt"}
    assert body["siteKey"] == SITE_KEY and body["visitorId"] == visitor_id(page)
    # The recheck's answer has the same shape: its action is shown (a time-on-page trigger).
    page.get_by_role("complementary", name="A rate just for you").wait_for()
    set_visibility(page, "hidden")
    page.wait_for_timeout(1800)
    assert len(engage.recheck_bodies) == 1  # not while the page is hidden
    set_visibility(page, "visible")
    wait_until(page, lambda: len(engage.recheck_bodies) == 2, timeout=1, what="recheck on return")
    page.wait_for_timeout(1500)
    assert len(engage.recheck_bodies) == 2  # that answer ({}) scheduled nothing
    engage.assert_server_took_the_shapes(page)


def test_leaving_the_page_with_an_offer_showing_sends_ignored_by_beacon(
    server: Any, page: Any
) -> None:
    engage = Engage(events=[{"actions": [content("slide-in")]}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    page.get_by_role("complementary", name="A rate just for you").wait_for()
    wait_until(page, lambda: engage.states() == ["offered"], what="offered")
    page.goto(f"{server.base}/demo/help.html")  # not through the offer
    beacons = page.evaluate("JSON.parse(localStorage.getItem('e2e-action-beacons') || '[]')")
    assert len(beacons) == 1
    body = json.loads(beacons[0])
    assert body["siteKey"] == SITE_KEY and body["visitorId"] == visitor_id(page)
    assert [(r["id"], r["state"]) for r in body["reports"]] == [("ai_c0000001", "ignored")]
    assert engage.states() == ["offered"]  # not by fetch as well


def test_one_offer_at_a_time_and_nothing_without_actions_or_with_engage_off(
    server: Any, browser: Any
) -> None:
    # No actions: the widget is never downloaded.
    context = browser.new_context()
    page = context.new_page()
    engage = Engage().attach(page)
    page.goto(f"{server.base}/demo/index.html")
    wait_until(page, lambda: engage.events_answered >= 1, what="an events answer")
    page.wait_for_timeout(300)
    assert engage.widget_requests == 0

    # Two actions (in one answer, then one more): the first is shown; the others are left
    # unshown and unreported; the same action id again is not shown twice.
    first, second, third = content("slide-in", 1), content("modal", 2), content("banner", 3)
    engage.events += [{"actions": [first, second]}, {"actions": [third, first]}]
    page.evaluate("opportune('record', 'b1'); opportune('flush')")
    offer = page.get_by_role("complementary", name="A rate just for you")
    offer.wait_for()
    page.evaluate("opportune('record', 'b2'); opportune('flush')")
    wait_until(page, lambda: engage.events_answered >= 3, what="the third answer")
    page.wait_for_timeout(300)
    assert widget_count(page) == 1 and engage.widget_requests == 1
    offer.get_by_role("button", name="No thanks").click()
    engage.events.append({"actions": [first]})
    page.evaluate("opportune('record', 'b3'); opportune('flush')")
    wait_until(page, lambda: engage.events_answered >= 4, what="the fourth answer")
    page.wait_for_timeout(300)
    assert widget_count(page) == 0
    assert engage.reports() == [
        ("ai_c0000001", "offered"),
        ("ai_c0000001", "rejected"),
    ]
    context.close()

    # engage: false: actions in the answers are not even looked at.
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script(init_first(engage=False))
    engage = Engage(events=[{"actions": [content("modal")], "recheckInMs": 1000}]).attach(page)
    page.goto(f"{server.base}/demo/index.html")
    wait_until(page, lambda: engage.events_answered >= 1, what="an events answer")
    page.wait_for_timeout(1500)
    assert engage.widget_requests == 0 and widget_count(page) == 0
    assert engage.recheck_bodies == [] and engage.report_bodies == []
    context.close()
