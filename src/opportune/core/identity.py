"""Who is this visitor? Identifier normalisation and the merge policy, as pure functions.

A *visitor* is a browser (the cookie); a *customer* is a person, known once the site calls
``identify`` with an email, a phone number or its own customer id. The rules follow
PostHog's published identity model:

- an anonymous visitor joins a known customer freely (its history comes along);
- two customers who are both already identified are never merged silently: that takes an
  explicit admin merge, with a preview, and can be split again;
- junk values ("null", "undefined", "0", ...) are refused, never used as identifiers.

What this module adds, and why:

- A customer holds at most one identifier of each kind. An identify call that brings a
  *different* value of a kind the visitor's customer already has (another email, another
  customer id) is another person on the same device (a shared computer, a family tablet):
  the visitor *switches* to that person from now on; nothing is merged.
- Identifiers of one call that point at different customers are a *conflict*: the
  strongest identifier decides (customerId > email > phone), the others stay with their
  owners and the conflict is logged for an admin to review.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import phonenumbers

from opportune.core.events import JUNK_IDENTIFIERS

Kind = Literal["customer_id", "email", "phone"]
# Strongest first: a site's own account id beats an email, an email beats a phone number.
KINDS: Final[tuple[Kind, ...]] = ("customer_id", "email", "phone")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


@dataclass(frozen=True, slots=True, order=True)
class Identifier:
    kind: Kind
    value: str


@dataclass(frozen=True, slots=True)
class Refused:
    kind: Kind
    reason: str


def normalise_email(raw: str) -> str | Refused:
    """Trimmed and lower-cased; refused when junk or not shaped like an address.

    >>> normalise_email("  Ana.Lopez@Example.COM ")
    'ana.lopez@example.com'
    >>> normalise_email("undefined")
    Refused(kind='email', reason="email 'undefined' is a placeholder, not an identifier")
    """
    value = raw.strip().lower()
    if value in JUNK_IDENTIFIERS:
        return Refused("email", f"email {raw!r} is a placeholder, not an identifier")
    if len(value) > 254 or not _EMAIL.match(value):
        return Refused("email", f"email {raw!r} is not an email address")
    return value


def normalise_phone(raw: str, default_region: str) -> str | Refused:
    """E.164 (``+34600111222``), read in ``default_region`` when it has no ``+country``.

    >>> normalise_phone("(202) 555-0143", "US")
    '+12025550143'
    >>> normalise_phone("600 11 12 22", "ES")
    '+34600111222'
    """
    value = raw.strip()
    if value.lower() in JUNK_IDENTIFIERS:
        return Refused("phone", f"phone {raw!r} is a placeholder, not an identifier")
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        return Refused("phone", f"phone {raw!r} is not a phone number")
    if not phonenumbers.is_valid_number(number):
        return Refused("phone", f"phone {raw!r} is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_customer_id(raw: str) -> str | Refused:
    """Trimmed, case kept (a site's ids may be case-sensitive)."""
    value = raw.strip()
    if value.lower() in JUNK_IDENTIFIERS:
        return Refused("customer_id", f"customerId {raw!r} is a placeholder, not an identifier")
    if len(value) > 128:
        return Refused("customer_id", "customerId longer than 128 characters")
    return value


def normalise(
    *, email: str | None, phone: str | None, customer_id: str | None, default_region: str
) -> tuple[list[Identifier], list[Refused]]:
    """The usable identifiers of one identify call (strongest first) and the refused ones."""
    out: list[Identifier] = []
    refused: list[Refused] = []
    raw: list[tuple[Kind, str | None]] = [
        ("customer_id", customer_id),
        ("email", email),
        ("phone", phone),
    ]
    for kind, value in raw:
        if value is None:
            continue
        if kind == "email":
            norm = normalise_email(value)
        elif kind == "phone":
            norm = normalise_phone(value, default_region)
        else:
            norm = normalise_customer_id(value)
        if isinstance(norm, Refused):
            refused.append(norm)
        else:
            out.append(Identifier(kind, norm))
    return out, refused


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer as the policy sees it: its id and the identifiers it holds."""

    id: str
    identifiers: frozenset[Identifier] = frozenset()

    def values_of(self, kind: Kind) -> frozenset[str]:
        return frozenset(i.value for i in self.identifiers if i.kind == kind)

    def accepts(self, ident: Identifier) -> bool:
        """Holds no identifier of that kind, or holds this very one."""
        values = self.values_of(ident.kind)
        return not values or ident.value in values


@dataclass(frozen=True, slots=True)
class Conflict:
    identifier: Identifier
    owner: str  # the customer that holds it
    reason: str


@dataclass(frozen=True, slots=True)
class IdentityDecision:
    """What to do with one identify call.

    ``customer`` is the existing customer the visitor is linked to, or ``None`` for a new
    one (the store creates it). ``attach`` are identifiers to add to that customer.
    ``switched_from`` is set when the visitor was linked to another identified customer.
    """

    customer: str | None
    attach: tuple[Identifier, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    switched_from: str | None = None
    already: tuple[Identifier, ...] = field(default=())  # held by the customer already


def decide(
    current: Customer | None,
    owners: Mapping[Identifier, Customer],
    identifiers: Sequence[Identifier],
) -> IdentityDecision:
    """The merge policy for one identify call.

    ``current`` is the customer the visitor is linked to (``None``: anonymous), ``owners``
    the customer holding each identifier that already exists, ``identifiers`` the call's
    usable identifiers. Never returns a decision that merges two customers.
    """
    ordered = sorted(identifiers, key=lambda i: KINDS.index(i.kind))
    if not ordered:
        return IdentityDecision(current.id if current else None)
    matched = [(i, owners[i]) for i in ordered if i in owners]
    if matched:
        target: Customer | None = matched[0][1]
    elif current is not None and _compatible(current, ordered):
        target = current
    else:
        target = None  # a new customer
    conflicts: list[Conflict] = []
    attach: list[Identifier] = []
    already: list[Identifier] = []
    for ident in ordered:
        owner = owners.get(ident)
        if owner is not None:
            if target is not None and owner.id == target.id:
                already.append(ident)
            else:
                conflicts.append(
                    Conflict(ident, owner.id, f"{ident.kind} belongs to another customer")
                )
        elif target is not None and not target.accepts(ident):
            # The target already has another value of this kind: attaching would give one
            # person two accounts' identifiers. Leave it for an admin to decide.
            conflicts.append(
                Conflict(ident, target.id, f"customer already has another {ident.kind}")
            )
        else:
            attach.append(ident)
    switched = (
        current.id if current is not None and (target is None or target.id != current.id) else None
    )
    return IdentityDecision(
        customer=target.id if target else None,
        attach=tuple(attach),
        conflicts=tuple(conflicts),
        switched_from=switched,
        already=tuple(already),
    )


def _compatible(customer: Customer, identifiers: Sequence[Identifier]) -> bool:
    """Whether new identifiers can belong to ``customer``: none contradicts one it holds."""
    return all(customer.accepts(i) for i in identifiers)


@dataclass(frozen=True, slots=True)
class MergePlan:
    """What an admin merge of ``source`` into ``target`` moves, and what blocks it."""

    source: str
    target: str
    identifiers: tuple[Identifier, ...]
    blocking: tuple[str, ...]  # reasons the merge is refused


def plan_merge(source: Customer, target: Customer) -> MergePlan:
    """Two different customer ids are two accounts of the site: never one person."""
    blocking: list[str] = []
    if source.id == target.id:
        blocking.append("a customer cannot be merged into itself")
    src, dst = source.values_of("customer_id"), target.values_of("customer_id")
    if src and dst and src != dst:
        blocking.append(
            f"both have a customerId ({', '.join(sorted(src | dst))}): different accounts"
        )
    return MergePlan(source.id, target.id, tuple(sorted(source.identifiers)), tuple(blocking))
