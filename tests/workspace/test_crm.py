"""The ``kind: crm`` document: the example validates, and each mistake is reported at its
file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.workspace import ConfigError, load_workspace


def test_the_example_crm_points_the_panel_at_the_demos_stand_in() -> None:
    crm = load_workspace(EXAMPLE_WORKSPACE).crms["demo-crm"]
    assert crm.operations == ["lookup", "create", "update"]
    assert crm.lookup is not None and crm.lookup.url.startswith("/demo/crm/leads")
    assert crm.timeout_ms == 3000


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("lookup: {url: 'ftp://crm'}", "lookup.url: String should match pattern"),
        ("lookup: {url: /x, body: {a: 1}}", "lookup: a GET call has no body"),
        ("description: none", "a crm needs at least one of lookup, create, update"),
        ("timeout: 2m\nlookup: {url: /x}", "timeout: at most 30s"),
        ("lookup: {url: /x, method: DELETE}", "lookup.method: Input should be"),
        ("lookup: {url: /x}\nsecret: 1", "secret: unknown field"),
    ],
)
def test_a_bad_crm_document_is_refused_where_it_is_wrong(
    tmp_path: Path, body: str, where: str
) -> None:
    (tmp_path / "crm.yaml").write_text("kind: crm\nname: c\n" + body + "\n")
    with pytest.raises(ConfigError) as caught:
        load_workspace(tmp_path)
    [problem] = caught.value.problems
    assert problem.file == "crm.yaml" and problem.line >= 1
    assert where in str(problem), str(problem)
