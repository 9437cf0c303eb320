"""The agent's side of a conversation: who may act on it, accept, decline, answer, end,
wrap up with a code, transfer, and the desk's presence and list.

Every action asks ``core.permissions`` (through :meth:`DeskActions.for_agent`); moves that
touch routing change the interaction and the conversation in one transaction. A mix-in of
``engine/chat.ChatService``, which holds the hub, the router and the announcements.

>>> ChatError("not_allowed", "the conversation is closed").code
'not_allowed'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from opportune.core.conversations import ConversationError, State, check_text, draft
from opportune.core.permissions import PermissionDenied, Principal, require
from opportune.engine.router import RoutingError
from opportune.store import conversations as store
from opportune.store.conversations import Appended, Conversation

if TYPE_CHECKING:
    from opportune.engine.conversations import ConversationHub
    from opportune.engine.router import Router


class ChatError(Exception):
    """A request the chat refuses: ``code`` for the client, words for people, and the close
    code when the socket cannot go on (``None``: an error frame, the socket stays)."""

    def __init__(self, code: str, message: str, close: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.close = code, message, close


class DeskActions:
    """What an agent (or a supervisor watching) does to a conversation."""

    hub: ConversationHub
    router: Router
    agent_names: Mapping[str, str]
    get: Callable[[str], Any]
    _tx: Callable[[Callable[[Connection], Any]], Any]
    _announce_state: Callable[[Conversation], Any]
    _tell_agent: Callable[[str, dict[str, Any]], Any]
    state_json: Callable[[Conversation], dict[str, Any]]

    async def for_agent(self, who: Principal, conversation_id: str, action: str) -> Conversation:
        """The conversation, if ``who`` may ``action`` it (answer, view, monitor)."""
        c = await self.get(conversation_id)
        try:
            if action == "view" and who.role == "supervisor":
                require(who, "monitor", queue=c.queue)
            elif action == "view" and who.agent_id and c.agent_id == who.agent_id:
                pass  # routed to them: whatever its queue now
            else:
                require(who, action, queue=c.queue, assigned_to=c.agent_id)  # type: ignore[arg-type]
        except PermissionDenied as exc:
            raise ChatError("forbidden", str(exc)) from None
        return c

    async def accept(self, who: Principal, conversation_id: str, *, now_ms: int) -> Conversation:
        c = await self.for_agent(who, conversation_id, "answer")
        moved = await self._move(c, "accept", now_ms, expect=["assigned"])
        return moved

    async def decline(self, who: Principal, conversation_id: str, *, now_ms: int) -> Conversation:
        """Back to the queue, routed again (to someone else if anyone is free)."""
        c = await self.for_agent(who, conversation_id, "answer")
        return await self._requeue(c, "requeue", now_ms, expect=["assigned"])

    async def agent_message(
        self, who: Principal, conversation_id: str, *, client_id: object, text: object, now_ms: int
    ) -> Appended:
        c = await self.for_agent(who, conversation_id, "answer")
        try:
            d = draft(client_id, "agent", text)
        except ConversationError as exc:
            raise ChatError("bad_message", str(exc)) from None
        if c.state == "assigned":  # answering is accepting
            c = await self._move(c, "accept", now_ms, expect=["assigned"])
        try:
            return await self.hub.post(c.id, d, now_ms=now_ms, author=who.agent_id)
        except ConversationError as exc:
            raise ChatError("not_allowed", str(exc)) from None

    async def agent_end(self, who: Principal, conversation_id: str, *, now_ms: int) -> Conversation:
        c = await self.for_agent(who, conversation_id, "answer")
        return await self._move(c, "end", now_ms, expect=["active"])

    async def wrap_up(
        self,
        who: Principal,
        conversation_id: str,
        *,
        code: object,
        notes: object = None,
        now_ms: int,
    ) -> Conversation:
        """The wrap-up code ends the interaction (its KPI label) and closes the chat, in one
        transaction; a chat still active is ended first."""
        c = await self.for_agent(who, conversation_id, "answer")
        if not isinstance(code, str) or not code:
            raise ChatError("wrap_up_required", "choose a wrap-up code")
        note = None
        if notes not in (None, ""):
            try:
                note = check_text(notes, field="notes")
            except ConversationError as exc:
                raise ChatError("bad_message", str(exc)) from None
        if c.state == "active":
            c = await self._move(c, "end", now_ms, expect=["active"])
        if c.state != "wrap_up":
            raise ChatError("not_allowed", f"the conversation is {c.state.replace('_', ' ')}")
        box: list[Conversation] = []

        def close(conn: Connection) -> None:
            box.append(
                store.transition(
                    conn,
                    c.id,
                    "wrap_up",
                    now_ms=now_ms,
                    expect=["wrap_up"],
                    wrap_up_code=code,
                    notes=note,
                )
            )

        try:
            await self.hub.run(partial(self.router.end, c.id, code, now_ms, also=close))
        except RoutingError as exc:
            raise ChatError(exc.code, exc.message) from None
        except ConversationError as exc:
            raise ChatError("not_allowed", str(exc)) from None
        await self._announce_state(box[0])
        await self._staffing(now_ms)
        return box[0]

    async def transfer(
        self,
        who: Principal,
        conversation_id: str,
        *,
        queue: object = None,
        agent: object = None,
        now_ms: int,
    ) -> Conversation:
        """To another queue (routed there) or a named agent; the transcript stays."""
        c = await self.for_agent(who, conversation_id, "answer")
        if isinstance(agent, str) and agent:
            if agent == c.agent_id:
                raise ChatError("not_allowed", "the conversation is already yours")
            box: list[Conversation] = []

            def move(conn: Connection) -> None:
                box.append(
                    store.transition(
                        conn, c.id, "transfer", now_ms=now_ms, expect=[c.state], agent_id=None
                    )
                )

            try:
                await self.hub.run(
                    partial(self.router.transfer_to_agent, c.id, agent, now_ms, also=move)
                )
            except RoutingError as exc:
                raise ChatError(exc.code, exc.message) from None
            except ConversationError as exc:
                raise ChatError("not_allowed", str(exc)) from None
            return await self.get(c.id)
        if not isinstance(queue, str) or not queue:
            raise ChatError("bad_message", "transfer: name a queue or an agent")
        return await self._requeue(c, "transfer", now_ms, expect=[c.state], queue=queue)

    async def presence(self, who: Principal, presence: str, *, now_ms: int) -> None:
        if who.agent_id is None:
            raise ChatError("forbidden", "only an agent has a presence")
        try:
            await self.hub.run(partial(self.router.presence, who.agent_id, presence, now_ms))
        except RoutingError as exc:
            raise ChatError(exc.code, exc.message) from None
        await self._staffing(now_ms)
        await self._tell_agent(who.agent_id, {"type": "presence", "presence": presence})

    async def _staffing(self, now_ms: int) -> None:
        """The queues' staffing as pacing reads it, in the database for every process and
        at once in this one's board (others read it at their next rules poll)."""
        await self.hub.run(partial(self.router.sync_presence, now_ms))
        if self.board is not None:
            await self.hub.run(partial(self.board.refresh, self.hub.engine))

    async def desk(self, who: Principal) -> list[Conversation]:
        """What a desk shows after a (re)load: the agent's own open conversations, or a
        supervisor's queues' live ones (admins: every queue's)."""
        if who.agent_id is not None and who.role == "agent":
            return await self._tx(lambda conn: store.of_agent(conn, who.agent_id))
        queues = list(self.router.queues) if who.role == "admin" else sorted(who.queues)
        own = []
        if who.agent_id is not None:
            own = await self._tx(lambda conn: store.of_agent(conn, who.agent_id))
        seen = {c.id for c in own}
        monitored = await self._tx(lambda conn: store.live_in_queues(conn, queues))
        return own + [c for c in monitored if c.id not in seen]

    async def _move(
        self, c: Conversation, what: str, now_ms: int, *, expect: list[State]
    ) -> Conversation:
        try:
            return await self.hub.move(c.id, what, now_ms=now_ms, expect=expect)  # type: ignore[arg-type]
        except ConversationError as exc:
            raise ChatError("not_allowed", str(exc)) from None

    async def _requeue(
        self,
        c: Conversation,
        what: str,
        now_ms: int,
        *,
        expect: list[State],
        queue: str | None = None,
    ) -> Conversation:
        box: list[Conversation] = []
        changes = {"agent_id": None, **({"queue": queue} if queue else {})}

        def move(conn: Connection) -> None:
            box.append(
                store.transition(conn, c.id, what, now_ms=now_ms, expect=expect, **changes)  # type: ignore[arg-type]
            )

        try:
            await self.hub.run(partial(self.router.requeue, c.id, now_ms, queue=queue, also=move))
        except RoutingError as exc:
            raise ChatError(exc.code, exc.message) from None
        except ConversationError as exc:
            raise ChatError("not_allowed", str(exc)) from None
        await self._announce_state(box[0])
        if c.agent_id:
            await self._tell_agent(c.agent_id, {**self.state_json(box[0]), "conversation": c.id})
        return await self.get(c.id)
