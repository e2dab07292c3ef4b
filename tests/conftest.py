from __future__ import annotations

import os

import pytest

from tests.faults import start_fault_proxy
from tests.support import ADMIN_TOKEN, RunningProxy, start_embedded_upstream


@pytest.fixture(scope="session")
def embedded_upstream(tmp_path_factory):
    """One embedded Qdrant-compatible upstream (qdrant-edge) for the whole session: its base URL."""
    data_dir = tmp_path_factory.mktemp("upstream-data")
    server, url = start_embedded_upstream(data_dir, tmp_path_factory.mktemp("logs"))
    yield url
    server.stop()


@pytest.fixture(scope="module")
def faulty_upstream(embedded_upstream, tmp_path_factory):
    """(fault injector URL, embedded upstream URL): the proxy talks to the injector."""
    server, url = start_fault_proxy(embedded_upstream, tmp_path_factory.mktemp("faults"))
    yield url, embedded_upstream
    server.stop()


@pytest.fixture
def proxies(tmp_path, faulty_upstream):
    """start(routes, name, extra_yaml) -> a RunningProxy in front of the fault injector, admin token
    ADMIN_TOKEN; every one started is stopped after the test."""
    started: list[RunningProxy] = []

    def start(routes: str, name: str = "proxy", extra_yaml: str = "") -> RunningProxy:
        proxy = RunningProxy(
            tmp_path / name, faulty_upstream[0], routes, extra_yaml=extra_yaml, admin_options=f"token: {ADMIN_TOKEN}"
        )
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than this process may use cores: most of a test's time is spent waiting
    on the processes and sockets it started (on 2 cores the whole suite took 4 min 58 s with 2 workers
    and 3 min 47 s with 3, the CPU busy 72 % of the time with 2)."""
    return len(os.sched_getaffinity(0)) + 1
