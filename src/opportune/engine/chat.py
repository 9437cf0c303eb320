"""Web chat in the running server: a conversation opened from an offer, the bot answering
first, the hand-over to a queue through the router, the agent's accept, messages, wrap-up
and transfer, and a visitor who left.

Every change is one transaction (the conversation's move and, where routing is touched,
the interaction's, in the same one), and only after it commits is it published on the
bus, to the visitor's socket and the agent's desk in whichever process holds them. A
dispatch pass moves the conversations it routes inside its own transaction
(``store.conversations.route_in``) and this service announces them afterwards.

>>> summary_of(Conversation(id="c_1", site_id="demo", visitor_id="v", customer_id=None,
...     state="queued", queue="loans", agent_id=None, language="en", offer=None,
...     registration={"firstName": "Ana"}, created_at=0, updated_at=0, last_seq=2,
...     visitor_seen_at=0, visitor_read_seq=0, agent_read_seq=0, ended_at=None,
...     wrap_up_code=None, rating=None), now_ms=5_000)["name"]
'Ana'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Connection

from opportune.core.actionmaps import instance_id
from opportune.core.bot import BotContext, BotState, BotTurn
from opportune.core.conversations import ConversationError, Draft, check_text, draft
from opportune.core.pacing import expected_wait_s
from opportune.engine.bots import BotRunner
from opportune.engine.bus import Bus
from opportune.engine.conversations import ConversationHub, message_event, state_event
from opportune.engine.desk import ChatError, DeskActions
from opportune.engine.engagement import QueueBoard
from opportune.engine.router import Assigned, Router, RoutingError
from opportune.store import conversations as store
from opportune.store.conversations import Appended, Conversation, Message, NotFound

log = logging.getLogger(__name__)

JourneyFn = Callable[[str, int], Awaitable[dict[str, float]]]
MAX_FORM_FIELDS = 20
MAX_FORM_VALUE = 500


def bot_state(data: Mapping[str, Any] | None) -> BotState:
    """The bot's state as stored between turns (a fresh one before the first)."""
    return BotState.from_json(data) if data else BotState()


def agent_channel(agent_id: str) -> str:
    """The bus channel of one agent's desk (alerts, presence).

    >>> agent_channel("ana")
    'agent:ana'
    """
    return f"agent:{agent_id}"


def summary_of(
    c: Conversation, *, now_ms: int, why: str | None = None, method: str | None = None
) -> dict[str, Any]:
    """A conversation as the desk lists it (docs/conversations.md, ``Summary``)."""
    reg = c.registration or {}
    name = " ".join(str(reg[k]) for k in ("firstName", "lastName", "name") if reg.get(k))
    return {
        "id": c.id,
        "state": c.state,
        "queue": c.queue,
        "agent": c.agent_id,
        "visitorId": c.visitor_id,
        "customerId": c.customer_id,
        "name": name or None,
        "intent": c.intent,
        "language": c.language,
        "waitedMs": max(now_ms - c.created_at, 0),
        "why": why,
        "method": method,
        "lastSeq": c.last_seq,
        "registration": dict(reg),
    }


@dataclass(frozen=True, slots=True)
class Opened:
    conversation: Conversation
    created: bool


class ChatService(DeskActions):
    """The conversations of one server process, over the shared database and bus."""

    def __init__(
        self,
        hub: ConversationHub,
        router: Router,
        *,
        maps: Callable[[], Mapping[str, Any]],
        live: Any,
        journey: JourneyFn | None = None,
        bots: BotRunner | None = None,
        board: QueueBoard | None = None,
        agent_names: Mapping[str, str] | None = None,
    ) -> None:
        """``maps()``: the action maps in force by name; ``live``: the visitors' live state
        (``engine/live.LiveStore``), to check that an offer was made to this visitor."""
        self.hub = hub
        self.router = router
        self.maps = maps
        self.live = live
        self.journey = journey
        self.bots = bots
        self.board = board
        self.agent_names = dict(agent_names or {})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        router.listeners.append(self._on_assigned)

    @property
    def bus(self) -> Bus:
        return self.hub.bus

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that announcements go to (assignments can come from any thread)."""
        self._loop = loop

    async def _tx(self, fn: Callable[[Connection], Any]) -> Any:
        return await self.hub.tx(fn)

    async def _publish(self, conversation_id: str, event: dict[str, Any]) -> None:
        await self.hub.publish(conversation_id, event)

    async def _tell_agent(self, agent_id: str, event: dict[str, Any]) -> None:
        await self.bus.publish(agent_channel(agent_id), json.dumps(event).encode())

    def state_json(self, c: Conversation) -> dict[str, Any]:
        """The ``state`` frame of a conversation."""
        return self.for_visitor(state_event(c))

    def for_visitor(self, event: dict[str, Any]) -> dict[str, Any]:
        """An event as the visitor sees it: an agent by display name, never by their id."""
        if event.get("type") == "message":
            m = event["message"]
            if m.get("sender") == "agent" and m.get("author"):
                name = self.agent_names.get(m["author"], "")
                return {**event, "message": {**m, "author": name or None}}
            return event
        if event.get("type") != "state":
            return event
        agent_id = event.get("agent")
        agent = None
        if agent_id and event.get("state") in ("assigned", "active", "wrap_up"):
            agent = {"name": self.agent_names.get(agent_id, agent_id)}
        return {
            "type": "state",
            "state": event.get("state"),
            "queue": event.get("queue"),
            "agent": agent,
        }

    async def _announce_state(self, c: Conversation) -> None:
        """For moves made without the hub (inside routing's transactions)."""
        await self._publish(c.id, state_event(c))

    # -- the visitor -----------------------------------------------------------------------

    async def get(self, conversation_id: str) -> Conversation:
        try:
            return await self.hub.get(conversation_id)
        except NotFound:
            raise ChatError("unknown_conversation", "no such conversation", 4404) from None

    async def of_visitor(self, conversation_id: str, visitor_id: str, site_id: str) -> Conversation:
        """The conversation, if it is this visitor's on this site (else refused, saying no
        more than that)."""
        c = await self.get(conversation_id)
        if c.visitor_id != visitor_id or c.site_id != site_id:
            raise ChatError("forbidden", "not this visitor's conversation", 4403)
        return c

    async def start(
        self,
        *,
        site_id: str,
        visitor_id: str,
        action_id: str,
        form: Mapping[str, Any] | None,
        locale: str | None,
        now_ms: int,
    ) -> Opened:
        """Open the conversation of a chat or bot offer made to this visitor in this visit;
        the same offer opens the same conversation (a second start is the first)."""
        name = await self._offered(site_id, visitor_id, action_id, now_ms)
        m = self.maps().get(name)
        if m is None or m.channel not in ("chat", "bot"):
            raise ChatError("unknown_action", "that offer does not open a chat", 4404)
        part = m.action.get(m.channel) or {}
        flow = part.get("flow") if m.channel == "bot" else part.get("bot")
        use_bot = bool(flow) and self.bots is not None and self.bots.has(str(flow))
        queue = m.queue or part.get("queue")
        if not use_bot and not queue:
            raise ChatError("no_queue", "this offer has neither a bot nor a queue", 4404)
        live = await self.live.peek(visitor_id, now_ms)
        fields = dict(
            conversation_id="c_" + action_id.removeprefix("ai_"),
            site_id=site_id,
            visitor_id=visitor_id,
            customer_id=getattr(live, "customer_id", None),
            state="bot" if use_bot else "queued",
            now_ms=now_ms,
            queue=queue,
            language=_language(locale),
            offer=action_id,
            registration=_form(form),
            bot_flow=str(flow) if use_bot else None,
        )
        conv, created = await self._tx(lambda conn: store.open_once(conn, **fields))
        if created:
            if use_bot:
                await self._bot_begin(conv, now_ms)
            else:
                await self._arrive(conv, now_ms)
        elif conv.state == "queued":
            await self._arrive(conv, now_ms)  # a crash between the two transactions
        return Opened(await self.get(conv.id), created)

    async def _offered(self, site_id: str, visitor_id: str, action_id: str, now_ms: int) -> str:
        live = await self.live.peek(visitor_id, now_ms)
        if live is None or live.site_id != site_id:
            raise ChatError("unknown_visitor", "no such visitor on this site", 4404)
        e = live.engagement
        names = {instance_id(e.session_id, n): n for n in e.maps}
        if action_id not in names:
            raise ChatError("unknown_action", "no such offer in this visit", 4404)
        return names[action_id]

    async def visitor_message(
        self,
        c: Conversation,
        *,
        client_id: object,
        text: object,
        choice: object = None,
        now_ms: int,
    ) -> Appended:
        """Store the visitor's message once; with the bot, its answer follows in the same
        transaction, and a hand-over it decides routes the conversation."""
        try:
            d = draft(client_id, "visitor", text)
            pick = check_text(choice, field="choice") if choice is not None else None
        except ConversationError as exc:
            raise ChatError("bad_message", str(exc)) from None
        payload = {"choice": pick} if pick is not None else None
        if c.state == "bot" and c.bot_flow and self.bots is not None:
            return await self._bot_turn(c, d, pick, payload, now_ms)
        try:
            done = await self.hub.post(c.id, d, now_ms=now_ms, payload=payload)
        except ConversationError as exc:
            raise ChatError("not_allowed", str(exc)) from None
        return done

    async def escalate(self, c: Conversation, *, now_ms: int, reason: str = "") -> Conversation:
        """The visitor asked for a person (or the bot handed over): queued and routed."""
        if c.state != "bot":
            raise ChatError("not_allowed", f"the conversation is {c.state.replace('_', ' ')}")
        queue = c.queue
        posted: list[Message] = []
        if self.bots is not None and c.bot_flow:
            state = bot_state(c.bot_state)
            turn = self.bots.escalate(c.bot_flow, state, locale=c.language or "en")
            queue = turn.handover.queue if turn.handover is not None else queue
            posted = await self._tx(lambda conn: self._store_turn(conn, c, turn, "esc", now_ms))
        for m in posted:
            await self._publish(c.id, message_event(m))
        return await self._hand_over(c, queue, now_ms)

    async def _hand_over(self, c: Conversation, queue: str | None, now_ms: int) -> Conversation:
        if not queue or queue not in self.router.queues:
            raise ChatError("no_queue", f"no queue to hand over to ({queue!r})")
        try:
            moved = await self.hub.move(
                c.id, "escalate", now_ms=now_ms, expect=["bot"], queue=queue
            )
        except ConversationError as exc:
            raise ChatError("not_allowed", str(exc)) from None
        await self._arrive(moved, now_ms)
        return moved

    async def visitor_end(self, c: Conversation, *, now_ms: int) -> Conversation:
        """The visitor closed the chat: with the bot, closed; before an agent took part,
        abandoned (the interaction too); with an agent, to wrap-up."""
        return await self._leave(c, "end", now_ms=now_ms)

    async def _leave(
        self, c: Conversation, what: str, *, now_ms: int, seen_before: int | None = None
    ) -> Conversation:
        def move(conn: Connection) -> Conversation:
            return store.transition(
                conn, c.id, what, now_ms=now_ms, expect=[c.state], seen_before=seen_before
            )  # type: ignore[arg-type]

        try:
            if c.state in ("queued", "assigned"):
                box: list[Conversation] = []
                await self.hub.run(
                    partial(
                        self.router.give_up, c.id, now_ms, also=lambda conn: box.append(move(conn))
                    )
                )
                moved = box[0]
            else:
                moved = await self._tx(move)
        except ConversationError as exc:
            raise ChatError("not_allowed", str(exc)) from None
        await self._announce_state(moved)
        if c.agent_id:
            await self._tell_agent(c.agent_id, {**state_event(moved), "conversation": c.id})
        return moved

    async def rate(self, c: Conversation, rating: object) -> Conversation:
        if not isinstance(rating, int) or isinstance(rating, bool):
            raise ChatError("bad_message", "rating: a whole number from 1 to 5")
        try:
            return await self._tx(lambda conn: store.rate(conn, c.id, rating))
        except ConversationError as exc:
            raise ChatError("not_allowed", str(exc)) from None

    async def queue_status(self, c: Conversation, *, now_ms: int) -> dict[str, Any] | None:
        """The ``queue`` frame while queued: place and expected wait (pacing's model)."""
        if c.state != "queued" or not c.queue:
            return None
        place = await self.hub.run(partial(self.router.place, c.id, c.queue))
        if place is None:
            return None
        # A read: the board is kept current by every change of staffing (``_staffing``) and
        # by the rules poll, not rewritten here every few seconds for every waiting visitor.
        board = self.board
        outlook = board.outlook(c.queue, now_ms) if board is not None else None
        wait = expected_wait_s(outlook, place) if outlook is not None else None
        return {
            "type": "queue",
            "position": place,
            "waitSeconds": round(wait) if wait is not None else None,
        }

    # -- the bot ---------------------------------------------------------------------------

    async def _context(self, c: Conversation, now_ms: int) -> BotContext:
        assert self.bots is not None
        feats = await self.journey(c.visitor_id, now_ms) if self.journey is not None else {}
        segments = frozenset(k[8:] for k in feats if k.startswith("segment:"))
        scores = {k[6:]: v for k, v in feats.items() if k.startswith("score:")}
        form = {str(k): str(v) for k, v in (c.registration or {}).items()}
        return BotContext(segments=segments, scores=scores, form=form)

    async def _bot_begin(self, c: Conversation, now_ms: int) -> None:
        assert self.bots is not None and c.bot_flow
        context = await self._context(c, now_ms)
        turn = self.bots.begin(c.bot_flow, locale=c.language or "en", context=context)
        posted = await self._tx(lambda conn: self._store_turn(conn, c, turn, "0", now_ms))
        for m in posted:
            await self._publish(c.id, message_event(m))
        await self._after_turn(c, turn, now_ms)

    async def _bot_turn(
        self,
        c: Conversation,
        d: Draft,
        pick: str | None,
        payload: Mapping[str, Any] | None,
        now_ms: int,
    ) -> Appended:
        assert self.bots is not None and c.bot_flow
        context = await self._context(c, now_ms)
        bots, flow, locale = self.bots, c.bot_flow, c.language or "en"
        turn_box: list[BotTurn] = []

        def work(conn: Connection) -> tuple[Appended, list[Message]]:
            done = store.append(conn, c.id, d, now_ms=now_ms, payload=payload)
            if done.duplicate:
                return done, []
            fresh = store.get(conn, c.id)
            if fresh.state != "bot":  # an agent took over meanwhile: no bot answer
                return done, []
            state = bot_state(fresh.bot_state)
            turn = bots.respond(
                flow, state, text=d.text, choice=pick, locale=locale, context=context
            )
            turn_box.append(turn)
            return done, self._store_turn(conn, c, turn, str(done.message.seq), now_ms)

        try:
            done, posted = await self._tx(work)
        except ConversationError as exc:
            raise ChatError("not_allowed", str(exc)) from None
        await self._publish(c.id, message_event(done.message))  # a resend too: see hub.post
        for m in posted:
            await self._publish(c.id, message_event(m))
        if turn_box:
            await self._after_turn(c, turn_box[0], now_ms)
        return done

    def _store_turn(
        self, conn: Connection, c: Conversation, turn: BotTurn, key: str, now_ms: int
    ) -> list[Message]:
        """The bot's replies (ids made from the turn's key, so a retried turn stores them
        once) and its state."""
        out = []
        for i, reply in enumerate(turn.replies):
            bot_draft = Draft(f"bot-{key}-{i}", "bot", reply.text)
            done = store.append(
                conn, c.id, bot_draft, now_ms=now_ms, author=c.bot_flow, payload=reply.payload
            )
            if not done.duplicate:
                out.append(done.message)
        store.set_bot(conn, c.id, state=turn.state.to_json(), intent=turn.state.intent)
        return out

    async def _after_turn(self, c: Conversation, turn: BotTurn, now_ms: int) -> None:
        if turn.handover is not None:
            fresh = await self.get(c.id)
            await self._hand_over(fresh, turn.handover.queue, now_ms)

    # -- routing ---------------------------------------------------------------------------

    async def _arrive(self, c: Conversation, now_ms: int) -> None:
        """The conversation as an interaction in its queue (same id); routed at once."""
        features: dict[str, float] = {}
        if self.bots is not None and c.bot_state is not None:
            features = self.bots.intent_features(bot_state(c.bot_state))
        body: dict[str, Any] = {
            "id": c.id,
            "queue": c.queue,
            "medium": "chat",
            "language": c.language,
            "customer_id": c.customer_id,
            "visitor_id": c.visitor_id,
            "features": features,
            "journey": await self.journey(c.visitor_id, now_ms) if self.journey else {},
        }
        try:
            await self.hub.run(partial(self.router.arrive, body, now_ms))
        except RoutingError as exc:
            if exc.code != "already_exists":
                raise ChatError(exc.code, exc.message) from None
        if not (await self.get(c.id)).open:  # the visitor left while it was being queued
            await self.hub.run(partial(self.router.give_up, c.id, now_ms))
        await self._staffing(now_ms)

    def _on_assigned(self, made: list[Assigned]) -> None:
        """From the thread of a dispatch pass: announce on the loop, never block the pass."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._spawn, made)

    def _spawn(self, made: list[Assigned]) -> None:
        task = asyncio.get_running_loop().create_task(self.announce(made))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def announce(self, made: list[Assigned]) -> None:
        """Tell the visitor and the agent of each conversation a pass routed."""
        now = _now_ms()
        for a in made:
            try:
                c = await self.hub.get(a.interaction_id)
            except NotFound:
                continue  # an interaction that is not a web chat
            with contextlib.suppress(Exception):
                await self._announce_state(c)
                summary = summary_of(c, now_ms=now, why=a.why, method=a.method)
                await self._tell_agent(a.agent_id, {"type": "offer", "conversation": summary})

    # -- housekeeping ----------------------------------------------------------------------

    async def sweep(self, *, now_ms: int) -> list[Conversation]:
        """Visitors silent past the grace have left: abandoned, or wrap-up with an agent."""
        grace = self.hub.grace_ms
        gone = await self._tx(lambda conn: store.gone_visitors(conn, now_ms=now_ms, grace_ms=grace))
        moved = []
        for c in gone:
            with contextlib.suppress(ChatError):
                moved.append(
                    await self._leave(c, "leave", now_ms=now_ms, seen_before=now_ms - grace)
                )
        return moved

    async def run(self, stop: asyncio.Event, *, every_s: float = 5.0) -> None:
        """Until ``stop``: sweep the visitors gone (any process may; a move is checked)."""
        self.bind(asyncio.get_running_loop())
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            if stop.is_set():
                return
            try:
                await self.sweep(now_ms=_now_ms())
            except Exception:  # the database is away: try again on the next round
                log.exception("could not sweep the conversations")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _language(locale: object) -> str | None:
    if not isinstance(locale, str):
        return None
    lang = locale.lower().replace("_", "-").split("-")[0]
    return lang if lang.isalpha() and 2 <= len(lang) <= 3 else None


def _form(form: object) -> dict[str, str] | None:
    """The registration form as the visitor sent it, checked: names and values as text."""
    if form in (None, {}):
        return None
    if not isinstance(form, Mapping):
        raise ChatError("bad_message", "form: expected an object of field names to values")
    if len(form) > MAX_FORM_FIELDS:
        raise ChatError("bad_message", f"form: at most {MAX_FORM_FIELDS} fields")
    out = {}
    for k, v in form.items():
        if not isinstance(k, str) or not 0 < len(k) <= 64:
            raise ChatError("bad_message", "form: field names are 1-64 characters")
        if not isinstance(v, str) or len(v) > MAX_FORM_VALUE:
            raise ChatError("bad_message", f"form.{k}: text of at most {MAX_FORM_VALUE} characters")
        out[k] = v.strip()
    return out
