"""The agent desk's socket, ``GET /agent/ws`` (docs/conversations.md).

Signed in by the session cookie; only the server's own pages may open it (a check of the
``Origin``, since browsers send cookies on a cross-site WebSocket handshake). It carries
the agent's alerts (the ``agent:<id>`` bus channel) and every conversation the desk
follows, each from the last sequence the page saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from opportune.api.chat import (
    FORBIDDEN,
    UNAUTHORISED,
    Closed,
    close_with,
    error_frame,
    now_ms,
    own_origin,
    read_frame,
)
from opportune.core.permissions import Principal
from opportune.engine.chat import ChatError, ChatService, agent_channel, summary_of
from opportune.store import interactions as interactions_store

Authenticate = Callable[[WebSocket], Awaitable[Principal | None]]


def desk_socket_router(*, chat: ChatService, authenticate: Authenticate) -> APIRouter:
    """``authenticate(ws)``: the principal of the socket's session cookie, or ``None``."""
    api = APIRouter()

    @api.websocket("/agent/ws")
    async def desk_socket(ws: WebSocket) -> None:
        await ws.accept()
        try:
            origin = ws.headers.get("origin")
            if origin is not None and origin != own_origin(ws):
                raise Closed(FORBIDDEN, "only this server's pages may open the desk")
            who = await authenticate(ws)
            if who is None:
                raise Closed(UNAUTHORISED, "sign in first")
            if who.role == "agent" and who.agent_id is None:
                raise Closed(FORBIDDEN, "this user is not a routing agent")
            await DeskSocket(ws, chat, who).run()
        except Closed as exc:
            await close_with(ws, exc.code, exc.reason)
        except WebSocketDisconnect:
            pass

    return api


class DeskSocket:
    def __init__(self, ws: WebSocket, chat: ChatService, who: Principal) -> None:
        self.ws, self.chat, self.who = ws, chat, who
        self.send_lock = asyncio.Lock()
        self.follows: dict[str, asyncio.Task[None]] = {}

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(frame))

    async def run(self) -> None:
        channels = [agent_channel(self.who.agent_id)] if self.who.agent_id else []
        sub = await self.chat.bus.subscribe(*channels) if channels else None
        try:
            await self.send(await self._hello())
            tasks = [asyncio.create_task(self._read())]
            if sub is not None:
                tasks.append(asyncio.create_task(self._alerts(sub)))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
            finally:
                for t in [*tasks, *self.follows.values()]:
                    t.cancel()
                for t in [*tasks, *self.follows.values()]:
                    with contextlib.suppress(BaseException):
                        await t
        finally:
            if sub is not None:
                await sub.aclose()

    async def _hello(self) -> dict[str, Any]:
        at = now_ms()
        convs = await self.chat.desk(self.who)
        presence = "offline"
        if self.who.agent_id:
            states = await self.chat._tx(interactions_store.agent_states)
            st = states.get(self.who.agent_id)
            presence = st.presence if st is not None else "offline"
        name = self.chat.agent_names.get(self.who.agent_id or "", self.who.agent_id)
        return {
            "type": "hello",
            "agent": {"id": self.who.agent_id, "name": name, "role": self.who.role},
            "presence": presence,
            "conversations": [summary_of(c, now_ms=at) for c in convs],
        }

    async def _alerts(self, sub: Any) -> None:
        while True:
            data = await sub.get()
            with contextlib.suppress(ValueError):
                await self.send(json.loads(data))

    async def _read(self) -> None:
        while True:
            frame = await read_frame(self.ws)
            cid = frame.get("conversation")
            try:
                # A frame read is carried out even if the socket goes meanwhile.
                await asyncio.shield(self._handle(frame, cid if isinstance(cid, str) else None))
            except ChatError as exc:
                extra = {"conversation": cid} if isinstance(cid, str) else {}
                fid = frame.get("id")
                if isinstance(fid, str):
                    extra["id"] = fid
                await self.send(error_frame(exc, **extra))

    async def _handle(self, frame: dict[str, Any], cid: str | None) -> None:
        kind, at, chat, who = frame["type"], now_ms(), self.chat, self.who
        if kind == "presence":
            await chat.presence(who, str(frame.get("presence")), now_ms=at)
            return
        if kind == "ping":
            await self.send({"type": "pong"})
            return
        if cid is None:
            raise ChatError("bad_message", f"{kind}: name the conversation")
        if kind == "follow":
            after = frame.get("after", 0)
            if not isinstance(after, int) or after < 0:
                raise ChatError("bad_message", "follow: after is a whole number")
            await chat.for_agent(who, cid, "view")
            self._follow(cid, after)
        elif kind == "accept":
            await chat.for_agent(who, cid, "answer")
            if cid not in self.follows:
                self._follow(cid, 0)
            await chat.accept(who, cid, now_ms=at)
        elif kind == "decline":
            await chat.decline(who, cid, now_ms=at)
        elif kind == "message":
            done = await chat.agent_message(
                who, cid, client_id=frame.get("id"), text=frame.get("text"), now_ms=at
            )
            ack = {"type": "ack", "conversation": cid, "id": done.message.client_id}
            await self.send({**ack, "seq": done.message.seq, "duplicate": done.duplicate})
        elif kind == "typing":
            await chat.for_agent(who, cid, "answer")
            await chat.hub.typing(cid, "agent", now_ms=at)
        elif kind == "read":
            await self._read_mark(cid, frame.get("seq"))
        elif kind == "end":
            await chat.agent_end(who, cid, now_ms=at)
        elif kind == "wrapup":
            await chat.wrap_up(
                who, cid, code=frame.get("code"), notes=frame.get("notes"), now_ms=at
            )
        elif kind == "transfer":
            await chat.transfer(
                who, cid, queue=frame.get("queue"), agent=frame.get("agent"), now_ms=at
            )
        else:
            raise ChatError("unknown_type", f"unknown frame type {kind!r}")

    async def _read_mark(self, cid: str, seq: object) -> None:
        if not isinstance(seq, int) or seq < 0:
            raise ChatError("bad_message", "read: seq is a whole number")
        await self.chat.for_agent(self.who, cid, "answer")
        await self.chat.hub.read(cid, reader="agent", seq=seq)

    def _follow(self, cid: str, after: int) -> None:
        old = self.follows.pop(cid, None)
        if old is not None:
            old.cancel()
        self.follows[cid] = asyncio.create_task(self._forward(cid, after))

    async def _forward(self, cid: str, after: int) -> None:
        async for event in self.chat.hub.follow(cid, after, with_state=True):
            if event.get("type") == "typing" and event.get("sender") == "agent":
                continue
            await self.send({**event, "conversation": cid})
