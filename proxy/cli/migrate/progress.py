"""Backfill progress: a rich progress bar on a terminal, plain lines otherwise (logs, CI, pipes)."""
from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_INTERVAL = 2.0  # seconds between plain lines


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    """Points done / total, this run's rate and the ETA at that rate."""

    def __init__(self, description: str, total: int, done: int = 0, stream: TextIO | None = None, clock=time.monotonic):
        self.description = description
        self.total = total
        self.done = done
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()
        self.done_at_start = done
        self._last_line = 0.0
        self._printed_done: int | None = None  # the `done` of the last plain line
        self._bar = self._rich_bar() if self.stream.isatty() else None

    def _rich_bar(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn

        bar = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("points"),
            TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"),
            console=Console(file=self.stream), transient=False,
        )
        self._task = bar.add_task(self.description, total=self.total, completed=self.done, rate="-", eta="-")
        bar.start()
        return bar

    @property
    def rate(self) -> float:
        elapsed = self.clock() - self.started
        return (self.done - self.done_at_start) / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> str:
        rate = self.rate
        return format_duration(max(0, self.total - self.done) / rate) if rate > 0 else "-"

    def line(self) -> str:
        share = f" ({self.done / self.total:.1%})" if self.total else ""
        return f"{self.description}: {self.done}/{self.total} points{share}, {self.rate:.0f} points/s, ETA {self.eta}"

    def advance(self, points: int) -> None:
        self.done += points
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{self.rate:.0f}/s", eta=self.eta)
            return
        now = self.clock()
        if now - self._last_line >= PLAIN_INTERVAL:
            self._last_line = now
            self._print_line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._printed_done != self.done:  # the final figure, unless the last batch's line gave it
            self._print_line()

    def _print_line(self) -> None:
        self._printed_done = self.done
        print(self.line(), file=self.stream, flush=True)
