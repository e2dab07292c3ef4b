"""The shared rollout state: the pure merge rule (routing.replicas) and the state file's I/O
(proxy.control.rollout_store) under concurrent writers in separate processes."""
from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import pytest

from proxy.control.rollout_store import KEEP_FINGERPRINTS, StateFile, StateFileError
from routing.replicas import decisions, merge, merge_rollback
from tests.support import REPO_ROOT

LATCH_A = {"reason": "manual", "detail": "a", "figures": None, "since": 100.0}
LATCH_B = {"reason": "error_rate", "detail": "b", "figures": {"green": 0.5}, "since": 105.0}


def record(version: int = 0, step: int = 0, latch: dict | None = None, hold: float = 0.0, fingerprint: str = "f1") -> dict:
    content = {"fingerprint": fingerprint, "step_index": step, "step_started": float(step), "hold_started": hold,
               "rolled_back": latch}
    return {**content, "version": version} if version else content


# ---------------------------------------------------------------- the merge rule (pure)


def test_nobody_wrote_since_the_base_so_the_local_record_is_stored():
    assert merge(record(3), record(step=1, latch=LATCH_A), record(3)) == record(step=1, latch=LATCH_A)
    assert merge(None, record(step=1), None) == record(step=1)


def test_an_older_routine_record_never_replaces_a_newer_rollback():
    # The idle replica (base v3) restarts its hold clock; meanwhile the other rolled back (v4).
    stored = record(4, latch=LATCH_A)
    merged = merge(stored, record(hold=50.0), record(3))
    assert merged["rolled_back"] == LATCH_A


def test_a_rollback_made_on_an_older_base_still_stands():
    stored = record(4, step=1)  # the other replica stepped
    merged = merge(stored, record(latch=LATCH_B), record(3))
    assert (merged["rolled_back"], merged["step_index"]) == (LATCH_B, 1)


def test_a_resume_lifts_only_the_rollback_it_saw():
    assert merge(record(4, latch=LATCH_A), record(), record(3, latch=LATCH_A))["rolled_back"] is None
    assert merge(record(5, latch=LATCH_B), record(), record(3, latch=LATCH_A))["rolled_back"] == LATCH_B


def test_of_two_rollbacks_the_stored_first_cause_stays():
    assert merge_rollback(LATCH_A, LATCH_B, None) == LATCH_A


def test_a_staged_walk_never_goes_back():
    assert merge(record(4, step=2), record(step=1), record(3))["step_index"] == 2
    assert merge(record(4, step=1), record(step=2), record(3))["step_index"] == 2


def test_the_hold_clock_is_not_a_decision():
    assert decisions(record(hold=1.0)) == decisions(record(hold=99.0))
    assert decisions(record(latch=LATCH_A)) != decisions(record())


# ---------------------------------------------------------------- the file


def _writer(path: str, route: str, saves: int, start: multiprocessing.Event) -> None:
    """One replica's worth of saves: each a new decision (the step), derived from what it last stored."""
    state_file = StateFile(Path(path))
    base = None
    start.wait()
    for step in range(1, saves + 1):
        local = record(step=step, fingerprint="f1")
        base = state_file.save({(route, "f1"): local}, {(route, "f1"): base})[(route, "f1")]


def test_concurrent_writers_in_separate_processes_lose_nothing(tmp_path):
    path = tmp_path / "shared.json"
    context = multiprocessing.get_context("fork")
    start = context.Event()
    writers = [context.Process(target=_writer, args=(str(path), f"route{i}", 40, start)) for i in range(4)]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    stored = StateFile(path).read()
    assert {slot: (saved["step_index"], saved["version"]) for slot, saved in stored.items()} == {
        (f"route{i}", "f1"): (40, 40) for i in range(4)
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.json", "shared.json.lock"]  # no temp file left


def test_two_writers_of_one_route_merge_instead_of_overwriting(tmp_path):
    path = tmp_path / "shared.json"
    first, second = StateFile(path), StateFile(path)
    slot = ("docs", "f1")
    base = first.save({slot: record()}, {})[slot]
    rolled = first.save({slot: record(latch=LATCH_A)}, {slot: base})[slot]  # replica A rolls back
    after = second.save({slot: record(hold=77.0)}, {slot: base})[slot]  # B, on the old base, restarts its hold
    assert after == rolled and after["version"] == 2
    resumed = second.save({slot: record()}, {slot: rolled})[slot]  # B saw the rollback and resumes it
    assert resumed["rolled_back"] is None and resumed["version"] == 3


def test_records_are_kept_per_config_fingerprint_and_old_ones_pruned(tmp_path):
    state_file = StateFile(tmp_path / "s.json")
    state_file.save({("docs", "old"): record(latch=LATCH_A, fingerprint="old")}, {})
    state_file.save({("docs", "new"): record(fingerprint="new")}, {})
    stored = state_file.read()
    assert stored[("docs", "old")]["rolled_back"] == LATCH_A and stored[("docs", "new")]["rolled_back"] is None
    for n in range(KEEP_FINGERPRINTS + 2):
        state_file.save({("docs", f"f{n}"): record(fingerprint=f"f{n}")}, {})
    assert len(json.loads((tmp_path / "s.json").read_text())["routes"]["docs"]) == KEEP_FINGERPRINTS


def test_a_format_1_file_reads_as_version_0(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"version": 1, "routes": {"docs": record(latch=LATCH_A)}}))
    assert StateFile(path).read() == {("docs", "f1"): record(latch=LATCH_A)}


def test_an_unwritable_state_file_says_which_and_why(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    state_file = StateFile(blocker / "state.json")
    with pytest.raises(StateFileError, match="cannot write state file .*state.json: Not a directory"):
        state_file.save({("docs", "f1"): record()}, {})
    assert "Not a directory" in state_file.probe()
    assert StateFile(tmp_path / "fine.json").probe() is None


def test_owns_its_file_lock_and_temp_files_only(tmp_path):
    state_file = StateFile(tmp_path / "bluegreen.state.json")
    assert all(state_file.owns(str(tmp_path / name)) for name in (
        "bluegreen.state.json", "bluegreen.state.json.lock", ".bluegreen.state.json.k2j3_x.tmp"))
    assert not state_file.owns(str(tmp_path / "bluegreen.yaml"))
    assert not os.path.exists(tmp_path / "bluegreen.state.json.lock")


# ---------------------------------------------------------------- the file store never destroys what it did not write


def test_a_state_file_that_is_something_else_is_refused_at_start_and_left_alone(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a state file\n")
    config = tmp_path / "bluegreen.yaml"
    config.write_text(f"state_file: {notes}\nroutes: {{}}\n")
    for path, problem in ((notes, "is not a bluegreen-proxy state file"), (config, "is the config file")):
        config.write_text(f"state_file: {path}\nroutes: {{}}\n")
        before = path.read_bytes()
        started = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )
        assert started.returncode == 2, started.stderr
        assert f"state_file: state file {path}" in started.stderr and problem in started.stderr
        assert path.read_bytes() == before
        assert not path.with_name(path.name + ".lock").exists()


def test_a_state_file_that_is_empty_or_ours_is_used(tmp_path):
    empty = tmp_path / "empty.json"
    empty.touch()
    StateFile(empty).prepare(str(tmp_path / "bluegreen.yaml"))
    ours = tmp_path / "ours.json"
    StateFile(ours).save({("docs", "f1"): record()}, {})
    StateFile(ours).prepare(str(tmp_path / "bluegreen.yaml"))


def test_the_state_file_and_its_lock_are_private_to_the_proxy(tmp_path):
    state_file = StateFile(tmp_path / "s.json")
    state_file.save({("docs", "f1"): record()}, {})
    assert stat.S_IMODE(os.stat(state_file.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state_file.lock_path).st_mode) == 0o600


def test_temp_files_a_crash_left_are_removed_at_start(tmp_path):
    state_file = StateFile(tmp_path / "s.json")
    state_file.save({("docs", "f1"): record()}, {})
    stale = [tmp_path / ".s.json.abc123.tmp", tmp_path / ".s.json.k_9x.tmp"]
    for path in stale:
        path.write_text('{"half": ')
    unrelated = tmp_path / ".other.json.abc.tmp"
    unrelated.write_text("x")
    state_file.prepare(str(tmp_path / "bluegreen.yaml"))
    assert not any(path.exists() for path in stale)
    assert unrelated.exists() and state_file.read() == {("docs", "f1"): {**record(), "version": 1, "saved_at": ANY}}
