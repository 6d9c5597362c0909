"""Seconds spent in work that runs on background threads (compiles, MLflow logging, tells)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


class Stopwatch:
    """Thread-safe sums of the seconds spent inside the blocks and functions it times: wall
    clock, and CPU time of the thread that ran them (the rest is waiting: for storage, a lock,
    the GIL or a core)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - t0
                self.cpu_seconds += time.thread_time() - c0

    def timed(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with self.timing():
                return fn()

        return run
