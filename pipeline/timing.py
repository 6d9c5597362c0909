"""Seconds spent in work that runs on background threads (compiles, MLflow logging)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Stopwatch:
    """Thread-safe sum of the seconds spent inside the functions it wraps."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()

    def timed(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            t0 = time.perf_counter()
            try:
                return fn()
            finally:
                with self._lock:
                    self.seconds += time.perf_counter() - t0

        return run
