"""Child processes (servers on loopback) and what /proc says about them.

Every child is registered with a `Children` group whose `stop_all()` runs in a `finally`,
so a failed or interrupted run leaves nothing listening.
"""
from __future__ import annotations

import os
import resource
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from proxy.process import stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class Child:
    """One child process whose output goes to a log file."""

    def __init__(self, name: str, args: list[str], log_path: Path):
        self.name = name
        self.args = args
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> "Child":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ["(no log)"]

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_lines()[-lines:])


class Children:
    """The children of one run, stopped newest first."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self._children: list[Child] = []

    def start(self, name: str, args: list[str], ready_url: str, timeout: float = 30.0) -> Child:
        child = Child(name, args, self.log_dir / f"{name}.log")
        self._children.append(child)
        child.start()
        wait_http_ready(child, ready_url, timeout)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self._children:
            self._children.remove(child)

    def stop_all(self) -> None:
        while self._children:
            self._children.pop().stop()


def wait_http_ready(child: Child, url: str, timeout: float) -> None:
    """Until `url` answers any HTTP status below 500; fails early if the child exits."""
    deadline = time.monotonic() + timeout
    last_error: object = None
    while time.monotonic() < deadline:
        if not child.running():
            raise RuntimeError(f"{child.name} exited before {url} answered; log:\n{child.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last_error = exc
        except OSError as exc:
            last_error = exc
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout:g}s ({last_error}); log:\n{child.log_tail()}")


# ---------------------------------------------------------------- /proc


def process_tree(pid: int) -> list[int]:
    """The pid and its descendants (nginx: master and workers)."""
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(p) for p in children.read().split())
        except OSError:
            continue  # exited meanwhile
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its descendants."""
    total = 0
    for each in process_tree(pid):
        try:
            with open(f"/proc/{each}/stat") as stat:
                # Fields after the `(comm)`, which may itself hold spaces: utime and stime are 14 and 15.
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def _status_kb(pid: int, field: str) -> int:
    total = 0
    for each in process_tree(pid):
        try:
            with open(f"/proc/{each}/status") as status:
                for line in status:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def peak_rss_kb(pid: int) -> int:
    """VmHWM, summed over the tree."""
    return _status_kb(pid, "VmHWM")


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS")


def reset_peak_rss(pid: int) -> bool:
    """Restart VmHWM from the current RSS (Linux >= 4.0, same user or root), so a peak is per run."""
    ok = True
    for each in process_tree(pid):
        try:
            with open(f"/proc/{each}/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            ok = False
    return ok


class ResourceProbe:
    """CPU and memory of one process tree across one measured run."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_is_per_run = reset_peak_rss(pid)
        self.rss_before_kb = rss_kb(pid)
        self.cpu_before = cpu_seconds(pid)

    def finish(self, requests: int) -> dict:
        cpu = cpu_seconds(self.pid) - self.cpu_before
        rss_after = rss_kb(self.pid)
        return {
            "cpu_seconds": round(cpu, 3),
            "cpu_seconds_per_10k_requests": round(cpu / requests * 10_000, 4) if requests else None,
            "cpu_us_per_request": round(cpu / requests * 1e6, 1) if requests else None,
            "peak_rss_mb": round(peak_rss_kb(self.pid) / 1024, 1),
            "peak_rss_scope": "run" if self.peak_is_per_run else "process lifetime",
            "rss_growth_kb": rss_after - self.rss_before_kb,
            "rss_growth_kb_per_10k_requests": round((rss_after - self.rss_before_kb) / requests * 10_000, 1)
            if requests else None,
        }


class BackgroundLoad:
    """How much CPU *other* processes used over a span: the machine is shared, so say how noisy it was."""

    def __init__(self):
        self.busy_before, self.steal_before = _machine_cpu_seconds()
        self.own_before = _own_cpu_seconds()
        self.started = time.monotonic()

    def finish(self) -> dict:
        busy, steal = _machine_cpu_seconds()
        capacity = (time.monotonic() - self.started) * len(os.sched_getaffinity(0))
        others = max(0.0, (busy - self.busy_before) - (_own_cpu_seconds() - self.own_before))
        return {
            "other_processes_cpu_seconds": round(others, 2),
            "other_processes_share": round(others / capacity, 3),
            "steal_share": round((steal - self.steal_before) / capacity, 3),
        }


def _machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU-seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq) / _CLOCK_TICKS, steal / _CLOCK_TICKS


def _own_cpu_seconds() -> float:
    """This process and its live descendants, plus the descendants already reaped (wrk runs, stopped servers)."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cpu_seconds(os.getpid()) + reaped.ru_utime + reaped.ru_stime
