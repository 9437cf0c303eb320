"""The identity policy as a table of cases, plus properties over random situations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opportune.core.identity import (
    Customer,
    Identifier,
    Refused,
    decide,
    normalise,
    normalise_email,
    normalise_phone,
    plan_merge,
)

E = lambda v: Identifier("email", v)  # noqa: E731
P = lambda v: Identifier("phone", v)  # noqa: E731
C = lambda v: Identifier("customer_id", v)  # noqa: E731

ANA = Customer("ana", frozenset({E("ana@x.com")}))
ANA_FULL = Customer("ana", frozenset({E("ana@x.com"), C("A-1")}))
BOB = Customer("bob", frozenset({E("bob@x.com"), P("+12025550143")}))


@pytest.mark.parametrize(
    ("case", "current", "owners", "idents", "customer", "attach", "conflicts", "switched"),
    [
        (
            "anonymous visitor, unknown email: a new customer",
            None,
            {},
            [E("new@x.com")],
            None,
            [E("new@x.com")],
            [],
            None,
        ),
        (
            "anonymous visitor, known email: joins that customer freely",
            None,
            {E("ana@x.com"): ANA},
            [E("ana@x.com")],
            "ana",
            [],
            [],
            None,
        ),
        (
            "identified visitor, its own email again: nothing changes",
            ANA,
            {E("ana@x.com"): ANA},
            [E("ana@x.com")],
            "ana",
            [],
            [],
            None,
        ),
        (
            "identified visitor adds a phone it did not have: attached",
            ANA,
            {},
            [P("+12025550100")],
            "ana",
            [P("+12025550100")],
            [],
            None,
        ),
        (
            "identified visitor, a different unknown email: another person, a new customer",
            ANA,
            {},
            [E("eve@x.com")],
            None,
            [E("eve@x.com")],
            [],
            "ana",
        ),
        (
            "identified visitor, another customer's email: switches, never merges",
            ANA,
            {E("bob@x.com"): BOB},
            [E("bob@x.com")],
            "bob",
            [],
            [],
            "ana",
        ),
        (
            "known email plus a new phone: the phone joins the email's customer",
            None,
            {E("ana@x.com"): ANA},
            [E("ana@x.com"), P("+12025550100")],
            "ana",
            [P("+12025550100")],
            [],
            None,
        ),
        (
            "identifiers of two customers: the strongest wins, the other is a conflict",
            None,
            {E("ana@x.com"): ANA, P("+12025550143"): BOB},
            [E("ana@x.com"), P("+12025550143")],
            "ana",
            [],
            [(P("+12025550143"), "bob")],
            None,
        ),
        (
            "customer id beats email",
            None,
            {C("A-1"): ANA_FULL, E("bob@x.com"): BOB},
            [C("A-1"), E("bob@x.com")],
            "ana",
            [],
            [(E("bob@x.com"), "bob")],
            None,
        ),
        (
            "matched customer already has another email: the new one is a conflict",
            None,
            {C("A-1"): ANA_FULL},
            [C("A-1"), E("other@x.com")],
            "ana",
            [],
            [(E("other@x.com"), "ana")],
            None,
        ),
    ],
)
def test_policy_table(case, current, owners, idents, customer, attach, conflicts, switched):
    d = decide(current, owners, idents)
    assert d.customer == customer, case
    assert list(d.attach) == attach, case
    assert [(c.identifier, c.owner) for c in d.conflicts] == conflicts, case
    assert d.switched_from == switched, case


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ana@Example.com", "ana@example.com"),
        ("  bob@x.io ", "bob@x.io"),
        ("null", None),
        ("undefined", None),
        ("anonymous", None),
        ("0", None),
        ("", None),
        ("not-an-email", None),
        ("a@b", None),
        ("[object Object]", None),
    ],
)
def test_email_normalisation(raw: str, expected: str | None) -> None:
    got = normalise_email(raw)
    assert (None if isinstance(got, Refused) else got) == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (202) 555-0143", "ES", "+12025550143"),
        ("202-555-0143", "US", "+12025550143"),
        ("600 111 222", "ES", "+34600111222"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("12345", "US", None),
        ("call me", "US", None),
        ("null", "US", None),
    ],
)
def test_phone_normalisation(raw: str, region: str, expected: str | None) -> None:
    got = normalise_phone(raw, region)
    assert (None if isinstance(got, Refused) else got) == expected


def test_normalise_keeps_the_good_and_names_the_bad() -> None:
    idents, refused = normalise(
        email="Ana@x.com", phone="nope", customer_id=" A-1 ", default_region="US"
    )
    assert idents == [C("A-1"), E("ana@x.com")]
    assert [r.kind for r in refused] == ["phone"]
    assert "not a phone number" in refused[0].reason


def test_merge_plan_refuses_two_accounts_and_self() -> None:
    other = Customer("zed", frozenset({C("Z-9")}))
    assert plan_merge(ANA_FULL, other).blocking
    assert plan_merge(ANA, ANA).blocking
    ok = plan_merge(ANA, BOB)
    assert ok.blocking == () and ok.identifiers == (E("ana@x.com"),)


kinds = st.sampled_from(["customer_id", "email", "phone"])
idents_st = st.builds(Identifier, kinds, st.sampled_from(["a", "b", "c"]))
customers = st.builds(
    Customer, st.sampled_from(["c1", "c2", "c3"]), st.frozensets(idents_st, max_size=3)
)


@given(
    current=st.none() | customers,
    owned=st.dictionaries(idents_st, customers, max_size=3),
    call=st.lists(idents_st, max_size=3, unique_by=lambda i: i.kind),
)
def test_properties(current, owned, call) -> None:
    d = decide(current, owned, call)
    # Deterministic.
    assert d == decide(current, owned, call)
    # Every identifier of the call is attached, already held, or a conflict: none is lost.
    accounted = set(d.attach) | set(d.already) | {c.identifier for c in d.conflicts}
    assert accounted == set(call)
    # Never merges: nothing owned by another customer is attached to the chosen one.
    assert not any(i in owned for i in d.attach)
    # An identified visitor stays or switches; it is never folded into another customer.
    if current is not None and d.customer != current.id:
        assert d.switched_from == current.id
