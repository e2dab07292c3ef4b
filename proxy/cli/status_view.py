"""`bluegreen-proxy status --watch` / `--once`: a live terminal view of every route.

Per route: configured and effective green share, state (and why), the staged rollout's step and the
time to the next one, per colour the read rate, p95 and error rate over the last minute, and the
last rollback.

Where the per-colour figures come from: the proxy's own /metrics, sampled once a second and kept in
a ring of the last minute of samples here, in the viewer (no cost to the proxy, and the same figures
for every route, guarded or not). A figure is the difference between the newest sample and the
oldest one still in the minute, so the window grows from one second to a minute after the view
starts; the caption says what it spans. `--once` takes two samples a second apart. Reads only (the
operations the split and the guard apply to); an error is a 5xx or no response; p95 is interpolated
within the exported histogram's buckets (0.5 ms to 30 s), as Prometheus's histogram_quantile does.
"""
from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from proxy.cli.admin_client import AdminClient
from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK
from routing.operations import READ_OPERATIONS

WINDOW_SECONDS = 60.0
REFRESH_SECONDS = 1.0
PIPED_WIDTH = 200
FAILED_STATUSES = frozenset({"5xx", "error"})
STATE_STYLES = {"active": "green", "stepping": "cyan", "rolled_back": "bold red", "preflight_failed": "yellow"}
COLOUR_STYLES = {"blue": "bright_blue", "green": "bright_green"}


@dataclass
class ColourCounts:
    """Cumulative read counters of one (route, colour), summed over operations and collections."""

    reads: float = 0.0
    failed: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count


@dataclass
class Sample:
    at: float
    colours: dict[tuple[str, str], ColourCounts]
    rollbacks: dict[tuple[str, str], float]  # (route, reason) -> count

    @classmethod
    def parse(cls, exposition: str, at: float) -> "Sample":
        colours: dict[tuple[str, str], ColourCounts] = {}
        rollbacks: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(exposition):
            if family.name == "bluegreen_requests":
                for s in family.samples:
                    labels = s.labels
                    if s.name != "bluegreen_requests_total" or labels["operation"] not in READ_OPERATIONS:
                        continue
                    counts = colours.setdefault((labels["route"], labels["color"]), ColourCounts())
                    counts.reads += s.value
                    if labels["status"] in FAILED_STATUSES:
                        counts.failed += s.value
            elif family.name == "bluegreen_request_duration_seconds":
                for s in family.samples:
                    labels = s.labels
                    if s.name.endswith("_bucket") and labels["operation"] in READ_OPERATIONS:
                        counts = colours.setdefault((labels["route"], labels["color"]), ColourCounts())
                        bound = float(labels["le"])
                        counts.buckets[bound] = counts.buckets.get(bound, 0.0) + s.value
            elif family.name == "bluegreen_rollbacks":
                for s in family.samples:
                    if s.name == "bluegreen_rollbacks_total":
                        rollbacks[(s.labels["route"], s.labels["reason"])] = s.value
        return cls(at, colours, rollbacks)


@dataclass(frozen=True)
class ColourFigures:
    reads: float
    rate: float  # reads per second
    error_rate: float | None  # None: no reads
    p95: float | None  # seconds; None: no answered reads


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's estimate: linear interpolation within the bucket holding the rank."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):  # beyond the last finite bucket: its bound is all we know
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


class RecentFigures:
    """The last minute of samples; figures are the newest minus the oldest."""

    def __init__(self, window: float = WINDOW_SECONDS):
        self.window = window
        self.samples: deque[Sample] = deque()
        self.last_rollback: dict[str, tuple[str, float]] = {}  # route -> (reason, when seen)

    def add(self, sample: Sample) -> None:
        if self.samples and self._restarted(self.samples[-1], sample):
            self.samples.clear()  # counters went down: the proxy restarted; start the window again
        if self.samples:
            previous = self.samples[-1].rollbacks
            for (route, reason), count in sample.rollbacks.items():
                if count > previous.get((route, reason), 0.0):
                    self.last_rollback[route] = (reason, sample.at)
        self.samples.append(sample)
        while len(self.samples) > 2 and sample.at - self.samples[1].at >= self.window:
            self.samples.popleft()

    @staticmethod
    def _restarted(old: Sample, new: Sample) -> bool:
        return any(new.colours.get(key, ColourCounts()).reads < counts.reads for key, counts in old.colours.items())

    @property
    def span(self) -> float:
        return self.samples[-1].at - self.samples[0].at if len(self.samples) > 1 else 0.0

    def figures(self, route: str, colour: str) -> ColourFigures | None:
        if len(self.samples) < 2 or self.span <= 0:
            return None
        new = self.samples[-1].colours.get((route, colour), ColourCounts())
        old = self.samples[0].colours.get((route, colour), ColourCounts())
        reads = new.reads - old.reads
        failed = new.failed - old.failed
        buckets = {bound: count - old.buckets.get(bound, 0.0) for bound, count in new.buckets.items()}
        return ColourFigures(
            reads=reads,
            rate=reads / self.span,
            error_rate=failed / reads if reads > 0 else None,
            p95=histogram_quantile(0.95, buckets),
        )

    def rollbacks(self, route: str) -> dict[str, float]:
        if not self.samples:
            return {}
        return {reason: count for (name, reason), count in self.samples[-1].rollbacks.items() if name == route and count}


def read_sample(admin: AdminClient) -> Sample:
    """The proxy's /metrics now, as one sample."""
    return Sample.parse(admin.get("/metrics").decode("utf-8", errors="replace"), time.monotonic())


def read_routes(admin: AdminClient) -> dict:
    return json.loads(admin.get("/admin/routes"))


# ------------------------------------------------------------------ rendering

def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:g}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _step(route: dict) -> str:
    step = route.get("step")
    if not step:
        return "-"
    text = f"{step['index'] + 1}/{len(step['walk'])} ({step['percent']:g}%)"
    if step.get("next_in_s") is not None:
        text += f" next in {_duration(step['next_in_s'])}"
    elif step["index"] + 1 == len(step["walk"]):
        text += " last"
    else:
        text += " held"
    return text


def _colour_cell(figures: ColourFigures | None) -> Text:
    if figures is None or figures.reads <= 0:
        return Text("-", style="dim")
    error = figures.error_rate or 0.0
    text = Text(f"{_latency(figures.p95)}  ")
    text.append(f"{error:.1%}", style="bold red" if error > 0 else "")
    text.append(f"  {figures.rate:.1f}/s", style="dim")
    return text


def _ago(route: dict) -> str:
    return f" {_duration(max(0.0, time.time() - route['since']))} ago" if route.get("since") else ""


def _last_rollback(name: str, route: dict, recent: RecentFigures, now: float) -> Text:
    if route.get("state") == "rolled_back" and route.get("reason"):
        return Text.assemble((route["reason"], "bold red"), (_ago(route), "dim"))
    seen = recent.last_rollback.get(name)
    if seen is not None:
        return Text(f"{seen[0]} ({_duration(now - seen[1])} ago, resumed)")
    counts = recent.rollbacks(name)
    if counts:  # before this view started: the reasons so far, not which was last
        return Text("earlier: " + ", ".join(f"{reason} x{count:g}" for reason, count in sorted(counts.items())), style="dim")
    return Text("-", style="dim")


def render(document: dict, recent: RecentFigures, admin_url: str, now: float | None = None) -> Group:
    now = time.monotonic() if now is None else now
    reload = document.get("last_reload") or {}
    header = Text.assemble(
        ("bluegreen-proxy status", "bold"), f"  {admin_url}  config generation {document.get('generation')}, last reload ",
        (str(reload.get("result")), "green" if reload.get("result") == "success" else "bold red"),
    )
    if reload.get("error"):
        header.append(f" ({reload['error']})", style="red")
    span = recent.span
    window = "over the last minute" if span >= WINDOW_SECONDS - 1.5 else f"over the last {span:.0f}s" if span else "(sampling)"
    table = Table(box=box.SQUARE, expand=False,
                  caption=f"per colour: reads p95  error rate  reads/s, {window}", caption_justify="left")
    table.add_column("route", style="bold", no_wrap=True)
    table.add_column("configured", justify="right", no_wrap=True)
    table.add_column("effective", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("blue", style=COLOUR_STYLES["blue"], no_wrap=True)
    table.add_column("green", style=COLOUR_STYLES["green"], no_wrap=True)
    table.add_column("last rollback", no_wrap=True)
    for name, route in document.get("routes", {}).items():
        state = route.get("state", "active")
        table.add_row(
            name,
            _percent(route.get("green_percent")),
            _percent(route.get("effective_green_percent")),
            Text(state, style=STATE_STYLES.get(state, "")),
            _step(route),
            _colour_cell(recent.figures(name, "blue")),
            _colour_cell(recent.figures(name, "green")),
            _last_rollback(name, route, recent, now),
        )
    if not document.get("routes"):
        return Group(header, Text("no routes: every request passes through unchanged"))
    return Group(header, table, *_why(document["routes"]))


def _why(routes: dict) -> list[Text]:
    """A line for each route held off green: why, in the proxy's words."""
    lines = []
    for name, route in routes.items():
        state = route.get("state")
        if state in ("rolled_back", "preflight_failed") and route.get("detail"):
            lines.append(Text.assemble((f"{name}: ", "bold"), (state.replace("_", " "), STATE_STYLES[state]),
                                       f"{_ago(route)} ({route.get('reason')}): {route['detail']}"))
    return lines


def _unreachable(admin_url: str, exc: Exception) -> str:
    return f"bluegreen-proxy status: cannot reach the admin listener at {admin_url}: {exc}"


def run(admin: AdminClient, once: bool, console: Console | None = None) -> int:
    """--once: one frame from two samples a second apart (exit 1 if the proxy cannot be reached);
    --watch: redraw every second until Ctrl-C, riding out an unreachable proxy."""
    recent = RecentFigures()
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped into a script: whole rows rather than rich's 80 columns
            console = Console(width=PIPED_WIDTH)
    if once:
        try:
            recent.add(read_sample(admin))
            time.sleep(REFRESH_SECONDS)
            document = read_routes(admin)
            recent.add(read_sample(admin))
        except (OSError, ValueError) as exc:
            Console(stderr=True).print(_unreachable(admin.url, exc), style="red", markup=False)
            return EXIT_FAILED
        console.print(render(document, recent, admin.url))
        return EXIT_OK

    try:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                started = time.monotonic()
                try:
                    document = read_routes(admin)
                    recent.add(read_sample(admin))
                    live.update(render(document, recent, admin.url), refresh=True)
                except (OSError, ValueError) as exc:
                    live.update(Text(_unreachable(admin.url, exc) + "; retrying", style="bold red"), refresh=True)
                time.sleep(max(0.0, REFRESH_SECONDS - (time.monotonic() - started)))
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends
        return EXIT_OK
