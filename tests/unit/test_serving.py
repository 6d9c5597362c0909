"""A page served in-process (`make dashboard`) stops on Ctrl-C even while a request runs.

wsgiref's request handler catches every exception, KeyboardInterrupt included: a server on the
main thread that gets Ctrl-C inside a slow request prints a traceback and goes on serving (CI
saw this once, when a probe that had timed out was still being answered)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

from pipeline.serving import check_free

SLOW_SERVER = textwrap.dedent(
    """
    import sys, time
    from rich.console import Console
    from pipeline import serving

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            print("in a request", flush=True)
            time.sleep(30)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    print("serving", flush=True)
    try:
        serving.serve_wsgi(app, "the app", "127.0.0.1", int(sys.argv[1]), Console(stderr=True))
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr, flush=True)
        sys.exit(130)
    """
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read()


def _get_dropped(url: str) -> None:
    """A request the stopping server drops: it ends with the connection closed."""
    with contextlib.suppress(OSError):
        _get(url, 60)


def test_ctrl_c_inside_a_slow_request_stops_the_server_without_a_traceback():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SERVER, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "serving"
        deadline = time.monotonic() + 30
        while True:  # the server answers before it is interrupted
            try:
                assert _get(f"http://127.0.0.1:{port}/", 2) == b"ok"
                break
            except OSError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)
        slow = threading.Thread(target=_get_dropped, args=(f"http://127.0.0.1:{port}/slow",))
        slow.start()
        assert proc.stdout.readline().strip() == "in a request"
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        waited = time.monotonic() - started
    finally:
        proc.kill()
    slow.join(timeout=10)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines() == ["stopped"]
    assert waited < 10  # it did not wait for the 30-second request
    check_free("127.0.0.1", port, "dashboard")  # the port is free again: no exception
