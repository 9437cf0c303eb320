"""Every role boundary as a table: who may do what, and the words when not."""

from __future__ import annotations

import pytest

from opportune.core.permissions import PermissionDenied, Principal, can, require, why_not

ADMIN = Principal("u0", "admin")
ADMIN_AGENT = Principal("u1", "admin", agent_id="boss", queues=frozenset({"sales"}))
SUPER = Principal("u2", "supervisor", queues=frozenset({"sales"}))
ANA = Principal("u3", "agent", agent_id="ana", queues=frozenset({"sales"}))
BOB = Principal("u4", "agent", agent_id="bob", queues=frozenset({"support"}))

CASES = [
    # who, action, queue, assigned_to, allowed
    (ANA, "answer", "sales", "ana", True),
    (ANA, "answer", "sales", "bob", False),
    (ANA, "answer", "sales", None, False),
    (BOB, "answer", "sales", "ana", False),
    (SUPER, "answer", "sales", "ana", False),
    (ADMIN, "answer", "sales", "ana", False),
    (ADMIN_AGENT, "answer", "sales", "boss", True),
    (ANA, "view", "sales", "bob", True),
    (ANA, "view", "support", "bob", False),
    (BOB, "view", "sales", None, False),
    (SUPER, "view", "sales", None, True),
    (SUPER, "view", "support", None, False),
    (ADMIN, "view", "anything", None, True),
    (ANA, "monitor", "sales", None, False),
    (SUPER, "monitor", "sales", None, True),
    (SUPER, "monitor", "support", None, False),
    (ADMIN, "monitor", "support", None, True),
    (ANA, "read_console", None, None, False),
    (SUPER, "read_console", None, None, True),
    (ADMIN, "read_console", None, None, True),
    (ANA, "configure", None, None, False),
    (SUPER, "configure", None, None, False),
    (ADMIN, "configure", None, None, True),
]


@pytest.mark.parametrize(("who", "action", "queue", "assigned", "allowed"), CASES)
def test_the_role_table(who, action, queue, assigned, allowed) -> None:  # type: ignore[no-untyped-def]
    assert can(who, action, queue=queue, assigned_to=assigned) is allowed
    reason = why_not(who, action, queue=queue, assigned_to=assigned)
    assert (reason is None) is allowed
    if allowed:
        require(who, action, queue=queue, assigned_to=assigned)
    else:
        with pytest.raises(PermissionDenied, match=reason):
            require(who, action, queue=queue, assigned_to=assigned)


def test_reasons_name_the_role_and_never_the_thing() -> None:
    assert why_not(SUPER, "configure") == "a supervisor may not change the workspace"
    assert why_not(ANA, "configure") == "an agent may not change the workspace"
    assert why_not(BOB, "view", queue="secret-queue") == "not a member of this conversation's queue"
