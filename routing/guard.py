"""The rollout guard: sliding windows of read outcomes and shadow comparisons, and the rules that
trip a rollback.

Pure: every call takes the time as `now` (seconds; use one clock, e.g. time.time(), for the guard
and the rollout state machine). The I/O side calls `record` for every routed read exchange (a
failover's green failure and its blue retry are two exchanges), `record_pair` for every shadow
comparison (the same search answered by both colours), and `judge(now)` every
`settings.interval`, and hands the judgement to the route's rollout state machine.

Memory is fixed per route whatever the traffic: each colour's window, and the window of shadow
pairs, is a ring of `SLOTS_PER_WINDOW` time slots of counters (the colours' also with a latency
histogram of `HISTOGRAM_BUCKETS` log-spaced buckets); a slot is zeroed in place when the ring
comes round to it.

Rules, judged on the window ending at `now` (its span is `window` minus at most one slot):
- not enough data: fewer than `min_requests` green requests; no rule is judged, none trips, and
  every rule's clock starts again;
- `error_rate`: green failures (5xx or no response) / green requests > `max_error_rate`;
- `latency`: green's `latency_quantile` of answered requests > `max_latency_ratio` x blue's;
- `empty_results`: green's share of search-type reads with no points minus blue's > `max_empty_excess`;
  on a shadowed route both shares are taken over the shadow pairs (the same searches on both
  colours), so a search that matches nothing on both is no evidence against green;
- `overlap` (with `min_overlap` set, on a shadowed route): the mean overlap@k of the window's
  comparisons < `min_overlap`.
Each rule also needs `min_requests` of its own evidence (latency: answered green requests; empty:
green search-type reads, or shadow pairs; overlap: comparisons), else it has no data (and its clock
starts again). Blue's figure is blue's in the same window when that window holds `min_requests` of
blue evidence for the rule, else blue's from the last window that did (at 100 % green there is no
blue traffic); with neither, the rule has no data.

A rule trips at the first judgement where it has been violated at every judgement since a time
<= now - its duration (`*_for`). Its clock then starts again at the trip, so a violation that goes
on (with `action: alert`) is reported again every `*_for`, not at every judgement.

Each rule is one small class below (`Rule`: name, measure, limit, duration, description); a new rule
is a new class listed in `RULES` (its settings go in `routing.config.Guard`).
"""
from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from itertools import accumulate
from dataclasses import dataclass
from typing import ClassVar

from routing.config import Guard
from routing.table import GREEN

ERROR_RATE, LATENCY, EMPTY_RESULTS, OVERLAP = "error_rate", "latency", "empty_results", "overlap"
OK, VIOLATED, NO_DATA = "ok", "violated", "no_data"

# Latency buckets grow 3 % from 50 us to 120 s, plus one below and one above; a quantile is
# reported as its bucket's geometric middle, within 1.5 % of the true value.
_LOWEST = 50e-6
_HIGHEST = 120.0
_GROWTH = 1.03
_INV_LOG_GROWTH = 1 / math.log(_GROWTH)
_SPAN = math.ceil(math.log(_HIGHEST / _LOWEST) * _INV_LOG_GROWTH)
HISTOGRAM_BUCKETS = _SPAN + 2
SLOTS_PER_WINDOW = 20
_ZERO_HISTOGRAM = array("q", [0]) * HISTOGRAM_BUCKETS


def latency_bucket(seconds: float) -> int:
    if seconds < _LOWEST:
        return 0
    return min(1 + int(math.log(seconds / _LOWEST) * _INV_LOG_GROWTH), _SPAN + 1)


def bucket_value(index: int) -> float:
    """The latency a bucket stands for: its geometric middle (its edge for the two open ends)."""
    if index == 0:
        return _LOWEST
    if index > _SPAN:
        return _LOWEST * _GROWTH**_SPAN
    return _LOWEST * _GROWTH ** (index - 0.5)


@dataclass(frozen=True, slots=True)
class Trip:
    reason: str  # error_rate | latency | empty_results | overlap
    at: float
    detail: str  # one line for logs and status, e.g. "green error rate 12.0% > 5.0% for 120s"
    figures: dict


@dataclass(frozen=True, slots=True)
class Judgement:
    at: float
    enough_data: bool  # at least min_requests green requests in the window
    verdicts: dict[str, str]  # rule -> ok | violated | no_data
    violated_since: dict[str, float]  # the rules violated now -> first judgement of the streak
    trip: Trip | None
    figures: dict  # JSON-able measurements, see RouteGuard.judge

    @property
    def healthy(self) -> bool:
        """Enough data and no rule violated: the evidence a staged rollout's hold needs."""
        return self.enough_data and VIOLATED not in self.verdicts.values()


# ---------------------------------------------------------------- windows


class _Ring:
    """A ring of time slots, each with the counters named in COUNTERS; slot i counts epoch (slot-sized
    time step) `epochs[i]`."""

    COUNTERS: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.epochs: list[float] = [-math.inf] * SLOTS_PER_WINDOW
        for name in self.COUNTERS:
            setattr(self, name, [0] * SLOTS_PER_WINDOW)

    def slot(self, epoch: int) -> int:
        """The slot counting `epoch`, zeroed first when it still counts an older one."""
        slot = epoch % SLOTS_PER_WINDOW
        if self.epochs[slot] != epoch:
            self.reuse(slot, epoch)
        return slot

    def reuse(self, slot: int, epoch: int) -> None:
        self.epochs[slot] = epoch
        for name in self.COUNTERS:
            getattr(self, name)[slot] = 0

    def live(self, epoch: int) -> list[int]:
        return [slot for slot in range(SLOTS_PER_WINDOW) if epoch - SLOTS_PER_WINDOW < self.epochs[slot] <= epoch]

    def sums(self, live: list[int]) -> dict[str, int | float]:
        return {name: sum(getattr(self, name)[slot] for slot in live) for name in self.COUNTERS}


@dataclass(frozen=True, slots=True)
class _Totals:
    requests: int
    failures: int
    searches: int
    empties: int
    histogram: list[int]

    @property
    def answered(self) -> int:
        return self.requests - self.failures

    def quantile(self, q: float) -> float | None:
        if not self.answered:
            return None
        rank = max(1, math.ceil(q * self.answered))
        return bucket_value(bisect_left(list(accumulate(self.histogram)), rank))


class _Window(_Ring):
    """One colour's read outcomes."""

    # searches: search-type reads answered and judged for emptiness
    COUNTERS = ("requests", "failures", "searches", "empties")

    def __init__(self) -> None:
        super().__init__()
        self.histograms = [array("q", _ZERO_HISTOGRAM) for _ in range(SLOTS_PER_WINDOW)]

    def reuse(self, slot: int, epoch: int) -> None:
        super().reuse(slot, epoch)
        self.histograms[slot][:] = _ZERO_HISTOGRAM

    def totals(self, epoch: int) -> _Totals:
        live = self.live(epoch)
        return _Totals(
            **self.sums(live), histogram=[sum(column) for column in zip(*(self.histograms[slot] for slot in live))]
        )


@dataclass(frozen=True, slots=True)
class _PairTotals:
    comparisons: int  # scored sub-requests (overlap@k)
    overlap_sum: float
    pairs: int  # requests whose emptiness was judged on both colours
    green_empties: int
    blue_empties: int


class _PairWindow(_Ring):
    """Shadow comparisons: the same search answered by both colours."""

    COUNTERS = ("comparisons", "overlap_sum", "pairs", "green_empties", "blue_empties")

    def totals(self, epoch: int) -> _PairTotals:
        return _PairTotals(**self.sums(self.live(epoch)))


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one judgement sees: the window's totals for each colour and for the shadow pairs."""

    now: float
    green: _Totals
    blue: _Totals
    pairs: _PairTotals


@dataclass(frozen=True, slots=True)
class Measurement:
    value: float | None  # what is compared with the limit; None: cannot be measured
    enough: bool  # the rule's own evidence reaches min_requests
    figures: dict  # JSON-able, merged into the judgement's figures


# ---------------------------------------------------------------- rules


class Rule:
    """One trip rule: `measure` reads the evidence, the value is compared with `limit` (violated
    above it, or below it for a floor), and a violation lasting `duration` trips with `describe`."""

    name: ClassVar[str]
    floor: ClassVar[bool] = False  # violated below the limit rather than above it

    def __init__(self, settings: Guard):
        self.settings = settings

    @classmethod
    def for_route(cls, settings: Guard, shadowed: bool) -> "Rule | None":
        """The rule as a route with these settings judges it; None when it does not apply."""
        return cls(settings)

    @property
    def limit(self) -> float:
        raise NotImplementedError

    @property
    def duration(self) -> float:
        raise NotImplementedError

    def measure(self, evidence: Evidence) -> Measurement:
        raise NotImplementedError

    def describe(self, figures: dict) -> str:
        """The measurement behind a trip, in one line (the guard appends how long it lasted)."""
        raise NotImplementedError

    def violated(self, value: float) -> bool:
        return value < self.limit if self.floor else value > self.limit


class ErrorRate(Rule):
    name = ERROR_RATE

    @property
    def limit(self) -> float:
        return self.settings.max_error_rate

    @property
    def duration(self) -> float:
        return self.settings.error_for

    def measure(self, evidence: Evidence) -> Measurement:
        green, blue = evidence.green, evidence.blue
        rate = green.failures / green.requests if green.requests else None
        return Measurement(rate, True, {
            "green_error_rate": _round(rate),
            "blue_error_rate": _round(blue.failures / blue.requests if blue.requests else None),
        })

    def describe(self, figures: dict) -> str:
        return f"green error rate {figures['green_error_rate']:.1%} > {self.limit:.1%}"


class Latency(Rule):
    name = LATENCY

    def __init__(self, settings: Guard):
        super().__init__(settings)
        self._blue_reference: tuple[float, float] | None = None  # (value, judged at)

    @property
    def limit(self) -> float:
        return self.settings.max_latency_ratio

    @property
    def duration(self) -> float:
        return self.settings.latency_for

    def measure(self, evidence: Evidence) -> Measurement:
        settings, green, blue = self.settings, evidence.green, evidence.blue
        quantile = settings.latency_quantile
        green_latency, blue_latency = green.quantile(quantile), blue.quantile(quantile)
        if blue.answered >= settings.min_requests:
            self._blue_reference = (blue_latency, evidence.now)
        reference = self._blue_reference
        ratio = green_latency / reference[0] if green_latency is not None and reference else None
        return Measurement(ratio, green.answered >= settings.min_requests, {
            "latency_quantile": quantile,
            "green_latency_s": _round(green_latency),
            "blue_latency_s": _round(blue_latency),
            "blue_latency_reference_s": _round(reference and reference[0]),
            "blue_latency_reference_at": reference and reference[1],
            "latency_ratio": _round(ratio),
        })

    def describe(self, figures: dict) -> str:
        name = f"p{self.settings.latency_quantile * 100:g}"
        return (
            f"green {name} {figures['green_latency_s'] * 1000:.1f} ms = {figures['latency_ratio']:.2f} x "
            f"blue's {figures['blue_latency_reference_s'] * 1000:.1f} ms > {self.limit:g} x"
        )


class EmptyResults(Rule):
    """Green's empty-result share of search-type reads minus blue's (each colour's own traffic)."""

    name = EMPTY_RESULTS

    @classmethod
    def for_route(cls, settings: Guard, shadowed: bool) -> Rule:
        return PairedEmptyResults(settings) if shadowed else cls(settings)

    def __init__(self, settings: Guard):
        super().__init__(settings)
        self._blue_reference: tuple[float, float] | None = None  # (share, judged at)

    @property
    def limit(self) -> float:
        return self.settings.max_empty_excess

    @property
    def duration(self) -> float:
        return self.settings.empty_for

    def measure(self, evidence: Evidence) -> Measurement:
        settings, green, blue = self.settings, evidence.green, evidence.blue
        green_share = green.empties / green.searches if green.searches else None
        blue_share = blue.empties / blue.searches if blue.searches else None
        if blue.searches >= settings.min_requests:
            self._blue_reference = (blue_share, evidence.now)
        reference = self._blue_reference
        excess = green_share - reference[0] if green_share is not None and reference else None
        return Measurement(excess, green.searches >= settings.min_requests, {
            "green_searches": green.searches,
            "blue_searches": blue.searches,
            "green_empty_share": _round(green_share),
            "blue_empty_share": _round(blue_share),
            "blue_empty_reference": _round(reference and reference[0]),
            "blue_empty_reference_at": reference and reference[1],
            "empty_excess": _round(excess),
        })

    def describe(self, figures: dict) -> str:
        return (
            f"green empty results {figures['green_empty_share']:.1%} vs blue's "
            f"{figures['blue_empty_reference']:.1%}: excess {figures['empty_excess']:.1%} > {self.limit:.1%}"
        )


class PairedEmptyResults(EmptyResults):
    """On a shadowed route: both shares over the shadow pairs, the same searches answered by both
    colours. A search empty on both counts in both shares and cancels out, so a client that sends
    searches matching nothing moves no figure; only green coming back empty where blue did not does."""

    def measure(self, evidence: Evidence) -> Measurement:
        pairs = evidence.pairs
        green_share = pairs.green_empties / pairs.pairs if pairs.pairs else None
        blue_share = pairs.blue_empties / pairs.pairs if pairs.pairs else None
        excess = green_share - blue_share if pairs.pairs else None
        return Measurement(excess, pairs.pairs >= self.settings.min_requests, {
            "empty_judged_on": "shadow_pairs",
            "green_searches": evidence.green.searches,
            "blue_searches": evidence.blue.searches,
            "empty_pairs": pairs.pairs,
            "green_empty_share": _round(green_share),
            "blue_empty_share": _round(blue_share),
            "empty_excess": _round(excess),
        })

    def describe(self, figures: dict) -> str:
        return (
            f"green empty results {figures['green_empty_share']:.1%} vs blue's {figures['blue_empty_share']:.1%} "
            f"on the same {figures['empty_pairs']} searches: excess {figures['empty_excess']:.1%} > {self.limit:.1%}"
        )


class Overlap(Rule):
    """The mean overlap@k of the shadow comparisons: how many of blue's top k green also returns."""

    name = OVERLAP
    floor = True

    @classmethod
    def for_route(cls, settings: Guard, shadowed: bool) -> Rule | None:
        return cls(settings) if shadowed and settings.min_overlap is not None else None

    @property
    def limit(self) -> float:
        return self.settings.min_overlap

    @property
    def duration(self) -> float:
        return self.settings.overlap_for

    def measure(self, evidence: Evidence) -> Measurement:
        pairs = evidence.pairs
        mean = pairs.overlap_sum / pairs.comparisons if pairs.comparisons else None
        return Measurement(mean, pairs.comparisons >= self.settings.min_requests, {
            "comparisons": pairs.comparisons,
            "mean_overlap": _round(mean),
            "min_overlap": self.limit,
        })

    def describe(self, figures: dict) -> str:
        return (
            f"mean overlap@k {figures['mean_overlap']:.3f} over {figures['comparisons']} shadow comparisons "
            f"< {self.limit:g}"
        )


# Every rule, in the order a simultaneous trip is reported in.
RULES: tuple[type[Rule], ...] = (ErrorRate, Latency, EmptyResults, Overlap)


# ---------------------------------------------------------------- the guard


class RouteGuard:
    def __init__(self, settings: Guard, shadowed: bool = False):
        """shadowed: the route sends a sample of its reads to both colours (`record_pair` is fed)."""
        self.settings = settings
        self._slot_seconds = settings.window / SLOTS_PER_WINDOW
        self._green, self._blue, self._pairs = _Window(), _Window(), _PairWindow()
        self._rules = [rule for kind in RULES if (rule := kind.for_route(settings, shadowed)) is not None]
        self._violated_since: dict[str, float | None] = {rule.name: None for rule in self._rules}

    def record(self, colour: str, latency_s: float, failed: bool, empty: bool | None, now: float) -> None:
        """One read exchange. failed: 5xx or no response (its latency is not counted);
        empty: `routing.results.is_empty_result` of a 2xx answer, None when not judged."""
        window = self._green if colour == GREEN else self._blue
        slot = window.slot(int(now // self._slot_seconds))
        window.requests[slot] += 1
        if failed:
            window.failures[slot] += 1
            return
        window.histograms[slot][latency_bucket(latency_s)] += 1
        if empty is not None:
            window.searches[slot] += 1
            if empty:
                window.empties[slot] += 1

    def record_pair(self, overlaps: list[float], green_empty: bool | None, blue_empty: bool | None, now: float) -> None:
        """One shadow comparison: the overlap@k of each scored sub-request, and whether each colour's
        whole answer held no points (None when not judged)."""
        window = self._pairs
        slot = window.slot(int(now // self._slot_seconds))
        window.comparisons[slot] += len(overlaps)
        window.overlap_sum[slot] += sum(overlaps)
        if green_empty is not None and blue_empty is not None:
            window.pairs[slot] += 1
            window.green_empties[slot] += green_empty
            window.blue_empties[slot] += blue_empty

    def judge(self, now: float) -> Judgement:
        settings = self.settings
        epoch = int(now // self._slot_seconds)
        evidence = Evidence(now, self._green.totals(epoch), self._blue.totals(epoch), self._pairs.totals(epoch))
        enough_data = evidence.green.requests >= settings.min_requests
        figures: dict = {
            "window_s": settings.window,
            "green_requests": evidence.green.requests,
            "blue_requests": evidence.blue.requests,
        }
        verdicts = {}
        for rule in self._rules:
            measurement = rule.measure(evidence)
            figures.update(measurement.figures)
            if not (enough_data and measurement.enough) or measurement.value is None:
                verdicts[rule.name] = NO_DATA
            else:
                verdicts[rule.name] = VIOLATED if rule.violated(measurement.value) else OK

        for rule, verdict in verdicts.items():
            if verdict != VIOLATED:
                self._violated_since[rule] = None
            elif self._violated_since[rule] is None:
                self._violated_since[rule] = now
        violated_since = {rule: since for rule, since in self._violated_since.items() if since is not None}
        trip = None
        for rule in self._rules:
            since = violated_since.get(rule.name)
            if since is not None and now - since >= rule.duration:
                trip = Trip(rule.name, now, f"{rule.describe(figures)} for {now - since:g}s", figures)
                self._violated_since[rule.name] = now
                break
        return Judgement(now, enough_data, verdicts, violated_since, trip, figures)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
