"""`opportune reports rebuild` on SQLite and PostgreSQL: recounts rows written behind the
server's back, for every site, one site or from a date; bad input is one `error:` line."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import Engine, insert

from opportune.cli import main
from opportune.store import reports as q
from opportune.store.schema import sessions

DAY = 86_400_000
T0 = 1_793_491_200_000  # 2026-11-01 00:00 UTC


def run(db_url: str, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["reports", "rebuild", *args, "--database-url", db_url])
    return r.exit_code, r.stdout, r.stderr


def _visits(engine: Engine, site: str, *days: int) -> None:
    with engine.begin() as conn:
        for i, d in enumerate(days):
            at = T0 + d * DAY + i * 60_000
            conn.execute(
                insert(sessions).values(
                    id=f"{site}-{d}-{i}", site_id=site, visitor_id=f"{site}-v{i}", number=1,
                    started_at=at, last_event_at=at, event_count=1, page_count=2,
                )
            )  # fmt: skip


def _visits_of(engine: Engine, site: str | None) -> int:
    with engine.connect() as conn:
        return q.visit_totals(conn, q.Range(T0, T0 + 10 * DAY, site))["visits"]


def test_rebuild_everything_one_site_and_from_a_date(db_url: str, engine: Engine) -> None:
    _visits(engine, "shop", 0, 1, 2)
    _visits(engine, "blog", 0, 2)
    assert _visits_of(engine, None) == 0  # written behind the server's back: not counted yet
    code, out, err = run(db_url)
    assert (code, err) == (0, "") and out.startswith("recounted 288 quarter hours (3.0 days)")
    assert (_visits_of(engine, "shop"), _visits_of(engine, "blog")) == (3, 2)
    _visits(engine, "shop", 3)
    _visits(engine, "blog", 3)
    assert run(db_url, "--site", "shop", "--since", "2026-11-04")[0] == 0
    assert (_visits_of(engine, "shop"), _visits_of(engine, "blog")) == (4, 2)
    assert run(db_url, "--since", "2026-11-02")[0] == 0
    assert (_visits_of(engine, "shop"), _visits_of(engine, "blog")) == (4, 3)


def test_bad_input_is_one_error_line(db_url: str, engine: Engine) -> None:
    _visits(engine, "shop", 0)
    assert run(db_url, "--since", "2026-13-01") == (
        2,
        "",
        "error: --since must be a date as YYYY-MM-DD (UTC), not '2026-13-01'\n",
    )
    code, _, err = run(db_url, "--since", "2999-01-01")
    assert code == 2 and err == "error: --since 2999-01-01 is in the future: nothing to recount\n"
    code, _, err = run(db_url, "--site", "nope")
    assert code == 2 and err == "error: no site 'nope' in this database (sites with data: shop)\n"
