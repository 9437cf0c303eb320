"""Workspace validation: every problem found, each with file, line and field path."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from opportune.api.app import EXAMPLE_WORKSPACE
from opportune.cli import main
from opportune.workspace import ConfigError, load_workspace

GOOD = """kind: site
name: shop
key: shop-site-key
origins: [https://shop.example]
"""


def write(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def problems(tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_workspace(tmp_path)
    return [str(p) for p in info.value.problems]


def test_the_example_workspace_is_valid() -> None:
    ws = load_workspace(EXAMPLE_WORKSPACE)
    assert ws.sites["demo"].allows_origin("http://127.0.0.1:8000")
    assert not ws.sites["demo"].allows_origin("https://evil.example")


def test_every_problem_is_reported_with_line_and_field(tmp_path: Path) -> None:
    write(
        tmp_path,
        **{
            "a.yaml": """kind: site
name: Bad Name
key: short
origins:
  - https://ok.example
  - ftp://nope
colour: red
sessionTimeoutMinutes: 0
---
kind: segmnt
name: x
""",
            "b.yml": GOOD + "sessionTimeoutMinutes: soon\n",
        },
    )
    got = problems(tmp_path)
    assert got == [
        "a.yaml:2: name: String should match pattern '^[a-z0-9][a-z0-9_-]{0,63}$'",
        "a.yaml:3: key: String should have at least 8 characters",
        "a.yaml:5: origins: 'ftp://nope' is not an origin like https://www.example.com",
        "a.yaml:8: sessionTimeoutMinutes: Input should be greater than or equal to 1",
        "a.yaml:7: colour: unknown field",
        "a.yaml:10: kind: unknown kind 'segmnt'; one of actionMap, agent, botFlow, "
        "contentTemplate, crm, engagement, kpi, outcome, pageGroup, queue, segment, site",
        "b.yml:5: sessionTimeoutMinutes: Input should be a valid integer, "
        "unable to parse string as an integer",
    ]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, **{"a.yaml": "kind: site\nname: [unclosed\n"})
    (msg,) = problems(tmp_path)
    assert msg.startswith("a.yaml:") and "not valid YAML" in msg


def test_duplicate_names_and_keys_are_refused(tmp_path: Path) -> None:
    write(
        tmp_path,
        **{"a.yaml": GOOD, "b.yaml": GOOD, "c.yaml": GOOD.replace("name: shop", "name: other")},
    )
    assert problems(tmp_path) == [
        "b.yaml:1: name: site 'shop' defined twice",
        "c.yaml:1: key: site key 'shop-site-key' already used by site 'shop'",
    ]


def test_missing_field_points_at_the_document(tmp_path: Path) -> None:
    write(tmp_path, **{"a.yaml": "# a comment\nkind: site\nname: shop\n"})
    assert problems(tmp_path) == [
        "a.yaml:2: key: Field required",
        "a.yaml:2: origins: Field required",
    ]


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["config", "validate", str(EXAMPLE_WORKSPACE)])
    assert ok.exit_code == 0 and "ok: 1 site(s)" in ok.output
    write(tmp_path, **{"a.yaml": "kind: site\nname: shop\n"})
    bad = runner.invoke(main, ["config", "validate", str(tmp_path)])
    assert bad.exit_code == 1
    assert "a.yaml:1: key: Field required" in bad.output
    assert "2 problem(s)" in bad.output


def test_a_queue_must_give_its_kpis_success_codes(tmp_path: Path) -> None:
    write(
        tmp_path,
        **{
            "routing.yaml": "kind: kpi\nname: won\ntype: sales_conversion\nsuccessCodes: [sold]\n"
            "---\nkind: queue\nname: sales\nwrapUpCodes: [lost]\nkpi: won\n"
        },
    )
    assert problems(tmp_path) == [
        "routing.yaml:6: kpi: success code(s) ['sold'] of kpi 'won' are not wrap-up codes of "
        "queue 'sales'"
    ]


def test_unknown_kpis_and_queues_are_named_where_they_are_used(tmp_path: Path) -> None:
    write(
        tmp_path,
        **{
            "routing.yaml": "kind: queue\nname: sales\nkpi: nope\n"
            "---\nkind: agent\nname: ana\nqueues: [sales, gone]\n"
        },
    )
    assert problems(tmp_path) == [
        "routing.yaml:1: kpi: unknown kpi 'nope'",
        "routing.yaml:5: queues: unknown queue 'gone'",
    ]
