"""Who may do what: the roles of the people who sign in, and the one place that says whether a
person may see, answer or steer a conversation, a queue or the workspace.

Agents see the conversations of the queues they are members of and answer only those routed
to them; supervisors watch their queues' conversations (read only) and read the console;
admins do everything else. Only the agent a conversation is routed to answers it, whatever
their role. Every route asks this module; none decides on its own.

>>> ana = Principal(user_id="u1", role="agent", agent_id="ana", queues=frozenset({"sales"}))
>>> can(ana, "answer", queue="sales", assigned_to="ana")
True
>>> why_not(ana, "monitor", queue="sales")
'an agent may not monitor conversations'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Role = Literal["admin", "supervisor", "agent"]
ROLES: Final[tuple[Role, ...]] = ("admin", "supervisor", "agent")

Action = Literal[
    "answer",  # read and write a conversation routed to me
    "view",  # read a conversation of a queue I belong to (history, transfers)
    "monitor",  # watch a queue's live conversations, read only
    "read_console",  # see the console, Live Now and reports
    "configure",  # change the workspace (sites, segments, maps, queues, users)
]


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in person: their role, the agent they are (if any) and their queues."""

    user_id: str
    role: Role
    agent_id: str | None = None
    queues: frozenset[str] = frozenset()


class PermissionDenied(Exception):
    """Refused; the message says what the role may not do (never what exists)."""


def why_not(
    who: Principal,
    action: Action,
    *,
    queue: str | None = None,
    assigned_to: str | None = None,
) -> str | None:
    """``None`` if ``who`` may do ``action`` (on a conversation of ``queue`` assigned to
    ``assigned_to``, where it applies), else the reason in words."""
    if action == "answer":  # whatever the role: a customer talks to the agent routed to them
        if who.agent_id is None:
            return "only the agent it is routed to may answer a conversation"
        return None if assigned_to == who.agent_id else "this conversation is not routed to you"
    if who.role == "admin":
        return None
    if action == "configure":
        return f"a{'n' if who.role == 'agent' else ''} {who.role} may not change the workspace"
    if action == "read_console":
        return None if who.role == "supervisor" else "an agent may not open the console"
    in_queue = queue is not None and queue in who.queues
    if action == "monitor":
        if who.role != "supervisor":
            return "an agent may not monitor conversations"
        return None if in_queue else "not a supervisor of this conversation's queue"
    return None if in_queue else "not a member of this conversation's queue"


def can(
    who: Principal,
    action: Action,
    *,
    queue: str | None = None,
    assigned_to: str | None = None,
) -> bool:
    """Whether ``who`` may do ``action``; :func:`why_not` says why not."""
    return why_not(who, action, queue=queue, assigned_to=assigned_to) is None


def require(
    who: Principal,
    action: Action,
    *,
    queue: str | None = None,
    assigned_to: str | None = None,
) -> None:
    """Raise :class:`PermissionDenied` unless ``who`` may do ``action``."""
    reason = why_not(who, action, queue=queue, assigned_to=assigned_to)
    if reason is not None:
        raise PermissionDenied(reason)
