"""Keeping a long run's memory flat, and measuring it.

Speech batches change shape at every step (clips of different lengths), so the tensors a step frees are rarely the
size the next step asks for. glibc's malloc then keeps the freed memory and asks the system for more: the resident
size of a training process grows by megabytes per step, without end (issue 18: 8 MB a step, 5 GB after 550 steps),
while the live tensors stay the same. Padding every batch to a multiple of a fixed length (the scripts'
`--pad_to_multiple_of`, `DEFAULT_PAD_TO_MULTIPLE_OF`) makes the shapes repeat, and then glibc reuses what it kept; where
they do not repeat, `keep_memory_flat` changes glibc's settings in the running process (and the data-loader workers it
forks or spawns), so the scripts need no launcher and no `LD_PRELOAD`. `resident_memory_gb` reports what each log line
shows. Other allocators (jemalloc, macOS, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

import psutil

logger = logging.getLogger(__name__)

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (whose malloc `keep_memory_flat` tunes), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (musl and others have no glibc malloc to tune)
        return libc
    except (OSError, AttributeError):
        return None


def resident_memory_gb() -> dict[str, float]:
    """Resident memory of this process and of its child processes (data-loader workers), in GB."""
    process = psutil.Process()
    children = 0
    for child in process.children(recursive=True):
        try:
            children += child.memory_info().rss
        except psutil.Error:  # a worker that ended in between
            pass
    return {"rss_gb": round(process.memory_info().rss / 1e9, 3), "workers_rss_gb": round(children / 1e9, 3)}


# Batches padded to a multiple of this many samples (0.5 s at 16 kHz) by default, in both training scripts.
DEFAULT_PAD_TO_MULTIPLE_OF = 8000


def keep_memory_flat(batch_shapes_repeat: bool, mmap_threshold_bytes: int = 256 * 1024) -> bool:
    """
    Stop glibc's malloc from growing the process by keeping what variable-sized batches free.

    glibc serves a large block from its own heap once it has seen a block that size freed (its mmap threshold adapts
    upwards, to 32 MB), and a heap full of holes of the wrong sizes only grows. When batches are padded to a multiple
    of a fixed length (`batch_shapes_repeat`, the scripts' default `--pad_to_multiple_of`), a step asks for the sizes
    some earlier step freed, the holes are reused and glibc's defaults stay flat, at full speed: nothing is changed.
    Otherwise a fixed threshold serves every block above `mmap_threshold_bytes` with its own mapping, which is returned
    to the system when the tensor is freed (flat, but slower on CPU: each block gets fresh pages), and a fixed trim
    threshold returns the heap's free top. Set in the main process before the data loaders start, so forked workers
    inherit it. `DISTILXLSR_KEEP_MEMORY_FLAT=0` in the environment keeps glibc's defaults whatever the batches,
    `=1` sets the fixed threshold even for repeating shapes. Returns whether the settings were changed (False without
    glibc).
    """
    setting = os.environ.get("DISTILXLSR_KEEP_MEMORY_FLAT", "auto")
    libc = glibc()
    if libc is None or setting == "0" or (batch_shapes_repeat and setting != "1"):
        return False
    libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes)
    libc.mallopt(M_TRIM_THRESHOLD, 4 * mmap_threshold_bytes)
    logger.info(
        "glibc malloc: blocks above %d KiB get their own mapping, so memory stays flat across batch shapes "
        "(slower on CPU; --pad_to_multiple_of keeps it flat at full speed; DISTILXLSR_KEEP_MEMORY_FLAT=0 turns this "
        "off).",
        mmap_threshold_bytes // 1024,
    )
    return True
