"""Load and validate a workspace folder, reporting every error with file, line and field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from opportune.core.conditions import ConditionError
from opportune.core.rules import RulesError, Ruleset
from opportune.workspace.documents import (
    KINDS as BASE_KINDS,
)
from opportune.workspace.documents import (
    Document,
    OutcomeDoc,
    PageGroupDoc,
    SegmentDoc,
    Site,
)
from opportune.workspace.engagement import (
    ENGAGEMENT_KINDS,
    ActionMapDoc,
    AgentDoc,
    ContentTemplate,
    EngagementSettings,
    KpiDoc,
    QueueDoc,
    build_maps,
    kpi_fits_queue,
)

KINDS = {**BASE_KINDS, **ENGAGEMENT_KINDS}
_OTHERS = (ContentTemplate, QueueDoc, EngagementSettings, AgentDoc, KpiDoc)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a workspace, located precisely enough to fix it."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A workspace that does not validate; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Workspace:
    """The validated documents of a workspace, indexed for the server's lookups."""

    sites: dict[str, Site] = field(default_factory=dict)
    segments: dict[str, SegmentDoc] = field(default_factory=dict)
    outcomes: dict[str, OutcomeDoc] = field(default_factory=dict)
    page_groups: dict[str, PageGroupDoc] = field(default_factory=dict)
    action_maps: dict[str, ActionMapDoc] = field(default_factory=dict)
    templates: dict[str, ContentTemplate] = field(default_factory=dict)
    queues: dict[str, QueueDoc] = field(default_factory=dict)
    engagement: EngagementSettings = field(default_factory=EngagementSettings)
    agents: dict[str, AgentDoc] = field(default_factory=dict)
    kpis: dict[str, KpiDoc] = field(default_factory=dict)

    @property
    def sites_by_key(self) -> dict[str, Site]:
        return {s.key: s for s in self.sites.values()}


def _node_at(node: yaml.Node | None, loc: Iterable[int | str]) -> yaml.Node | None:
    """Follow a pydantic error location through the YAML node tree, as far as it goes."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
            if nxt is None:
                # A missing or unknown key: point at the key itself if it exists.
                key = next((k for k, _ in node.value if k.value == part), None)
                return key or node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _loc_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def build_ruleset(
    segments: list[SegmentDoc],
    outcomes: list[OutcomeDoc],
    page_groups: list[PageGroupDoc] | None = None,
    triggers: list[Any] | None = None,
) -> Ruleset:
    """The core ruleset of these documents; ``RulesError`` for unknown references, cycles
    and names defined twice (their conditions must already be valid)."""
    return Ruleset(
        [s.to_core() for s in segments],
        [o.to_core() for o in outcomes],
        page_groups=[g.to_core() for g in page_groups or ()],
        triggers=triggers or (),
    )


def parse_documents(text: str, file: str) -> tuple[list[Document], list[Problem]]:
    """Validate every YAML document in ``text``; return the good ones and every problem."""
    docs, problems, _ = _parse_documents(text, file)
    return docs, problems


def _parse_documents(text: str, file: str) -> tuple[list[Document], list[Problem], list[int]]:
    docs: list[Document] = []
    lines: list[int] = []
    problems: list[Problem] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        values = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problems.append(Problem(file, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}"))
        return docs, problems, lines
    for node, value in zip(nodes, values, strict=True):
        if value is None:
            continue
        line = node.start_mark.line + 1
        if not isinstance(value, dict):
            problems.append(Problem(file, line, "", "a document must be a mapping with a 'kind'"))
            continue
        kind = value.get("kind")
        model = KINDS.get(kind) if isinstance(kind, str) else None
        if model is None:
            known = ", ".join(sorted(KINDS))
            problems.append(Problem(file, line, "kind", f"unknown kind {kind!r}; one of {known}"))
            continue
        try:
            doc = model.model_validate(value)
        except ValidationError as exc:
            for err in exc.errors():
                loc = err["loc"]
                at = _node_at(node, loc)
                problems.append(
                    Problem(
                        file,
                        (at.start_mark.line + 1) if at is not None else line,
                        _loc_path(loc),
                        _message(err),
                    )
                )
            continue
        if isinstance(doc, SegmentDoc | OutcomeDoc | ActionMapDoc):
            try:
                doc.to_core()
            except ConditionError as exc:
                at = _node_at(node, exc.path)
                line_at = (at.start_mark.line + 1) if at is not None else line
                problems.append(Problem(file, line_at, _loc_path(exc.path), exc.message))
                continue
        docs.append(doc)
        lines.append(line)
    return docs, problems, lines


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def load_workspace(folder: Path) -> Workspace:
    """Read every ``*.yaml``/``*.yml`` file under ``folder``; raise ``ConfigError`` listing all
    problems (including names and site keys used twice)."""
    if not folder.is_dir():
        raise ConfigError([Problem(str(folder), 0, "", "workspace folder not found")])
    problems: list[Problem] = []
    sites: dict[str, Site] = {}
    keys: dict[str, str] = {}
    rules: dict[tuple[str, str], tuple[Any, str, int]] = {}
    others: dict[tuple[str, str], Any] = {}
    where_of: dict[tuple[str, str], tuple[str, int]] = {}
    page_groups: dict[str, PageGroupDoc] = {}
    files = sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")])
    for path in files:
        rel = str(path.relative_to(folder))
        docs, probs, lines = _parse_documents(path.read_text(encoding="utf-8"), rel)
        problems += probs
        for doc, line in zip(docs, lines, strict=True):
            if isinstance(doc, SegmentDoc | OutcomeDoc | ActionMapDoc):
                if (doc.kind, doc.name) in rules:
                    first = rules[(doc.kind, doc.name)]
                    problems.append(
                        Problem(
                            rel,
                            line,
                            "name",
                            f"{doc.kind} {doc.name!r} already defined at {first[1]}:{first[2]}",
                        )
                    )
                else:
                    rules[(doc.kind, doc.name)] = (doc, rel, line)
            elif isinstance(
                doc, ContentTemplate | QueueDoc | EngagementSettings | AgentDoc | KpiDoc
            ):
                if (doc.kind, doc.name) in others:
                    problems.append(Problem(rel, line, "name", f"{doc.kind} {doc.name!r} twice"))
                others[(doc.kind, doc.name)] = doc
                where_of[(doc.kind, doc.name)] = (rel, line)
            elif isinstance(doc, PageGroupDoc):
                if doc.name in page_groups:
                    problems.append(Problem(rel, line, "name", f"page group {doc.name!r} twice"))
                page_groups[doc.name] = doc
            elif isinstance(doc, Site):
                if doc.name in sites:
                    problems.append(Problem(rel, 1, "name", f"site {doc.name!r} defined twice"))
                elif doc.key in keys:
                    problems.append(
                        Problem(rel, 1, "key", f"site key already used by site {keys[doc.key]!r}")
                    )
                else:
                    sites[doc.name] = doc
                    keys[doc.key] = doc.name
    segments = {n: d for (k, n), (d, _, _) in rules.items() if isinstance(d, SegmentDoc)}
    outcomes = {n: d for (k, n), (d, _, _) in rules.items() if isinstance(d, OutcomeDoc)}
    try:
        build_ruleset(list(segments.values()), list(outcomes.values()), list(page_groups.values()))
    except RulesError as exc:
        for kind, name, message in exc.problems:
            _, rel, line = rules[(kind, name)]
            problems.append(Problem(rel, line, "condition", f"{kind} {name!r} {message}"))
    maps = {n: d for (k, n), (d, _, _) in rules.items() if isinstance(d, ActionMapDoc)}
    templates = {n: d for (k, n), d in others.items() if isinstance(d, ContentTemplate)}
    queues = {n: d for (k, n), d in others.items() if isinstance(d, QueueDoc)}
    settings = [d for d in others.values() if isinstance(d, EngagementSettings)]
    agents = {n: d for (k, n), d in others.items() if isinstance(d, AgentDoc)}
    kpis = {n: d for (k, n), d in others.items() if isinstance(d, KpiDoc)}
    for q in queues.values():
        file, line = where_of[("queue", q.name)]
        if q.kpi is not None and q.kpi not in kpis:
            problems.append(Problem(file, line, "kpi", f"unknown kpi {q.kpi!r}"))
        elif q.kpi is not None and (problem := kpi_fits_queue(kpis[q.kpi], q)):
            problems.append(Problem(file, line, "kpi", problem))
    for a in agents.values():
        file, line = where_of[("agent", a.name)]
        for qn in sorted(set(a.queues or ()) - set(queues)):
            problems.append(Problem(file, line, "queues", f"unknown queue {qn!r}"))
    try:
        build_maps(
            list(maps.values()),
            segments=segments,
            outcomes=set(outcomes),
            templates=templates,
            queues=set(queues),
        )
    except RulesError as exc:
        for kind, name, message in exc.problems:
            _, rel, line = rules[(kind, name)]
            problems.append(Problem(rel, line, "", f"{kind} {name!r} {message}"))
    if len(settings) > 1:
        problems.append(Problem("", 0, "", "more than one kind: engagement document"))
    if problems:
        raise ConfigError(problems)
    return Workspace(
        sites=sites,
        segments=segments,
        outcomes=outcomes,
        page_groups=page_groups,
        action_maps=maps,
        templates=templates,
        queues=queues,
        engagement=settings[0] if settings else EngagementSettings(),
        agents=agents,
        kpis=kpis,
    )
