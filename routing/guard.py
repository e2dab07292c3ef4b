"""The rollout guard: per-colour sliding windows of read outcomes, and the rules that trip a rollback.

Pure: every call takes the time as `now` (seconds; use one clock, e.g. time.time(), for the guard
and the rollout state machine). The I/O side calls `record` for every routed read exchange (a
failover's green failure and its blue retry are two exchanges) and `judge(now)` every
`settings.interval`, and hands the judgement to the route's rollout state machine.

Memory is fixed per route whatever the traffic: each colour's window is a ring of
`SLOTS_PER_WINDOW` time slots, each with four counters and a latency histogram of
`HISTOGRAM_BUCKETS` log-spaced buckets; a slot is zeroed in place when the ring comes round to it.

Rules, judged on the window ending at `now` (its span is `window` minus at most one slot):
- not enough data: fewer than `min_requests` green requests; no rule is judged, none trips, and
  every rule's clock starts again;
- `error_rate`: green failures (5xx or no response) / green requests > `max_error_rate`;
- `latency`: green's `latency_quantile` of answered requests > `max_latency_ratio` x blue's;
- `empty_results`: green's share of search-type reads with no points minus blue's > `max_empty_excess`.
Latency needs `min_requests` answered green requests and the empty rule `min_requests` green
search-type reads, else that rule has no data (and its clock starts again). Blue's figure is
blue's in the same window when that window holds `min_requests` of blue evidence for the rule,
else blue's from the last window that did (at 100 % green there is no blue traffic); with
neither, the rule has no data.

A rule trips at the first judgement where it has been violated at every judgement since a time
<= now - its `*_for`. Its clock then starts again at the trip, so a violation that goes on (with
`action: alert`) is reported again every `*_for`, not at every judgement.
"""
from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from itertools import accumulate
from dataclasses import dataclass

from routing.config import Guard
from routing.table import GREEN

ERROR_RATE, LATENCY, EMPTY_RESULTS = "error_rate", "latency", "empty_results"
RULES = (ERROR_RATE, LATENCY, EMPTY_RESULTS)  # the order a simultaneous trip is reported in
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
    reason: str  # error_rate | latency | empty_results
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


class _Window:
    """One colour's ring of slots; slot i holds the epoch (slot-sized time step) it counts."""

    __slots__ = ("epochs", "requests", "failures", "searches", "empties", "histograms")

    def __init__(self) -> None:
        self.epochs: list[float] = [-math.inf] * SLOTS_PER_WINDOW
        self.requests = [0] * SLOTS_PER_WINDOW
        self.failures = [0] * SLOTS_PER_WINDOW
        self.searches = [0] * SLOTS_PER_WINDOW  # search-type reads answered and judged
        self.empties = [0] * SLOTS_PER_WINDOW
        self.histograms = [array("q", _ZERO_HISTOGRAM) for _ in range(SLOTS_PER_WINDOW)]

    def reuse(self, slot: int, epoch: int) -> None:
        self.epochs[slot] = epoch
        self.requests[slot] = self.failures[slot] = self.searches[slot] = self.empties[slot] = 0
        self.histograms[slot][:] = _ZERO_HISTOGRAM

    def totals(self, epoch: int) -> _Totals:
        live = [slot for slot in range(SLOTS_PER_WINDOW) if epoch - SLOTS_PER_WINDOW < self.epochs[slot] <= epoch]
        return _Totals(
            requests=sum(self.requests[slot] for slot in live),
            failures=sum(self.failures[slot] for slot in live),
            searches=sum(self.searches[slot] for slot in live),
            empties=sum(self.empties[slot] for slot in live),
            histogram=[sum(column) for column in zip(*(self.histograms[slot] for slot in live))],
        )


class RouteGuard:
    def __init__(self, settings: Guard):
        self.settings = settings
        self._slot_seconds = settings.window / SLOTS_PER_WINDOW
        self._green, self._blue = _Window(), _Window()
        self._violated_since: dict[str, float | None] = dict.fromkeys(RULES)
        self._trip_after = {ERROR_RATE: settings.error_for, LATENCY: settings.latency_for, EMPTY_RESULTS: settings.empty_for}
        # Blue's figures from the last window with enough blue evidence: (value, judged at).
        self._blue_latency: tuple[float, float] | None = None
        self._blue_empty_share: tuple[float, float] | None = None

    def record(self, colour: str, latency_s: float, failed: bool, empty: bool | None, now: float) -> None:
        """One read exchange. failed: 5xx or no response (its latency is not counted);
        empty: `routing.results.is_empty_result` of a 2xx answer, None when not judged."""
        window = self._green if colour == GREEN else self._blue
        epoch = int(now // self._slot_seconds)
        slot = epoch % SLOTS_PER_WINDOW
        if window.epochs[slot] != epoch:
            window.reuse(slot, epoch)
        window.requests[slot] += 1
        if failed:
            window.failures[slot] += 1
            return
        window.histograms[slot][latency_bucket(latency_s)] += 1
        if empty is not None:
            window.searches[slot] += 1
            if empty:
                window.empties[slot] += 1

    def judge(self, now: float) -> Judgement:
        settings = self.settings
        epoch = int(now // self._slot_seconds)
        green, blue = self._green.totals(epoch), self._blue.totals(epoch)
        quantile = settings.latency_quantile
        green_latency, blue_latency = green.quantile(quantile), blue.quantile(quantile)
        green_empty = green.empties / green.searches if green.searches else None
        blue_empty = blue.empties / blue.searches if blue.searches else None
        if blue.answered >= settings.min_requests:
            self._blue_latency = (blue_latency, now)
        if blue.searches >= settings.min_requests:
            self._blue_empty_share = (blue_empty, now)

        enough_data = green.requests >= settings.min_requests
        error_rate = green.failures / green.requests if green.requests else None
        latency_ratio = (
            green_latency / self._blue_latency[0] if green_latency is not None and self._blue_latency else None
        )
        empty_excess = (
            green_empty - self._blue_empty_share[0] if green_empty is not None and self._blue_empty_share else None
        )
        verdicts = {
            ERROR_RATE: _verdict(enough_data, error_rate, settings.max_error_rate),
            LATENCY: _verdict(
                enough_data and green.answered >= settings.min_requests, latency_ratio, settings.max_latency_ratio
            ),
            EMPTY_RESULTS: _verdict(
                enough_data and green.searches >= settings.min_requests, empty_excess, settings.max_empty_excess
            ),
        }
        figures = {
            "window_s": settings.window,
            "green_requests": green.requests,
            "blue_requests": blue.requests,
            "green_error_rate": _round(error_rate),
            "blue_error_rate": _round(blue.failures / blue.requests if blue.requests else None),
            "latency_quantile": quantile,
            "green_latency_s": _round(green_latency),
            "blue_latency_s": _round(blue_latency),
            "blue_latency_reference_s": _round(self._blue_latency and self._blue_latency[0]),
            "blue_latency_reference_at": self._blue_latency and self._blue_latency[1],
            "latency_ratio": _round(latency_ratio),
            "green_searches": green.searches,
            "blue_searches": blue.searches,
            "green_empty_share": _round(green_empty),
            "blue_empty_share": _round(blue_empty),
            "blue_empty_reference": _round(self._blue_empty_share and self._blue_empty_share[0]),
            "blue_empty_reference_at": self._blue_empty_share and self._blue_empty_share[1],
            "empty_excess": _round(empty_excess),
        }

        for rule, verdict in verdicts.items():
            if verdict != VIOLATED:
                self._violated_since[rule] = None
            elif self._violated_since[rule] is None:
                self._violated_since[rule] = now
        violated_since = {rule: since for rule, since in self._violated_since.items() if since is not None}
        trip = None
        for rule, since in violated_since.items():
            if now - since >= self._trip_after[rule]:
                trip = Trip(rule, now, self._describe(rule, figures, now - since), figures)
                self._violated_since[rule] = now
                break
        return Judgement(now, enough_data, verdicts, violated_since, trip, figures)

    def _describe(self, rule: str, figures: dict, lasted: float) -> str:
        settings = self.settings
        if rule == ERROR_RATE:
            measured = f"green error rate {figures['green_error_rate']:.1%} > {settings.max_error_rate:.1%}"
        elif rule == LATENCY:
            name = f"p{settings.latency_quantile * 100:g}"
            measured = (
                f"green {name} {figures['green_latency_s'] * 1000:.1f} ms = {figures['latency_ratio']:.2f} x "
                f"blue's {figures['blue_latency_reference_s'] * 1000:.1f} ms > {settings.max_latency_ratio:g} x"
            )
        else:
            measured = (
                f"green empty results {figures['green_empty_share']:.1%} vs blue's "
                f"{figures['blue_empty_reference']:.1%}: excess {figures['empty_excess']:.1%} "
                f"> {settings.max_empty_excess:.1%}"
            )
        return f"{measured} for {lasted:g}s"


def _verdict(judged: bool, value: float | None, limit: float) -> str:
    if not judged or value is None:
        return NO_DATA
    return VIOLATED if value > limit else OK


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
