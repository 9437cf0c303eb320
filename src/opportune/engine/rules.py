"""The rules in force: the workspace's segments and outcomes plus those created over the
admin API, compiled into one :class:`Ruleset`.

Workspace documents are owned by their files: the API reads them but refuses to change
them (edit the file). API documents live in the ``definitions`` table; every change takes
a new ``version``, and each process polls ``max(version)`` (``refresh``) so a change made
on one process reaches the others within the poll interval. Every change is recorded in
the audit log (``store/audit.py``) in its own transaction, with who made it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection

from opportune.core.actionmaps import ActionMap
from opportune.core.rules import Ruleset
from opportune.store import audit
from opportune.store.audit import UNKNOWN, Action, Actor
from opportune.store.schema import definitions
from opportune.workspace import Workspace
from opportune.workspace.documents import OutcomeDoc, SegmentDoc
from opportune.workspace.engagement import (
    ActionMapDoc,
    KpiDoc,
    QueueDoc,
    QueueKpiDoc,
    build_maps,
)
from opportune.workspace.loader import build_ruleset

Kind = Literal["segment", "outcome", "actionMap"]
Doc = SegmentDoc | OutcomeDoc | ActionMapDoc | KpiDoc | QueueKpiDoc
MODELS: dict[str, type[Any]] = {
    "segment": SegmentDoc,
    "outcome": OutcomeDoc,
    "actionMap": ActionMapDoc,
    "kpi": KpiDoc,
    "queueKpi": QueueKpiDoc,
}
log = logging.getLogger(__name__)


class ReadOnlyDefinition(Exception):
    """The definition comes from a workspace file; the API may not change it."""


def _fingerprint(docs: list[Any]) -> str:
    text = json.dumps(
        sorted((d.kind, d.name, d.model_dump(mode="json")) for d in docs),
        sort_keys=True,
        default=str,
    )
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class RuleBook:
    """Holds the compiled ruleset and the documents behind it."""

    def __init__(self, workspace: Workspace, engine: Engine | None = None) -> None:
        self.engine = engine
        self.files: dict[tuple[str, str], Doc] = {
            **{("segment", n): d for n, d in workspace.segments.items()},
            **{("outcome", n): d for n, d in workspace.outcomes.items()},
            **{("actionMap", n): d for n, d in workspace.action_maps.items()},
            **{("kpi", n): d for n, d in workspace.kpis.items()},
        }
        self.workspace = workspace
        self.page_groups = list(workspace.page_groups.values())
        self.api: dict[tuple[str, str], Doc] = {}
        self.version = -1
        self.maps: list[ActionMap] = []
        self.ruleset, self.maps = self._compile(self.files)

    # -- reading -----------------------------------------------------------------------

    def docs(self, kind: str) -> list[tuple[Doc, str]]:
        """Every definition of ``kind`` with its source (``workspace`` or ``api``).

        >>> from opportune.workspace import Workspace
        >>> RuleBook(Workspace()).docs("segment")
        []
        """
        out = [(d, "workspace") for (k, _), d in self.files.items() if k == kind]
        out += [(d, "api") for (k, _), d in self.api.items() if k == kind]
        return sorted(out, key=lambda x: x[0].name)

    def get(self, kind: str, name: str) -> tuple[Doc, str] | None:
        if (kind, name) in self.files:
            return self.files[(kind, name)], "workspace"
        if (kind, name) in self.api:
            return self.api[(kind, name)], "api"
        return None

    def kpis(self) -> dict[str, KpiDoc]:
        """Every KPI: the workspace's and those created over the API."""
        return {d.name: d for d, _ in self.docs("kpi")}

    def queues(self) -> dict[str, QueueDoc]:
        """The workspace's queues, each with the KPI it optimises now (set over the API,
        else its document's)."""
        out = {}
        for name, q in self.workspace.queues.items():
            found = self.api.get(("queueKpi", name))
            out[name] = q.model_copy(update={"kpi": found.kpi}) if found is not None else q
        return out

    def candidate(self, doc: Doc | None, *, remove: tuple[str, str] | None = None) -> Ruleset:
        """The ruleset with ``doc`` added or replaced (or ``remove`` removed); raises
        ``ConditionError`` / ``RulesError`` if it would not work."""
        merged = {**self.files, **self.api}
        if remove is not None:
            merged.pop(remove, None)
        if doc is not None:
            merged[(doc.kind, doc.name)] = doc
        return self._compile(merged)[0]

    def candidates(self, docs: Sequence[Doc]) -> Ruleset:
        """The ruleset with every one of ``docs`` added or replaced (an import); raises
        as :meth:`candidate` does."""
        return self._compile({**self.files, **self.api, **{(d.kind, d.name): d for d in docs}})

    def _compile(self, docs: dict[tuple[str, str], Doc]) -> tuple[Ruleset, list[ActionMap]]:
        values = list(docs.values())
        segments = {d.name: d for d in values if isinstance(d, SegmentDoc)}
        outcomes = [d for d in values if isinstance(d, OutcomeDoc)]
        ws = self.workspace
        maps = build_maps(
            [d for d in values if isinstance(d, ActionMapDoc)],
            segments=segments,
            outcomes={o.name for o in outcomes},
            templates=ws.templates,
            queues=set(ws.queues),
            flows=set(ws.bot_flows),
        )
        # The maps' journey patterns are kept up to date with the rules'.
        rs = build_ruleset(
            list(segments.values()), outcomes, self.page_groups, [m.trigger for m in maps]
        )
        # Routing documents (KPIs, queue KPIs) do not change what a journey is: changing
        # them must not make every live visit replay its history.
        journey = [d for d in values if isinstance(d, SegmentDoc | OutcomeDoc | ActionMapDoc)]
        rs.fingerprint = _fingerprint([*journey, *self.page_groups])
        return rs, maps

    # -- the definitions table -----------------------------------------------------------

    def refresh(self) -> bool:
        """Reload API definitions if another process (or this one) changed them."""
        if self.engine is None:
            return False
        with self.engine.connect() as conn:
            version = conn.execute(select(func.max(definitions.c.version))).scalar()
            version = -1 if version is None else int(version)
            if version == self.version:
                return False
            rows = conn.execute(
                select(definitions.c.kind, definitions.c.name, definitions.c.body).where(
                    definitions.c.body.is_not(None)
                )
            ).all()
        api: dict[tuple[str, str], Doc] = {}
        for kind, name, body in rows:
            # A deleted definition's body is JSON null, which the SQL filter does not see.
            if body is None or (kind, name) in self.files or kind not in MODELS:
                continue
            try:
                api[(kind, name)] = MODELS[kind].model_validate(body)
            except Exception:  # stored by an older version: keep the others working
                log.exception("definition %s %s no longer validates; ignored", kind, name)
        try:
            ruleset, maps = self._compile({**self.files, **api})
        except Exception:
            log.exception("stored definitions do not compile together; keeping the rules")
            self.version = version
            return False
        self.api, self.ruleset, self.maps, self.version = api, ruleset, maps, version
        return True

    def put(self, doc: Doc, *, now_ms: int, actor: Actor = UNKNOWN) -> Ruleset:
        """Create or replace an API definition (validated against all the others); the
        change and ``actor`` go to the audit log in the same transaction."""
        return self.apply([doc], now_ms=now_ms, actor=actor)

    def delete(self, kind: str, name: str, *, now_ms: int, actor: Actor = UNKNOWN) -> None:
        """Delete an API definition (the others must still work without it), audited."""
        if (kind, name) in self.files:
            raise ReadOnlyDefinition(f"{kind} {name!r} is defined in the workspace files")
        self.candidate(None, remove=(kind, name))
        assert self.engine is not None
        with self.engine.begin() as conn:
            self._write(conn, kind, name, None, now_ms, actor, "delete")
        self.refresh()

    def apply(
        self,
        docs: Sequence[Doc],
        *,
        now_ms: int,
        actor: Actor = UNKNOWN,
        action: Action | None = None,
    ) -> Ruleset:
        """Create or replace several API definitions at once: checked together against all
        the others, written in one transaction with an audit row each (``action``: the
        row's action, e.g. ``import``; else ``create`` or ``update``). A document equal to
        the stored one is not written again."""
        for doc in docs:
            if (doc.kind, doc.name) in self.files:
                raise ReadOnlyDefinition(
                    f"{doc.kind} {doc.name!r} is defined in the workspace files"
                )
        self.candidates(docs)
        assert self.engine is not None
        with self.engine.begin() as conn:
            for doc in docs:
                body = doc.model_dump(mode="json", by_alias=True)
                self._write(conn, doc.kind, doc.name, body, now_ms, actor, action)
        self.refresh()
        return self.ruleset

    @staticmethod
    def _write(
        conn: Connection,
        kind: str,
        name: str,
        body: Any,
        now_ms: int,
        actor: Actor,
        action: Action | None,
    ) -> None:
        found = conn.execute(
            select(definitions.c.body).where(definitions.c.kind == kind, definitions.c.name == name)
        ).first()
        before = found[0] if found is not None else None
        if before == body:
            return  # nothing changes: no new version, nothing to audit
        version = (conn.execute(select(func.max(definitions.c.version))).scalar() or 0) + 1
        values = {"body": body, "version": version, "updated_at": now_ms}
        if found is not None:
            conn.execute(
                definitions.update()
                .where(definitions.c.kind == kind, definitions.c.name == name)
                .values(**values)
            )
        else:
            conn.execute(definitions.insert().values(kind=kind, name=name, **values))
        if action is None:
            action = "delete" if body is None else "create" if before is None else "update"
        audit.record(
            conn,
            at=now_ms,
            actor=actor,
            action=action,
            kind=kind,
            name=name,
            before=before,
            after=body,
        )
