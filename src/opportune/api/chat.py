"""The visitor's chat socket, ``GET /v1/chat`` (docs/conversations.md).

One socket per open chat window. It reads the visitor's frames and writes the
conversation's events: a follower of the conversation (``ConversationHub.follow``) sends
every message after the last sequence the client saw, exactly once and in order, so a
reconnect, a reload or another page of the site resumes where it left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from opportune.engine.chat import ChatError, ChatService
from opportune.store.conversations import Conversation
from opportune.workspace import Site

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024
HELLO_TIMEOUT_S = 10.0
QUEUE_EVERY_S = 5.0
# A heartbeat is written at most this often (a quarter of the grace, at most 30 s): each
# write is a commit, and a thousand open chats' pings were 50 of them a second. A stored
# visitor message records the visitor as seen too.
SEEN_EVERY_S = 30.0
# Close codes (docs/conversations.md).
BAD_FRAME, FORBIDDEN, NOT_FOUND, TOO_SLOW, TOO_LARGE, UNAUTHORISED = (
    4400,
    4403,
    4404,
    4408,
    4413,
    4401,
)


class Closed(Exception):
    """The socket must close with ``code`` (and ``reason``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def now_ms() -> int:
    return int(time.time() * 1000)


def own_origin(ws: WebSocket) -> str:
    scheme = "https" if ws.url.scheme == "wss" else "http"
    return f"{scheme}://{ws.headers.get('host', '')}"


async def read_frame(ws: WebSocket, timeout: float | None = None) -> dict[str, Any]:
    """The next frame as a JSON object; :class:`Closed` for one too large or not JSON."""
    message = await asyncio.wait_for(ws.receive(), timeout)
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    raw = message.get("text")
    if raw is None:
        raw = (message.get("bytes") or b"").decode("utf-8", "replace")
    if len(raw) > MAX_FRAME:
        raise Closed(TOO_LARGE, f"frame of {len(raw)} characters, at most {MAX_FRAME}")
    try:
        frame = json.loads(raw)
    except ValueError:
        raise Closed(BAD_FRAME, "a frame is a JSON object") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise Closed(BAD_FRAME, "a frame is a JSON object with a type")
    return frame


def error_frame(exc: ChatError, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": exc.code, "message": exc.message, **extra}


async def close_with(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await ws.close(code, reason[:120])


def chat_router(*, chat: ChatService, sites_by_key: Mapping[str, Site]) -> APIRouter:
    api = APIRouter()

    @api.websocket("/v1/chat")
    async def visitor_socket(ws: WebSocket) -> None:
        await ws.accept()
        try:
            site = _site(ws, sites_by_key)
            await VisitorSocket(ws, chat, site).run()
        except Closed as exc:
            await close_with(ws, exc.code, exc.reason)
        except TimeoutError:
            await close_with(ws, TOO_SLOW, "send start or resume first")
        except WebSocketDisconnect:
            pass

    return api


def _site(ws: WebSocket, sites_by_key: Mapping[str, Site]) -> Site:
    site = sites_by_key.get(ws.query_params.get("siteKey", ""))
    if site is None:
        raise Closed(NOT_FOUND, "unknown siteKey")
    origin = ws.headers.get("origin")
    if origin is not None and origin != own_origin(ws) and not site.allows_origin(origin):
        raise Closed(FORBIDDEN, f"origin {origin} is not allowed for this site")
    return site


class VisitorSocket:
    """One visitor's socket: its first frame opens or resumes the conversation, then the
    reader and the writer run side by side until either side goes."""

    def __init__(self, ws: WebSocket, chat: ChatService, site: Site) -> None:
        self.ws, self.chat, self.site = ws, chat, site
        self.send_lock = asyncio.Lock()
        self.state = ""
        self.seen_ms = 0  # when the visitor was last recorded as seen
        self.seen_every_ms = min(SEEN_EVERY_S * 1000, chat.hub.grace_ms / 4)

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(frame))

    async def run(self) -> None:
        first = await read_frame(self.ws, HELLO_TIMEOUT_S)
        try:
            conv, after = await self._open(first)
        except ChatError as exc:
            raise Closed(exc.close or BAD_FRAME, exc.message) from None
        self.visitor_id, self.conversation_id = conv.visitor_id, conv.id
        self.state = conv.state
        self.seen_ms = now_ms()
        await self.chat.hub.seen(conv.id, now_ms=self.seen_ms)
        await self.send(
            {"type": "started", "conversation": conv.id, "state": conv.state, "queue": conv.queue}
        )
        tasks = [
            asyncio.create_task(self._write(after)),
            asyncio.create_task(self._read()),
            asyncio.create_task(self._queue_ticks()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # a Closed or a disconnect, raised here
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t

    async def _open(self, frame: dict[str, Any]) -> tuple[Conversation, int]:
        visitor_id = frame.get("visitorId")
        if not isinstance(visitor_id, str) or not 0 < len(visitor_id) <= 64:
            raise ChatError("bad_message", "visitorId: the snippet's visitor id", BAD_FRAME)
        if frame["type"] == "start":
            action = frame.get("action")
            if not isinstance(action, str) or not 0 < len(action) <= 64:
                raise ChatError("bad_message", "action: the offer's id", BAD_FRAME)
            opened = await self.chat.start(
                site_id=self.site.name,
                visitor_id=visitor_id,
                action_id=action,
                form=frame.get("form"),
                locale=frame.get("locale"),
                now_ms=now_ms(),
            )
            return opened.conversation, 0
        if frame["type"] == "resume":
            cid, after = frame.get("conversation"), frame.get("after", 0)
            if not isinstance(cid, str) or not isinstance(after, int) or after < 0:
                raise ChatError("bad_message", "resume: conversation and after", BAD_FRAME)
            return await self.chat.of_visitor(cid, visitor_id, self.site.name), after
        raise ChatError("bad_message", "the first frame is start or resume", BAD_FRAME)

    async def _write(self, after: int) -> None:
        async for event in self.chat.hub.follow(self.conversation_id, after, with_state=True):
            if event.get("type") == "state":
                self.state = str(event.get("state"))
            event = self.chat.for_visitor(event)
            if event.get("type") == "typing" and event.get("sender") == "visitor":
                continue  # their own
            if event.get("type") == "read" and event.get("reader") == "visitor":
                continue
            await self.send(event)
            if event.get("type") == "state" and self.state == "queued":
                await self._queue_status()

    async def _queue_ticks(self) -> None:
        while True:
            if self.state == "queued":
                await self._queue_status()
            await asyncio.sleep(QUEUE_EVERY_S)

    async def _queue_status(self) -> None:
        with contextlib.suppress(ChatError):
            conv = await self.chat.get(self.conversation_id)
            status = await self.chat.queue_status(conv, now_ms=now_ms())
            if status is not None:
                await self.send(status)

    async def _read(self) -> None:
        while True:
            frame = await read_frame(self.ws)
            try:
                # A frame read is carried out even if the socket goes meanwhile.
                await asyncio.shield(self._handle(frame))
            except ChatError as exc:
                if exc.close is not None:
                    raise Closed(exc.close, exc.message) from None
                await self.send(error_frame(exc, **_id_of(frame)))

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind, at = frame["type"], now_ms()
        cid = self.conversation_id
        if kind == "ping":
            if at - self.seen_ms >= self.seen_every_ms:
                self.seen_ms = at
                await self.chat.hub.seen(cid, now_ms=at)
            await self.send({"type": "pong"})
            return
        if kind == "typing":
            await self.chat.hub.typing(cid, "visitor", now_ms=at)
            return
        if kind == "read":
            seq = frame.get("seq")
            if not isinstance(seq, int) or seq < 0:
                raise ChatError("bad_message", "read: seq is a whole number")
            await self.chat.hub.read(cid, reader="visitor", seq=seq)
            return
        conv = await self.chat.get(cid)
        if kind == "message":
            done = await self.chat.visitor_message(
                conv,
                client_id=frame.get("id"),
                text=frame.get("text"),
                choice=frame.get("choice"),
                now_ms=at,
            )
            if not done.duplicate:
                self.seen_ms = at  # stored with the message
            ack = {"type": "ack", "id": done.message.client_id, "seq": done.message.seq}
            await self.send({**ack, "duplicate": done.duplicate})
        elif kind == "escalate":
            await self.chat.escalate(conv, now_ms=at, reason="asked for a person")
        elif kind == "end":
            await self.chat.visitor_end(conv, now_ms=at)
        elif kind == "rate":
            await self.chat.rate(conv, frame.get("rating"))
            await self.send({"type": "rated", "rating": frame.get("rating")})
        elif kind in ("start", "resume"):
            raise ChatError("not_allowed", f"{kind}: this socket already has its conversation")
        else:
            raise ChatError("unknown_type", f"unknown frame type {kind!r}")


def _id_of(frame: dict[str, Any]) -> dict[str, Any]:
    fid = frame.get("id")
    return {"id": fid} if isinstance(fid, str) else {}
