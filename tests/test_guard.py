"""The guard's windows and trip rules, driven by a fake clock."""
from __future__ import annotations

import math
import random
import tracemalloc
from dataclasses import dataclass

import pytest

from routing.config import Guard
from routing.guard import EMPTY_RESULTS, ERROR_RATE, LATENCY, NO_DATA, OK, OVERLAP, VIOLATED, RouteGuard
from routing.table import BLUE, GREEN


@dataclass(frozen=True)
class Traffic:
    """Requests per second spread evenly, with exact shares of failures and empty search results."""

    per_second: float
    latency: float = 0.010
    error_rate: float = 0.0
    empty_rate: float = 0.0


QUIET = Traffic(0)


def settings(**fields) -> Guard:
    base = dict(interval=10, window=10, min_requests=100, error_for=120, latency_for=300, empty_for=120)
    return Guard.model_validate({**base, **fields})


def every(share: float, i: int) -> bool:
    """True for exactly `share` of consecutive i, evenly spread."""
    return int((i + 1) * share) > int(i * share)


def feed(guard: RouteGuard, colour: str, traffic: Traffic, start: float, end: float) -> None:
    count = round((end - start) * traffic.per_second)
    for i in range(count):
        failed = every(traffic.error_rate, i)
        empty = None if failed else every(traffic.empty_rate, i)
        guard.record(colour, traffic.latency, failed, empty, start + i / traffic.per_second)


def run(guard: RouteGuard, start: float, end: float, green: Traffic, blue: Traffic = QUIET) -> list:
    """Traffic over (start, end], judged at every interval; the judgements."""
    judgements, step = [], guard.settings.interval
    now = start
    while now < end:
        feed(guard, GREEN, green, now, now + step)
        feed(guard, BLUE, blue, now, now + step)
        now += step
        judgements.append(guard.judge(now))
    return judgements


def first_trip(judgements):
    return next((j.trip for j in judgements if j.trip), None)


# ---------------------------------------------------------------- error rate


def test_error_rate_trips_after_error_for():
    guard = RouteGuard(settings())
    judgements = run(guard, 0, 300, green=Traffic(20, error_rate=0.10), blue=Traffic(20))
    assert judgements[0].verdicts[ERROR_RATE] == VIOLATED
    assert judgements[0].violated_since == {ERROR_RATE: 10}
    trip = first_trip(judgements)
    # Violated at every judgement from t=10: the first judgement with since <= now - 120 is t=130.
    assert (trip.reason, trip.at) == (ERROR_RATE, 130)
    assert trip.figures["green_error_rate"] == pytest.approx(0.10, abs=0.01)
    assert trip.figures["blue_error_rate"] == 0
    assert trip.figures["green_requests"] >= 190
    assert trip.detail == "green error rate 10.0% > 5.0% for 120s"
    assert not judgements[11].healthy and judgements[11].trip is None


def test_error_rate_under_the_limit_never_trips():
    judgements = run(RouteGuard(settings()), 0, 600, green=Traffic(20, error_rate=0.04), blue=Traffic(20))
    assert first_trip(judgements) is None
    assert all(j.healthy and j.verdicts[ERROR_RATE] == OK for j in judgements)


def test_a_healthy_judgement_restarts_the_clock():
    guard = RouteGuard(settings())
    run(guard, 0, 100, green=Traffic(20, error_rate=0.10))  # violated at 10..100
    run(guard, 100, 110, green=Traffic(20))  # one clean judgement at 110
    judgements = run(guard, 110, 400, green=Traffic(20, error_rate=0.10))
    assert first_trip(judgements).at == 120 + 120


def test_a_repeated_trip_needs_another_full_period():
    judgements = run(RouteGuard(settings()), 0, 400, green=Traffic(20, error_rate=0.5))
    assert [j.at for j in judgements if j.trip] == [130, 250, 370]


# ---------------------------------------------------------------- minimum evidence


def test_too_few_green_requests_is_no_verdict():
    judgements = run(RouteGuard(settings()), 0, 600, green=Traffic(5, error_rate=1.0), blue=Traffic(50))
    assert first_trip(judgements) is None
    for judgement in judgements:
        assert not judgement.enough_data and not judgement.healthy
        assert set(judgement.verdicts.values()) == {NO_DATA}
        assert judgement.violated_since == {}
    assert judgements[-1].figures["green_error_rate"] == 1.0  # still measured, for display


def test_not_enough_data_restarts_the_clock():
    guard = RouteGuard(settings())
    run(guard, 0, 50, green=Traffic(20, error_rate=0.10))  # violated at 10..50
    thin = run(guard, 50, 60, green=Traffic(2, error_rate=0.10))
    assert not thin[0].enough_data and thin[0].trip is None
    judgements = run(guard, 60, 400, green=Traffic(20, error_rate=0.10))
    assert first_trip(judgements).at == 70 + 120


def test_the_window_forgets_old_traffic():
    guard = RouteGuard(settings(window=60))
    run(guard, 0, 60, green=Traffic(20, error_rate=0.5), blue=Traffic(20))
    assert guard.judge(59.9).figures["green_requests"] == 1200
    # The span is the window minus at most one slot (60 s / 20 slots): at t=60 the slot [0, 3) has gone.
    assert guard.judge(60).figures["green_requests"] == 1140
    later = guard.judge(125)
    assert later.figures["green_requests"] == later.figures["blue_requests"] == 0
    assert not later.enough_data


# ---------------------------------------------------------------- latency


def test_latency_ratio_trips_after_latency_for():
    guard = RouteGuard(settings())
    judgements = run(guard, 0, 600, green=Traffic(20, latency=0.030), blue=Traffic(20, latency=0.010))
    assert judgements[0].verdicts[LATENCY] == VIOLATED
    assert judgements[0].verdicts[ERROR_RATE] == OK
    trip = first_trip(judgements)
    assert (trip.reason, trip.at) == (LATENCY, 310)
    assert trip.figures["latency_ratio"] == pytest.approx(3.0, rel=0.03)
    assert trip.figures["green_latency_s"] == pytest.approx(0.030, rel=0.015)
    assert trip.figures["blue_latency_reference_s"] == pytest.approx(0.010, rel=0.015)
    assert trip.detail.startswith("green p95 30.")
    assert trip.detail.endswith("> 2 x for 300s")


def test_latency_within_the_ratio_never_trips():
    judgements = run(RouteGuard(settings()), 0, 600, green=Traffic(20, latency=0.019), blue=Traffic(20, latency=0.010))
    assert first_trip(judgements) is None
    assert all(j.verdicts[LATENCY] == OK for j in judgements)


def test_latency_counts_answered_requests_only():
    """Failures (fast 5xx or a long timeout) are the error rule's; they don't move the quantile."""
    guard = RouteGuard(settings(min_requests=10))
    for i in range(100):
        guard.record(GREEN, 0.010, False, None, i * 0.05)
        guard.record(GREEN, 30.0, True, None, i * 0.05)
        guard.record(BLUE, 0.010, False, None, i * 0.05)
    figures = guard.judge(5).figures
    assert figures["green_requests"] == 200
    assert figures["green_latency_s"] == pytest.approx(0.010, rel=0.015)
    assert figures["green_error_rate"] == 0.5


@pytest.mark.parametrize("scale", [200e-6, 0.005, 0.080, 2.5])
@pytest.mark.parametrize("quantile", [0.5, 0.95, 0.99])
def test_histogram_quantile_is_accurate(scale, quantile):
    rng = random.Random(7)
    latencies = [scale * rng.lognormvariate(0, 0.6) for _ in range(20_000)]
    guard = RouteGuard(settings(min_requests=1, latency_quantile=quantile))
    for i, latency in enumerate(latencies):
        guard.record(GREEN, latency, False, None, i * 0.0004)
    exact = sorted(latencies)[math.ceil(quantile * len(latencies)) - 1]
    assert guard.judge(8).figures["green_latency_s"] == pytest.approx(exact, rel=0.02)


# ---------------------------------------------------------------- empty results


def test_empty_result_excess_trips_after_empty_for():
    guard = RouteGuard(settings())
    judgements = run(guard, 0, 300, green=Traffic(20, empty_rate=0.20), blue=Traffic(20, empty_rate=0.05))
    trip = first_trip(judgements)
    assert (trip.reason, trip.at) == (EMPTY_RESULTS, 130)
    assert trip.figures["green_empty_share"] == pytest.approx(0.20, abs=0.01)
    assert trip.figures["blue_empty_reference"] == pytest.approx(0.05, abs=0.01)
    assert trip.figures["empty_excess"] == pytest.approx(0.15, abs=0.02)
    assert trip.detail.startswith("green empty results 20.0% vs blue's 5.")
    assert trip.detail.endswith("> 5.0% for 120s")


def test_empty_results_blue_shares_too_never_trips():
    judgements = run(RouteGuard(settings()), 0, 300, green=Traffic(20, empty_rate=0.30), blue=Traffic(20, empty_rate=0.27))
    assert first_trip(judgements) is None
    assert all(j.verdicts[EMPTY_RESULTS] == OK for j in judgements)


def test_reads_that_are_not_searches_do_not_count_for_the_empty_rule():
    guard = RouteGuard(settings())
    for i in range(500):
        guard.record(GREEN, 0.01, False, None, i * 0.02)  # scroll, count, ...
        guard.record(BLUE, 0.01, False, False, i * 0.02)
    judgement = guard.judge(10)
    assert judgement.enough_data and judgement.figures["green_searches"] == 0
    assert judgement.verdicts[EMPTY_RESULTS] == NO_DATA
    assert judgement.healthy


# ---------------------------------------------------------------- 100 % green: blue's last figures


def test_at_full_green_rules_compare_with_blues_last_good_window():
    guard = RouteGuard(settings())
    before = run(guard, 0, 100, green=Traffic(20, latency=0.010), blue=Traffic(20, latency=0.010, empty_rate=0.05))
    assert first_trip(before) is None
    # Green takes all traffic, then slows down and empties out: blue's figures from t=100 still count.
    judgements = run(guard, 100, 500, green=Traffic(40, latency=0.030, empty_rate=0.30))
    assert judgements[-1].figures["blue_requests"] == 0
    assert judgements[-1].figures["blue_latency_reference_at"] == 100
    assert judgements[-1].figures["blue_empty_reference"] == pytest.approx(0.05, abs=0.01)
    first_trips = {}
    for judgement in judgements:
        if judgement.trip:
            first_trips.setdefault(judgement.trip.reason, judgement.at)
    assert first_trips == {EMPTY_RESULTS: 230, LATENCY: 410}


def test_a_thin_blue_window_does_not_replace_the_reference():
    guard = RouteGuard(settings())
    run(guard, 0, 50, green=Traffic(20), blue=Traffic(20, latency=0.010))
    run(guard, 50, 60, green=Traffic(20), blue=Traffic(1, latency=0.500))
    figures = guard.judge(60).figures
    assert figures["blue_latency_s"] == pytest.approx(0.5, rel=0.02)  # what the window holds ...
    assert figures["blue_latency_reference_s"] == pytest.approx(0.010, rel=0.02)  # ... and what is compared
    assert figures["blue_latency_reference_at"] == 50


def test_without_any_blue_reference_the_comparisons_have_no_data():
    judgements = run(RouteGuard(settings()), 0, 600, green=Traffic(40, latency=5.0, empty_rate=1.0))
    assert first_trip(judgements) is None
    assert all(j.verdicts[LATENCY] == j.verdicts[EMPTY_RESULTS] == NO_DATA for j in judgements)
    assert all(j.healthy for j in judgements)  # the error rule is judged, and holds


# ---------------------------------------------------------------- shadow pairs: overlap and paired emptiness


def feed_pairs(guard: RouteGuard, start: float, end: float, per_second: float, overlap: float = 1.0,
               green_only_empty_tenths: int = 0, both_empty_tenths: int = 0, sub_requests: int = 1) -> None:
    """Shadow comparisons; of every ten, the first are empty on both colours, the next on green only."""
    count = round((end - start) * per_second)
    for i in range(count):
        both_empty = i % 10 < both_empty_tenths
        green_empty = i % 10 < both_empty_tenths + green_only_empty_tenths
        overlaps = [] if both_empty else [0.0 if green_empty else overlap] * sub_requests
        guard.record_pair(overlaps, green_empty, both_empty, start + i / per_second)


def run_shadowed(guard: RouteGuard, start: float, end: float, green: Traffic, pairs_per_second: float, **pair_shape) -> list:
    judgements, step, now = [], guard.settings.interval, start
    while now < end:
        feed(guard, GREEN, green, now, now + step)
        feed_pairs(guard, now, now + step, pairs_per_second, **pair_shape)
        now += step
        judgements.append(guard.judge(now))
    return judgements


def test_mean_overlap_below_min_overlap_trips_after_overlap_for():
    guard = RouteGuard(settings(min_overlap=0.9, overlap_for=60), shadowed=True)
    judgements = run_shadowed(guard, 0, 200, green=Traffic(20), pairs_per_second=20, overlap=0.7)
    assert judgements[0].verdicts[OVERLAP] == VIOLATED
    trip = first_trip(judgements)
    assert (trip.reason, trip.at) == (OVERLAP, 70)
    assert trip.figures["mean_overlap"] == pytest.approx(0.7)
    assert trip.figures["comparisons"] == 190 and trip.figures["min_overlap"] == 0.9  # the window less a slot
    assert trip.detail == "mean overlap@k 0.700 over 190 shadow comparisons < 0.9 for 60s"


def test_overlap_is_the_mean_over_sub_requests_and_needs_min_requests_comparisons():
    guard = RouteGuard(settings(min_overlap=0.9), shadowed=True)
    feed(guard, GREEN, Traffic(20), 0, 10)
    feed_pairs(guard, 0, 10, 5, overlap=0.5, sub_requests=3)  # 50 batches of 3: 150 comparisons
    judgement = guard.judge(9.99)
    assert judgement.figures["comparisons"] == 150 and judgement.figures["mean_overlap"] == 0.5
    assert judgement.verdicts[OVERLAP] == VIOLATED
    thin = RouteGuard(settings(min_overlap=0.9), shadowed=True)
    feed(thin, GREEN, Traffic(20), 0, 10)
    feed_pairs(thin, 0, 10, 9, overlap=0.0)  # 90 comparisons < min_requests
    assert thin.judge(9.99).verdicts[OVERLAP] == NO_DATA


def test_overlap_at_or_above_min_overlap_never_trips():
    guard = RouteGuard(settings(min_overlap=0.9), shadowed=True)
    judgements = run_shadowed(guard, 0, 300, green=Traffic(20), pairs_per_second=20, overlap=0.9)
    assert first_trip(judgements) is None and all(j.verdicts[OVERLAP] == OK for j in judgements)


def test_without_min_overlap_or_shadowing_there_is_no_overlap_rule():
    for guard in (RouteGuard(settings(), shadowed=True), RouteGuard(settings(min_overlap=0.9))):
        judgements = run_shadowed(guard, 0, 300, green=Traffic(20), pairs_per_second=20, overlap=0.0)
        assert first_trip(judgements) is None and OVERLAP not in judgements[-1].verdicts


def test_shadowed_empty_rule_ignores_searches_empty_on_both_colours():
    # Green's own reads are all empty (a client sending searches that match nothing, keyed to green);
    # the shadow pairs show blue empty on the same searches: no evidence against green.
    guard = RouteGuard(settings(), shadowed=True)
    judgements = run_shadowed(guard, 0, 300, green=Traffic(20, empty_rate=1.0), pairs_per_second=20, both_empty_tenths=6)
    assert first_trip(judgements) is None
    figures = judgements[-1].figures
    assert figures["empty_judged_on"] == "shadow_pairs" and figures["empty_excess"] == 0
    assert figures["green_empty_share"] == figures["blue_empty_share"] == pytest.approx(0.6)
    # Unshadowed, the same green traffic against a blue that answers trips the rule.
    unpaired = run(RouteGuard(settings()), 0, 300, green=Traffic(20, empty_rate=1.0), blue=Traffic(20))
    assert first_trip(unpaired).reason == EMPTY_RESULTS


def test_shadowed_empty_rule_trips_when_green_alone_comes_back_empty():
    guard = RouteGuard(settings(), shadowed=True)
    judgements = run_shadowed(guard, 0, 300, green=Traffic(20), pairs_per_second=20, green_only_empty_tenths=2, both_empty_tenths=3)
    trip = first_trip(judgements)
    assert (trip.reason, trip.at) == (EMPTY_RESULTS, 130)
    assert trip.figures["empty_excess"] == pytest.approx(0.2, abs=0.01)
    assert trip.detail.startswith("green empty results 50.0% vs blue's 30.0% on the same 190 searches: excess 20.0%")


# ---------------------------------------------------------------- cost


def test_memory_does_not_grow_with_traffic():
    guard = RouteGuard(settings(window=60))
    run(guard, 0, 120, green=Traffic(50), blue=Traffic(50))  # every slot used once
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        rng = random.Random(1)
        for i in range(100_000):
            guard.record(GREEN if i % 2 else BLUE, rng.uniform(0.0001, 3.0), i % 7 == 0, bool(i % 3), 120 + i * 0.01)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename") if "guard.py" in str(stat.traceback))
    assert grown < 4096
    assert guard.judge(1120).figures["green_requests"] == pytest.approx(3000, abs=200)
