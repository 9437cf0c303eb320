"""Load and validate a workspace folder, reporting every error with file, line and field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from opportune.core.conditions import ConditionError, format_path
from opportune.core.rules import RulesError, Ruleset
from opportune.workspace.bots import BotFlowDoc
from opportune.workspace.crm import CRM_KINDS, CrmDoc
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
from opportune.workspace.site_keys import SiteKeys

KINDS = {**BASE_KINDS, **ENGAGEMENT_KINDS, **CRM_KINDS, "botFlow": BotFlowDoc}
_OTHERS = (ContentTemplate, QueueDoc, EngagementSettings, AgentDoc, KpiDoc, BotFlowDoc, CrmDoc)
_D = TypeVar("_D", bound=Document)


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
    bot_flows: dict[str, BotFlowDoc] = field(default_factory=dict)
    crms: dict[str, CrmDoc] = field(default_factory=dict)

    @property
    def sites_by_key(self) -> dict[str, Site]:
        """The sites by their current key (``site_keys`` also knows the previous ones)."""
        return {s.key: s for s in self.sites.values()}

    @property
    def site_keys(self) -> SiteKeys:
        """Every key a site is found by now or until its rotation's end."""
        return SiteKeys(self.sites.values())


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


def _clean(node: yaml.Node | None, loc: Iterable[int | str]) -> list[int | str]:
    """``loc`` without the tags pydantic puts in after a list item of a tagged union
    (``steps[2].message.text`` is ``steps[2].text`` in the YAML)."""
    parts, out = list(loc), []
    for i, part in enumerate(parts):
        after_item = bool(out) and isinstance(out[-1], int)
        if after_item and isinstance(node, yaml.MappingNode):
            keys = {k.value: getattr(v, "value", None) for k, v in node.value}
            then = parts[i + 1] if i + 1 < len(parts) else None
            if keys.get("type") == part and (part not in keys or then in keys):
                continue
        out.append(part)
        node = _node_at(node, [part])
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
    docs, problems, _, _ = _parse_documents(text, file)
    return docs, problems


def _parse_documents(
    text: str, file: str
) -> tuple[list[Document], list[Problem], list[int], list[yaml.Node]]:
    docs: list[Document] = []
    kept: list[yaml.Node] = []
    lines: list[int] = []
    problems: list[Problem] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        values = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problems.append(Problem(file, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}"))
        return docs, problems, lines, kept
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
                loc = _clean(node, err["loc"])
                at = _node_at(node, loc)
                problems.append(
                    Problem(
                        file,
                        (at.start_mark.line + 1) if at is not None else line,
                        format_path(loc),
                        _message(err),
                    )
                )
            continue
        if isinstance(doc, BotFlowDoc) and (found := doc.problems()):
            for loc, message in found:
                at = _node_at(node, loc)
                line_at = (at.start_mark.line + 1) if at is not None else line
                problems.append(Problem(file, line_at, format_path(loc), message))
            continue
        if isinstance(doc, SegmentDoc | OutcomeDoc | ActionMapDoc):
            try:
                doc.to_core()
            except ConditionError as exc:
                at = _node_at(node, exc.path)
                line_at = (at.start_mark.line + 1) if at is not None else line
                problems.append(Problem(file, line_at, format_path(exc.path), exc.message))
                continue
        docs.append(doc)
        lines.append(line)
        kept.append(node)
    return docs, problems, lines, kept


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


@dataclass
class _Gathered:
    """The documents of a workspace as read file by file, and the problems found so far."""

    problems: list[Problem] = field(default_factory=list)
    sites: dict[str, Site] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # site key -> site name
    # (kind, name) -> (document, file, line), for the documents built into rules
    rules: dict[tuple[str, str], tuple[Any, str, int]] = field(default_factory=dict)
    others: dict[tuple[str, str], Any] = field(default_factory=dict)
    where_of: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    page_groups: dict[str, PageGroupDoc] = field(default_factory=dict)
    nodes: dict[tuple[str, str], yaml.Node] = field(default_factory=dict)

    def add(self, doc: Document, rel: str, line: int) -> None:
        """Index ``doc``, noting a name or site key used twice."""
        if isinstance(doc, SegmentDoc | OutcomeDoc | ActionMapDoc):
            if (doc.kind, doc.name) in self.rules:
                _, file, at = self.rules[(doc.kind, doc.name)]
                message = f"{doc.kind} {doc.name!r} already defined at {file}:{at}"
                self.problems.append(Problem(rel, line, "name", message))
            else:
                self.rules[(doc.kind, doc.name)] = (doc, rel, line)
        elif isinstance(doc, _OTHERS):
            if (doc.kind, doc.name) in self.others:
                self.problems.append(Problem(rel, line, "name", f"{doc.kind} {doc.name!r} twice"))
            self.others[(doc.kind, doc.name)] = doc
            self.where_of[(doc.kind, doc.name)] = (rel, line)
        elif isinstance(doc, PageGroupDoc):
            if doc.name in self.page_groups:
                self.problems.append(Problem(rel, line, "name", f"page group {doc.name!r} twice"))
            self.page_groups[doc.name] = doc
        elif isinstance(doc, Site):
            if doc.name in self.sites:
                self.problems.append(Problem(rel, 1, "name", f"site {doc.name!r} defined twice"))
            elif used := [k for k in doc.all_keys() if k in self.keys]:
                message = f"site key {used[0]!r} already used by site {self.keys[used[0]]!r}"
                self.problems.append(Problem(rel, 1, "key", message))
            else:
                self.sites[doc.name] = doc
                self.keys.update(dict.fromkeys(doc.all_keys(), doc.name))

    def named(self, kind: type[_D]) -> dict[str, _D]:
        """The documents of one kind by name."""
        docs = [d for d, _, _ in self.rules.values()] + list(self.others.values())
        return {d.name: d for d in docs if isinstance(d, kind)}

    def rule_problems(self, exc: RulesError, path: str) -> None:
        """The problems of a ruleset, each at the document it names."""
        for kind, name, message in exc.problems:
            _, rel, line = self.rules[(kind, name)]
            self.problems.append(Problem(rel, line, path, f"{kind} {name!r} {message}"))


def load_workspace(folder: Path) -> Workspace:
    """Read every ``*.yaml``/``*.yml`` file under ``folder``; raise ``ConfigError`` listing all
    problems (including names and site keys used twice).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "segments.yaml").write_text(
    ...         "{kind: segment, name: mobile, condition: {attribute: device, equals: mobile}}")
    ...     sorted(load_workspace(Path(tmp)).segments)
    ['mobile']
    """
    if not folder.is_dir():
        raise ConfigError([Problem(str(folder), 0, "", "workspace folder not found")])
    got = _Gathered()
    for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
        rel = str(path.relative_to(folder))
        docs, probs, lines, nodes = _parse_documents(path.read_text(encoding="utf-8"), rel)
        got.problems += probs
        for doc, line, node in zip(docs, lines, nodes, strict=True):
            got.add(doc, rel, line)
            if isinstance(doc, BotFlowDoc):
                got.nodes[(doc.kind, doc.name)] = node
    segments, outcomes = got.named(SegmentDoc), got.named(OutcomeDoc)
    try:
        build_ruleset(
            list(segments.values()), list(outcomes.values()), list(got.page_groups.values())
        )
    except RulesError as exc:
        got.rule_problems(exc, "condition")
    maps, templates = got.named(ActionMapDoc), got.named(ContentTemplate)
    queues, agents, kpis = got.named(QueueDoc), got.named(AgentDoc), got.named(KpiDoc)
    settings = [d for d in got.others.values() if isinstance(d, EngagementSettings)]
    flows = got.named(BotFlowDoc)
    _check_routing(got, queues, agents, kpis)
    _check_flows(got, flows, queues, set(segments), set(outcomes))
    try:
        build_maps(
            list(maps.values()),
            segments=segments,
            outcomes=set(outcomes),
            templates=templates,
            queues=set(queues),
            flows=set(flows),
        )
    except RulesError as exc:
        got.rule_problems(exc, "")
    if len(settings) > 1:
        got.problems.append(Problem("", 0, "", "more than one kind: engagement document"))
    if got.problems:
        raise ConfigError(got.problems)
    return Workspace(
        sites=got.sites,
        segments=segments,
        outcomes=outcomes,
        page_groups=got.page_groups,
        action_maps=maps,
        templates=templates,
        queues=queues,
        engagement=settings[0] if settings else EngagementSettings(),
        agents=agents,
        kpis=kpis,
        bot_flows=flows,
        crms=got.named(CrmDoc),
    )


def _check_routing(
    got: _Gathered,
    queues: dict[str, QueueDoc],
    agents: dict[str, AgentDoc],
    kpis: dict[str, KpiDoc],
) -> None:
    """Queues name known KPIs that fit them; agents name known queues."""
    for q in queues.values():
        file, line = got.where_of[("queue", q.name)]
        if q.kpi is not None and q.kpi not in kpis:
            got.problems.append(Problem(file, line, "kpi", f"unknown kpi {q.kpi!r}"))
        elif q.kpi is not None and (problem := kpi_fits_queue(kpis[q.kpi], q)):
            got.problems.append(Problem(file, line, "kpi", problem))
    for a in agents.values():
        file, line = got.where_of[("agent", a.name)]
        for qn in sorted(set(a.queues or ()) - set(queues)):
            got.problems.append(Problem(file, line, "queues", f"unknown queue {qn!r}"))


def _check_flows(
    got: _Gathered,
    flows: dict[str, BotFlowDoc],
    queues: dict[str, QueueDoc],
    segments: set[str],
    outcomes: set[str],
) -> None:
    """Bot flows hand over to known queues and test known segments and outcomes (each
    problem at its own line)."""
    for flow in flows.values():
        file, line = got.where_of[("botFlow", flow.name)]
        node = got.nodes.get(("botFlow", flow.name))
        for loc, message in flow.problems(set(queues), segments=segments, outcomes=outcomes):
            at = _node_at(node, loc)
            got.problems.append(
                Problem(file, at.start_mark.line + 1 if at else line, format_path(loc), message)
            )
