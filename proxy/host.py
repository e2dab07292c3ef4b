"""Tuning the host process for a long-running proxy: open files, malloc, the garbage collector."""
from __future__ import annotations

import ctypes
import gc
import logging
import resource

log = logging.getLogger("bluegreen.host")

_M_MMAP_THRESHOLD = -3  # glibc malloc.h


def allow_open_files(connections: int) -> int:
    """Raise the soft file-descriptor limit toward the hard one, so limits.max_connections client
    connections plus the upstream pool fit; warn when even the hard limit is below that. The soft
    limit in force afterwards."""
    wanted = connections + 256  # listeners, config watch, logs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open-file limit %d is below limits.max_connections + upstream.max_connections + 256 = %d", target, wanted)
    return target


def keep_large_blocks_returnable() -> bool:
    """glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), so
    after a few large upstream answers the next ones are carved from the heap and their space stays
    with the process when freed (measured: +30 MiB RSS kept after 24 large answers; with a fixed
    threshold, +1 MiB). Fixing it at glibc's default (128 KiB) keeps large blocks in mmap, returned on
    free. Not glibc: nothing to do (False)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 128 * 1024))


def freeze_start_up_objects() -> None:
    """Modules, the app and the first config live as long as the process; left in the collected
    heap, every full collection walks them all and stalls the event loop (26 ms, measured under
    reload churn). Call it once everything loaded at start-up is loaded."""
    gc.collect()
    gc.freeze()
