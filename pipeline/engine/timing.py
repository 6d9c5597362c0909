"""Seconds spent in work that runs on background threads (compiles, MLflow logging, tells), and
the deadline that turns a call that never returns into an error."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
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


class StalledCall(RuntimeError):
    """A compiled call gave no result within its bound: the XLA runtime is presumed wedged."""


def call_with_deadline(fn: Callable[[], Any], seconds: float) -> Any:
    """``fn()``, run on a daemon thread and waited for at most ``seconds``; ``TimeoutError``
    after that (the thread is left behind: a wait inside XLA cannot be interrupted)."""
    box: Future = Future()

    def run() -> None:
        try:
            box.set_result(fn())
        except BaseException as e:  # handed to the waiting thread
            box.set_exception(e)

    threading.Thread(target=run, name="deadline", daemon=True).start()
    try:
        return box.result(timeout=seconds)
    except FutureTimeout:
        raise TimeoutError(f"no result in {seconds:.0f} s") from None
