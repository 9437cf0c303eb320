"""The web traffic simulator: wire-valid batches, exact ground truth, mixes, determinism."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from itertools import pairwise

import httpx
import msgspec
import numpy as np
import pytest
from scipy.stats import chi2

from opportune.core.events import BATCH_DECODER, check_event
from opportune.sim import personas as P
from opportune.sim.landing import landing_probs, start_intent_probs
from opportune.sim.live import send_live
from opportune.sim.personas import OUTCOMES, TrafficMix, chain
from opportune.sim.posterior import observable_probabilities
from opportune.sim.web import SimSession, generate, to_batches

START = 1_763_942_400_000  # 2025-11-24T00:00Z
ENC = msgspec.json.Encoder()


@pytest.fixture(scope="module")
def sessions() -> list[SimSession]:
    """Six days of a 4,500-visitor-a-day site: 27,000 sessions, shared by the tests."""
    return list(generate(11, start_ms=START, days=6, visitors_per_day=4500))


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    a = list(generate(3, start_ms=START, days=2, visitors_per_day=150))
    b = list(generate(3, start_ms=START, days=2, visitors_per_day=150))
    c = list(generate(4, start_ms=START, days=2, visitors_per_day=150))
    assert [ENC.encode(x.batches) for x in a] == [ENC.encode(x.batches) for x in b]
    assert all(np.array_equal(x.probabilities, y.probabilities) for x, y in zip(a, b, strict=True))
    assert [x.achieved_at for x in a] == [x.achieved_at for x in b]
    assert [ENC.encode(x.batches) for x in a] != [ENC.encode(x.batches) for x in c]


def test_every_batch_decodes_and_every_event_is_accepted(sessions: list[SimSession]) -> None:
    n = 0
    for sb in to_batches(sessions[:3000]):
        batch = BATCH_DECODER.decode(ENC.encode(sb.batch))
        assert batch == sb.batch
        assert 1 <= len(batch.events) <= 100
        now = sb.received_ms
        for i, e in enumerate(batch.events):
            refusal = check_event(
                e,
                index=i,
                now_ms=now,
                skew_ms=now - batch.sent_at,
                max_age_ms=3_600_000,
                max_future_ms=120_000,
            )
            assert refusal is None, (refusal, e)
            n += 1
    assert n > 20_000


def test_batches_arrive_in_order_and_sessions_do_not_run_together(
    sessions: list[SimSession],
) -> None:
    arrivals = [sb.received_ms for sb in to_batches(sessions[:4000])]
    assert arrivals == sorted(arrivals)
    by_visitor: dict[str, list[SimSession]] = defaultdict(list)
    for s in sessions:
        by_visitor[s.visitor_id].append(s)
        ts = [e.ts for e in s.events]
        assert ts == sorted(ts)
        assert max(np.diff(ts), default=0) < 20 * 60_000  # one server session, not two
    for visits in by_visitor.values():
        assert [s.visit_number for s in visits] == list(range(1, len(visits) + 1))
        for before, after in pairwise(visits):
            assert after.events[0].ts - before.events[-1].ts > 20 * 60_000


def test_returning_visitors_reuse_ids_across_days(sessions: list[SimSession]) -> None:
    days: dict[str, set[int]] = defaultdict(set)
    for s in sessions:
        days[s.visitor_id].add((s.start_ms - START) // 86_400_000)
    multi = sum(len(d) > 1 for d in days.values())
    assert multi > 2000
    back = np.mean([s.visit_number > 1 for s in sessions[4500:]])  # after the first day
    assert 0.2 < back < 0.4
    # A customer on a second device: a new visitor id that identifies with a known email.
    seconds = [s for s in sessions if s.second_device]
    assert len(seconds) > 50
    first_seen = {}
    for s in sessions:
        for e in s.events:
            if e.type == "identify":
                first_seen.setdefault(e.identity.email, s.visitor_id)
    for s in seconds:
        assert s.visit_number == 1
        ident = [e for e in s.events if e.type == "identify"]
        assert ident and ident[0].identity.email == s.email
        assert first_seen[s.email] != s.visitor_id


def _within(counts: Counter[str], total: int, shares: dict[str, float]) -> None:
    for key, share in shares.items():
        se = math.sqrt(share * (1 - share) / total)
        assert abs(counts[key] / total - share) < 4 * se + 1e-9, (key, counts[key] / total, share)


def test_mixes_match_their_configured_shares(sessions: list[SimSession]) -> None:
    mix = TrafficMix()
    new = [s for s in sessions if s.visit_number == 1 and not s.second_device]
    _within(Counter(s.device for s in new), len(new), mix.devices)
    _within(Counter(s.channel for s in new), len(new), mix.channels)
    _within(Counter((s.locale, s.timezone) for s in new), len(new), mix.locales)  # type: ignore[arg-type]
    for channel in ("organic", "cpc", "direct"):
        group = [s for s in new if s.channel == channel]
        _within(Counter(s.persona for s in group), len(group), mix.persona_mix(channel))


def test_campaigns_are_on_the_landing_page(sessions: list[SimSession]) -> None:
    for s in sessions[:3000]:
        first = s.events[0]
        assert first.type == "page_view" and "/demo/" in first.url
        if s.channel == "cpc":
            assert "utm_medium=cpc" in first.url and first.referrer
        elif s.channel == "organic":
            assert first.referrer and "utm_" not in first.url
        elif s.channel == "direct" and not s.second_device:
            assert first.referrer is None and "utm_" not in first.url


def test_struggle_shows_as_form_errors_idle_and_rage(sessions: list[SimSession]) -> None:
    applicants = [s for s in sessions if s.persona == "loan_applicant"]
    with_errors = [s for s in applicants if any(e.type == "form_error" for e in s.events)]
    assert len(with_errors) / len(applicants) > 0.15
    rate = {
        dev: np.mean(
            [
                sum(e.type == "form_error" for e in s.events)
                for s in applicants
                if s.device == dev and any("/apply.html" in (e.url or "") for e in s.events)
            ]
        )
        for dev in ("desktop", "mobile")
    }
    assert rate["mobile"] > 1.3 * rate["desktop"]
    types = Counter(e.type for s in sessions[:5000] for e in s.events)
    assert types["idle"] > 200 and types["form_abandoned"] > 200
    searches = Counter(e.query for s in sessions for e in s.events if e.type == "search")
    assert searches["device activation"] > 100 and searches["travel alert"] > 50


def test_outcomes_are_visible_events_with_values(sessions: list[SimSession]) -> None:
    rates = {o: np.mean([o in s.achieved_at for s in sessions]) for o in OUTCOMES}
    assert 0.03 < rates["loan_submitted"] < 0.08
    assert all(0.005 < r < 0.08 for r in rates.values())
    for s in sessions:
        events = s.events
        for outcome, at in s.achieved_at.items():
            e = events[at]
            assert e.type == "custom" and e.name == outcome
            assert isinstance(e.attributes["value"], int)
            if outcome == "loan_submitted":
                assert any("/demo/confirmation.html" in (x.url or "") for x in events[at:])
        assert (s.probabilities >= 0).all() and (s.probabilities <= 1).all()


def test_the_values_solve_the_chain() -> None:
    """V(s) = sum over actions of p * (1[action achieves k] + V(next)): the Bellman equation."""
    for device in P.DEVICES:
        ch = chain(device)
        for s in range(0, P.N_STATES, 7):
            expect = np.zeros(len(OUTCOMES))
            for a in ch.actions[s]:
                if a.kind == P.EXIT:
                    continue
                expect += a.prob * ch.value[a.next]
                if a.outcome >= 0:
                    expect[a.outcome] += a.prob
            assert np.allclose(ch.value[s], expect, atol=1e-12)
        assert abs(sum(a.prob for a in ch.actions[0]) - 1) < 1e-12


def _calibration_z(p: np.ndarray, y: np.ndarray) -> list[float]:
    """Per probability bucket: (realised - expected) / sd, with independent Bernoulli labels."""
    edges = [0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.35, 0.55, 0.8, 1.0001]
    zs = []
    for lo, hi in pairwise(edges):
        m = (p >= lo) & (p < hi)
        var = float((p[m] * (1 - p[m])).sum())
        if var < 5:  # too few to say anything
            continue
        zs.append((float(y[m].sum()) - float(p[m].sum())) / math.sqrt(var))
    return zs


def test_true_probabilities_are_calibrated(sessions: list[SimSession]) -> None:
    """One prefix per session (so labels are independent), not yet achieved: in every
    probability bucket the realised count is within 4.5 sd of the Poisson-binomial mean; the
    same test refuses probabilities 25% too high, and those of three events earlier.

    The prefix length J is drawn before looking at the session, which is kept only when its
    event J exists and comes before the achievement: a stopping rule. (Drawing J inside the
    realised session would select on the future and bias every bucket.)"""
    rng = np.random.default_rng(5)
    for k, outcome in enumerate(OUTCOMES):
        p, y, lagged = [], [], []
        for s in sessions:
            j = int(rng.integers(8))
            if j >= s.achieved_at.get(outcome, len(s.probabilities)):
                continue
            p.append(s.probabilities[j, k])
            lagged.append(s.probabilities[max(j - 3, 0), k])
            y.append(outcome in s.achieved_at)
        pa, ya = np.array(p), np.array(y)
        assert len(pa) > 18_000
        zs = _calibration_z(pa, ya)
        assert len(zs) >= 4, outcome
        assert max(abs(z) for z in zs) < 4.5, (outcome, zs)
        assert _chi2_p(zs) > 1e-4, (outcome, zs)
        if outcome in ("loan_submitted", "quote_requested"):  # enough achievements to tell
            assert _chi2_p(_calibration_z(np.minimum(pa * 1.25, 1), ya)) < 1e-4
        if outcome == "loan_submitted":
            assert _chi2_p(_calibration_z(np.array(lagged), ya)) < 1e-4


def _chi2_p(zs: list[float]) -> float:
    """P-value of the buckets' squared z-scores together (chi-square, one df per bucket)."""
    return float(chi2.sf(sum(z * z for z in zs), len(zs)))


@pytest.fixture(scope="module")
def observable(sessions: list[SimSession]) -> list[np.ndarray]:
    return observable_probabilities(sessions)


def test_observable_posterior_is_calibrated(
    sessions: list[SimSession], observable: list[np.ndarray]
) -> None:
    """The observer's posterior is the exact P(outcome | what the server saw), so it is
    calibrated as the truth is (the same stopping-rule prefixes), in every bucket, and within
    the groups its parts handle: first events (the landing prior), returning visitors (the
    intent carried from the last visit), events in the loan form (the ambiguous clicks and
    abandons), events that carry evidence of intent (queries, articles, clicks), and visits
    after one left in the loan form (where the carried intent matters most)."""
    rng = np.random.default_rng(6)
    form = ("/demo/apply.html",)
    unfinished: set[tuple[str, int]] = set()  # visits that follow one left in the loan form
    last_in_form: dict[str, bool] = {}
    for s in sessions:
        if s.visit_number > 1 and last_in_form.get(s.visitor_id):
            unfinished.add((s.visitor_id, s.visit_number))
        last_in_form[s.visitor_id] = "loan_submitted" not in s.achieved_at and any(
            e.url and e.url.split("?")[0].endswith(form) for e in s.events
        )
    assert len(unfinished) > 100
    for k, outcome in enumerate(OUTCOMES):
        p, y, groups = [], [], defaultdict(list)
        for s, obs in zip(sessions, observable, strict=True):
            j = int(rng.integers(8))
            if j >= s.achieved_at.get(outcome, len(obs)):
                continue
            ev = s.events[j]
            row = (obs[j, k], outcome in s.achieved_at)
            p.append(row[0])
            y.append(row[1])
            if j == 0:
                groups["first event"].append(row)
            if s.visit_number > 1:
                groups["returning"].append(row)
            if (s.visitor_id, s.visit_number) in unfinished:
                groups["back after an unfinished form"].append(row)
            if ev.url and ev.url.split("?")[0].endswith(form):
                groups["loan form"].append(row)
            if ev.type in ("search", "click") or (ev.url and "article=" in ev.url):
                groups["evidence"].append(row)
        zs = _calibration_z(np.array(p), np.array(y))
        assert max(abs(z) for z in zs) < 4.5, (outcome, zs)
        assert _chi2_p(zs) > 1e-4, (outcome, zs)
        for name, rows in groups.items():
            gp, gy = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
            gz = _calibration_z(gp, gy)
            assert not gz or _chi2_p(gz) > 1e-4, (outcome, name, gz)
            # and in total: the realised count within 4.5 sd of the expected
            sd = math.sqrt(float((gp * (1 - gp)).sum())) or 1.0
            assert abs(float(gy.sum() - gp.sum())) / sd < 4.5, (outcome, name)


def test_observable_posterior_sits_between_the_truth_and_the_base_rate(
    sessions: list[SimSession], observable: list[np.ndarray]
) -> None:
    """Knowing the hidden intent beats seeing the events, which beats knowing nothing: the
    Brier score orders them so for every outcome (every event before the achievement)."""
    for k, outcome in enumerate(OUTCOMES):
        hid, obs, y = [], [], []
        for s, o in zip(sessions, observable, strict=True):
            n = s.achieved_at.get(outcome, len(o))
            hid.append(s.probabilities[:n, k])
            obs.append(o[:n, k])
            y.append(np.arange(n) < s.achieved_at.get(outcome, -1))
        h, b, t = np.concatenate(hid), np.concatenate(obs), np.concatenate(y)
        brier = [float(((x - t) ** 2).mean()) for x in (h, b, np.full_like(b, t.mean()))]
        assert brier[0] < brier[1] < brier[2], (outcome, brier)
        assert ((b >= 0) & (b <= 1 + 1e-9)).all()


def test_landing_and_first_intent_tables_match_the_sampler(sessions: list[SimSession]) -> None:
    """The posterior's priors are the sampler's: per channel and first intent, the landing
    locations; per channel and the intent the visitor last left with, the first intent."""
    mix = TrafficMix()
    landing: dict[tuple[str, int], Counter[int]] = defaultdict(Counter)
    first: dict[tuple[str, int], Counter[int]] = defaultdict(Counter)
    left: dict[str, int] = {}
    for s in sessions:
        intent = P.INTENTS.index(s.persona)
        if not s.second_device:
            landing[s.channel, intent][s.steps[0].loc] += 1
            first[s.channel, left.get(s.visitor_id, -1) if s.visit_number > 1 else -1][intent] += 1
        left[s.visitor_id] = P.state_parts(next(x for x in reversed(s.hidden) if x >= 0))[0]
    tested = 0
    for table, expect in (
        (landing, lambda c, i: landing_probs(c, i)),
        (first, lambda c, last: dict(enumerate(start_intent_probs(mix, c, last)))),
    ):
        for (channel, key), counts in table.items():
            n = sum(counts.values())
            if n < 300:
                continue
            e = expect(channel, key)
            assert set(counts) <= {x for x, q in e.items() if q > 0}, (channel, key, counts)
            cells = [x for x, q in e.items() if q * n >= 5]
            stat = sum((counts[x] - e[x] * n) ** 2 / (e[x] * n) for x in cells)
            assert chi2.sf(stat, max(1, len(cells) - 1)) > 1e-4, (channel, key, counts, e)
            tested += 1
    assert tested >= 20


def test_a_day_has_the_visitors_asked_for() -> None:
    # Its speed (~1 s for these 5,000) is a figure in docs/simulator.md, not a test.
    n = sum(1 for _ in generate(1, start_ms=START, days=1, visitors_per_day=5000))
    assert n == 5000


def test_send_live_posts_current_valid_batches() -> None:
    seen: list[tuple[str, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        batch = BATCH_DECODER.decode(request.content)
        now = int(time.time() * 1000)
        for i, e in enumerate(batch.events):
            assert (
                check_event(
                    e,
                    index=i,
                    now_ms=now,
                    skew_ms=now - batch.sent_at,
                    max_age_ms=3_600_000,
                    max_future_ms=120_000,
                )
                is None
            )
        seen.append((request.headers["user-agent"], len(batch.events)))
        return httpx.Response(200, json={"accepted": len(batch.events)})

    async def run() -> object:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(handler), base_url="http://sim"
        ) as client:
            return await send_live(
                "http://sim", seed=2, rate=40, duration_s=0.3, time_scale=2000, client=client
            )

    stats = asyncio.run(run())
    assert stats.sessions > 3 and stats.batches == len(seen) > stats.sessions  # type: ignore[attr-defined]
    assert stats.statuses == {200: len(seen)}  # type: ignore[attr-defined]
    assert all(ua.startswith("Mozilla/5.0") for ua, _ in seen)
