"""`bluegreen-proxy demo --quick`: the README's first command tells the whole migration and cleans up.

The demo is run as a user runs it (the CLI, real processes, real sockets); its output is the story,
so the test reads each runbook step, the guard's automatic rollback, the shadow overlap and the
clients' figures from it.
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow  # the whole demo: upstream, proxy, two models, a migration and a rollback

PHASE_LINE = re.compile(
    r"^\s*(?P<label>[\w ,%]+?) \|\s+(?P<queries>\d+) queries, (?P<failed>\d+) failed, (?P<empty>\d+) empty \| "
    r"blue\s+(?P<blue>[\d.]+)%\s+green\s+(?P<green>[\d.]+)% \| right article first: (?P<right>[^|\n]*?) \|"
    r"(?P<latency>[^|\n]*)(?:\| shadow overlap@10 (?P<overlap>[\d.]+) \((?P<compared>\d+) compared\))?$",
    re.MULTILINE,
)
# The gRPC client's line under each step's line: one user, so one colour per step.
GRPC_LINE = re.compile(
    r"^\s*gRPC client (?P<user>grpc-\d+) :\s+(?P<queries>\d+) queries, (?P<failed>\d+) failed, (?P<empty>\d+) empty \| "
    r"blue\s+(?P<blue>[\d.]+)%\s+green\s+(?P<green>[\d.]+)% \| right article first: (?P<right>[^|\n]*)$",
    re.MULTILINE,
)
RUNBOOK = ("migrate plan", "migrate create-green", "migrate backfill", "migrate validate", "compare",
           "resume", "migrate promote", "migrate decommission")


def test_quick_demo_tells_the_migration_with_the_guards_rollback_and_leaves_nothing_running(tmp_path):
    data_dir = tmp_path / "demo"
    completed = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "demo", "--quick", "--data-dir", str(data_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    out = completed.stdout
    assert completed.returncode == 0, out + completed.stderr

    # Every runbook step, typed as an operator types it, in the runbook's order.
    commands = re.findall(r"^   \$ bluegreen-proxy ((?:migrate )?[\w-]+)", out, re.MULTILINE)
    assert [c for c in commands if c in RUNBOOK] == [
        "migrate plan", "migrate create-green", "migrate backfill", "migrate validate", "compare",
        "migrate backfill", "migrate validate", "resume", "migrate promote", "migrate decommission",
    ], out
    assert "created articles_minilm from articles_wordllama's layout" in out
    # The backfill re-embeds with the new model and shows its progress; the repair run too.
    assert re.search(r"articles_wordllama -> articles_minilm: \d+/150 points \([\d.]+%\)", out), out
    assert len(re.findall(r"backfill complete: 150 points scanned this run .*, 150 written", out)) == 2, out
    assert out.count("all checks passed") == 2, out
    assert "alias articles_live: articles_wordllama -> articles_minilm" in out
    snapshot = re.search(r"decommissioned articles_wordllama \(150 points\): archived in (\S+)\n.*snapshot\s+(\S+) \(\d+ bytes, sha256", out)
    assert snapshot and (data_dir / "archive").resolve() == REPO_ROOT.joinpath(snapshot[1]).resolve(), out
    assert REPO_ROOT.joinpath(snapshot[2]).is_file()

    # A real quality number: paraphrased questions with one right article each; the models differ.
    overlap = re.search(r"mean overlap@10 ([\d.]+), RBO ([\d.]+)", out)
    assert overlap and 0.2 <= float(overlap[1]) <= 0.95, out
    right = re.search(r"right article first: blue \(wordllama-256\) (\d+)%, green \(all-MiniLM-L6-v2\) (\d+)%", out)
    assert right and int(right[2]) > int(right[1]), out  # the new model finds the meant article more often

    phases = {m["label"].strip(): m.groupdict() for m in PHASE_LINE.finditer(out)}
    assert list(phases) == [
        "blue only", "dark launch, 0%", "green 10%", "green 50%", "green 100%", "fault, until rollback",
        "rolled back", "rolled back, repaired", "resumed, 100%", "promoted", "after decommission",
    ], out
    share = {label: (float(p["blue"]), float(p["green"])) for label, p in phases.items()}
    assert share["blue only"] == share["dark launch, 0%"] == (100.0, 0.0), out
    assert 2.0 <= share["green 10%"][1] <= 20.0, out
    assert 35.0 <= share["green 50%"][1] <= 65.0, out
    assert share["green 100%"] == share["resumed, 100%"] == (0.0, 100.0), out
    assert share["rolled back"] == share["rolled back, repaired"] == (100.0, 0.0), out
    assert share["promoted"] == share["after decommission"] == (100.0, 0.0), out
    assert "articles_minilm p95" in phases["promoted"]["latency"] and "articles_wordllama" not in phases["promoted"]["latency"]

    # The shadow comparison, live at 0 % green: the two models overlap, and a deleted green does not.
    dark = phases["dark launch, 0%"]
    assert int(dark["compared"]) > 0 and 0.2 <= float(dark["overlap"]) <= 0.95, out
    after_fault = [float(phases[label]["overlap"]) for label in ("fault, until rollback", "rolled back") if phases[label]["overlap"]]
    assert after_fault and max(after_fault) < float(dark["overlap"]), out  # shadows of an emptied green share nothing

    # The fault: green's searches come back empty until the guard rolls the route back by itself.
    assert int(phases["fault, until rollback"]["empty"]) > 0, out
    assert re.search(r"GUARD ROLLED BACK `articles` by itself [\d.]+s after the fault: reason empty_results "
                     r"\(.*green_empty_share.*\); effective green 0%", out), out
    assert all(int(p["empty"]) == 0 for label, p in phases.items() if label != "fault, until rollback"), out

    # The gRPC client (qdrant-client, prefer_grpc=True, text queries) in the same story: one line per
    # step; its key is blue at 10 %, green from 50 %, empty in green's fault, back on blue at the
    # rollback, green again at the resume, on the new blue after promote.
    grpc_lines = [m.groupdict() for m in GRPC_LINE.finditer(out)]
    assert len(grpc_lines) == len(phases), out
    over_grpc = dict(zip(phases, grpc_lines))
    grpc_share = {label: (float(p["blue"]), float(p["green"])) for label, p in over_grpc.items()}
    for label in ("blue only", "dark launch, 0%", "rolled back", "rolled back, repaired", "promoted", "after decommission"):
        assert grpc_share[label] == (100.0, 0.0), (label, out)
    for label in ("green 50%", "green 100%", "resumed, 100%"):
        assert grpc_share[label] == (0.0, 100.0), (label, out)
    assert grpc_share["green 10%"][0] > 50.0, out  # blue until the step to 50 % (a query or two may start after it)
    assert int(over_grpc["fault, until rollback"]["empty"]) > 0, out
    assert all(int(p["empty"]) == 0 for label, p in over_grpc.items() if label != "fault, until rollback"), out

    # Clients never changed and never failed.
    assert all(int(p["failed"]) == 0 and int(p["queries"]) > 0 for p in [*phases.values(), *grpc_lines]), out
    assert re.search(r"REST clients sent \d+ queries, 0 failed, gRPC client grpc-\d+ sent \d+ queries, 0 failed; "
                     r"total 0 failed requests", out), out

    # It says where its files are, and they are there.
    assert str(data_dir.resolve()) in out
    assert (data_dir / "bluegreen.yaml").is_file() and (data_dir / "processes.log").is_file()

    ports = {int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", out)}
    assert len(ports) == 3  # upstream, proxy data, proxy admin
    grpc_ports = {int(port) for port in re.findall(r"gRPC 127\.0\.0\.1:(\d+)", out)}
    assert len(grpc_ports) == 2  # the upstream's and the proxy's gRPC listeners
    ports |= grpc_ports
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening after the demo"


def test_demo_refuses_to_clear_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    completed = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "demo", "--quick", "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 1
    assert "is not empty and not a demo's data directory" in completed.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_local_runs_keep_their_files_where_git_ignores_them():
    """`serve --config config/embedded.yaml` and the demo write under .bluegreen-data/; every runtime
    file name they or a default config produce is ignored by git."""
    from routing.config import parse_config

    config = parse_config((REPO_ROOT / "config" / "embedded.yaml").read_text())
    assert config.upstream.is_embedded and config.upstream.embedded_port == 6336
    assert (config.listen.port, config.admin.port) == (6333, 9901)
    runtime = [config.upstream.data_dir + "/collections/x", config.state_file, config.state_file + ".lock",
               ".bluegreen-data/demo/archive/x.snapshot", "config/bluegreen.state.json", "config/bluegreen.state.json.lock",
               "backfill-docs_v1-to-docs_v2.checkpoint.json", "site/index.html"]
    assert all(path.startswith("./.bluegreen-data/") for path in (config.upstream.data_dir, config.state_file))
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *runtime], cwd=REPO_ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == runtime, ignored.stdout + ignored.stderr
