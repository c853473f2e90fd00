"""CPU time of single threads, by Linux thread id, and the threads a call starts.

The service counts the CPU its onnxruntime session uses: the thread that calls `run` plus
the session's own intra-op pool, whose threads onnxruntime starts (in C++, unseen by
`threading`) when the session is created. `started_threads` names them by comparing
/proc/self/task before and after; `cpu_seconds` reads each one's CPU clock.

Elsewhere (no /proc) nothing is found and the clocks read 0: the figures are then absent,
never wrong.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def native_threads() -> set[int]:
    """Kernel ids of this process's threads (empty where /proc is missing)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def started_threads(create: Callable[[], T]) -> tuple[T, tuple[int, ...]]:
    """`create()` and the ids of the native threads that appeared meanwhile and are still
    running, leaving out Python's own threads (a thread pool that grew at the same time)."""
    before = native_threads()
    result = create()
    python = {t.native_id for t in threading.enumerate()}
    return result, tuple(sorted(native_threads() - before - python))


def cpu_seconds(tid: int) -> float:
    """CPU seconds (user + system) of the thread `tid` of this process; 0 if there is none.

    Linux's per-thread CPU clock id, `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)` in the
    kernel's posix-cpu-timers: nanosecond resolution, where /proc/.../stat counts 10 ms ticks.
    """
    try:
        return time.clock_gettime((~tid << 3) | 6)
    except (OSError, OverflowError):
        return 0.0


class CpuMeter:
    """CPU seconds used by the calling thread and by `pool` (other threads' ids) since the
    last `take`; call `take` from one thread only (its own clock is the caller's).
    `caller=False` counts the pool alone (several calling threads share one pool)."""

    def __init__(self, pool: tuple[int, ...] = (), *, caller: bool = True) -> None:
        self.pool, self.caller = pool, caller
        self._pool_last = {tid: cpu_seconds(tid) for tid in pool}
        self._own_last: float | None = None

    def take(self) -> float:
        used = 0.0
        if self.caller:
            own = time.thread_time()
            used = own - self._own_last if self._own_last is not None else own
            self._own_last = own
        for tid in self.pool:
            now = cpu_seconds(tid)
            used += max(0.0, now - self._pool_last[tid])
            self._pool_last[tid] = now
        return used
