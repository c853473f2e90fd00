"""The session's CPU time: onnxruntime's pool threads found at load, and their clocks read."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from core.model_loader import load_model
from core.thread_cpu import CpuMeter, cpu_seconds, native_threads, started_threads


def test_a_thread_clock_counts_that_threads_cpu_only() -> None:
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            pass

    t = threading.Thread(target=burn)
    mine = cpu_seconds(threading.get_native_id())
    t.start()
    try:
        time.sleep(0.3)
        burned = cpu_seconds(t.native_id)
        mine = cpu_seconds(threading.get_native_id()) - mine
    finally:
        stop.set()
        t.join()
    assert burned > 0.05  # it ran (at least a sixth of the time, on a busy machine)
    assert mine < burned  # this thread slept
    assert cpu_seconds(2**22 + 12345) == 0.0  # above Linux's pid_max: no such thread, no error


def test_python_threads_are_not_taken_for_a_librarys() -> None:
    box: list[threading.Thread] = []

    def start() -> None:
        box.append(threading.Thread(target=time.sleep, args=(0.5,)))
        box[0].start()

    _, found = started_threads(start)
    box[0].join()
    assert found == ()


def test_the_session_pool_and_the_meter_account_for_the_process_cpu(exported: Path) -> None:
    """With two intra-op threads onnxruntime starts one pool thread; the meter's count of a
    session call (caller + pool) matches the process's CPU time over it."""
    before = native_threads()
    loaded = load_model(exported.parent.parent, "tiny", device="cpu", threads=2, spinning=False)
    assert len(loaded.pool_threads) == 1 and set(loaded.pool_threads) <= native_threads() - before
    images = np.random.default_rng(0).integers(0, 256, (8, 256, 256, 3), dtype=np.uint8)
    meter = CpuMeter(loaded.pool_threads)
    meter.take()
    process = time.process_time()
    for _ in range(3):
        loaded.session.run(None, {"images": images})
    process = time.process_time() - process
    counted = meter.take()
    assert counted > 0.5 * process and counted <= process + 0.02, (counted, process)
    pool_only = sum(cpu_seconds(t) for t in loaded.pool_threads)
    assert pool_only > 0  # the pool did part of the work
