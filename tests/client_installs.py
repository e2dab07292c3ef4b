"""Clients the gRPC client tests run as processes of their own, installed from the package registries into
a cache directory ignored by git: an older qdrant-client in a venv, @qdrant/js-client-grpc in a
node_modules. Each is installed once and reused while its pin (and the interpreter) is unchanged. An
install that cannot reach the registry fails the test that needs it, saying so; it never skips."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.support import REPO_ROOT

CACHE = REPO_ROOT / ".bluegreen-test-cache"
CLIENTS = Path(__file__).resolve().parent / "grpc_clients"
OLD_QDRANT_CLIENT = "qdrant-client==1.12.*"
INSTALL_TIMEOUT = 600  # seconds; a first install takes 20-60 s


def _run(args: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"{what}: {exc}", pytrace=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        pytest.fail(f"{what} failed (exit {done.returncode}); it needs the package registry (CI has it):\n{output}", pytrace=False)


def _installed(target: Path, pin: str, install: Callable[[Path], None]) -> Path:
    """`target`, installed by `install` unless its stamp says `pin` is already there."""
    stamp = target / ".installed"
    if stamp.is_file() and stamp.read_text() == pin:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    install(target)
    stamp.write_text(pin)  # last: an interrupted install is redone next time
    return target


def old_qdrant_client_python() -> Path:
    """The python of a venv holding only qdrant-client 1.12 (and its dependencies)."""
    def install(target: Path) -> None:
        _run([sys.executable, "-m", "venv", str(target)], f"creating a venv for {OLD_QDRANT_CLIENT} in {target}")
        _run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--retries", "1", "--timeout", "30", OLD_QDRANT_CLIENT], f"pip install {OLD_QDRANT_CLIENT} into {target}")

    pin = f"{OLD_QDRANT_CLIENT} on {sys.executable} {sys.version}"
    return _installed(CACHE / "qdrant-client-1.12", pin, install) / "bin" / "python"


def node_client() -> Path:
    """A directory with tests/grpc_clients/js/client.mjs beside the node_modules its package-lock.json pins:
    @qdrant/js-client-grpc 1.18.0 (its version check accepts Qdrant 1.17 to 1.19; 1.19.0 needs Node 22)
    with connect 2.1.2, which runs on Debian 12's Node 18 though it declares 20 (connect 2.2 declares 22)."""
    source = CLIENTS / "js"
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` is not installed: the Node gRPC client test needs Node.js 18+ and npm "
                        "(Debian: apt-get install nodejs npm)", pytrace=False)

    def install(target: Path) -> None:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(source / name, target / name)
        # --legacy-peer-deps: the client's optional typescript peer is not needed to run it.
        _run(["npm", "ci", "--legacy-peer-deps", "--no-audit", "--no-fund", "--fetch-retries=1", "--fetch-timeout=30000"],
             f"npm ci of {source / 'package-lock.json'} into {target}", cwd=target)

    pin = hashlib.sha256((source / "package.json").read_bytes() + (source / "package-lock.json").read_bytes()).hexdigest()
    target = _installed(CACHE / "js-client-grpc", pin, install)
    shutil.copy(source / "client.mjs", target / "client.mjs")  # beside node_modules, where its imports resolve
    return target
