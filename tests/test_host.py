"""proxy.host in-process: the open-file limit, glibc's mmap threshold and the frozen start-up heap."""
from __future__ import annotations

import gc
import platform
import resource
import subprocess
import sys

import pytest

from proxy.host import allow_open_files, freeze_start_up_objects, keep_large_blocks_returnable
from tests.support import REPO_ROOT


@pytest.fixture
def restored_open_file_limit():
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_open_file_limit_is_raised_to_fit_the_connections(restored_open_file_limit):
    _, hard = restored_open_file_limit
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"hard open-file limit {hard} is too low to try")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    assert allow_open_files(1000) == 1256
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (1256, hard)


def test_open_file_limit_already_enough_is_left_alone(restored_open_file_limit):
    _, hard = restored_open_file_limit
    if hard != resource.RLIM_INFINITY and hard < 600:
        pytest.skip(f"hard open-file limit {hard} is too low to try")
    resource.setrlimit(resource.RLIMIT_NOFILE, (600, hard))
    assert allow_open_files(100) == 600
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (600, hard)


def test_open_file_limit_below_the_connections_warns_and_takes_the_hard_limit():
    """A hard limit can only be lowered for good: in a child process."""
    code = (
        "import logging, resource\n"
        "logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (128, 512))\n"
        "from proxy.host import allow_open_files\n"
        "print(allow_open_files(5000))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "512"
    assert "WARNING open-file limit 512 is below limits.max_connections + upstream.max_connections + 256 = 5256" in done.stderr


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_mmap_threshold_is_fixed_on_glibc():
    assert keep_large_blocks_returnable() is True


def test_start_up_objects_are_frozen_out_of_collections():
    try:
        before = gc.get_freeze_count()
        freeze_start_up_objects()
        assert gc.get_freeze_count() > before
        assert gc.get_count()[2] == 0  # collected just before freezing
    finally:
        gc.unfreeze()
