"""Serving a page from the command line (`make ui`, `make dashboard`): the port checked before
an address is printed, the server run as a child (or a thread) that Ctrl-C stops quietly."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from rich.console import Console

from pipeline.config import ConfigError

EXIT_FAILED = 1  # a server stopped by itself


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port={port} is invalid: expected an integer from 1 to 65535")


def check_free(host: str, port: int, command: str) -> None:
    """Bind ``host:port`` once, as the server will, so that a port another program holds is
    refused before an address is printed (that address would open the other program)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ConfigError(f"--host={host} is invalid: {e.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        # as servers do: the closed connections of an earlier server (TIME_WAIT) do not count
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise LookupError(
                    f"port {port} on {host} is in use by another program: stop it, or serve on "
                    f"another port (--port <port>, or make {command} PORT=<port>)"
                ) from None
            raise LookupError(f"cannot serve on {host}:{port}: {e.strerror}") from None


def serve(command: list[str], name: str, console: Console, env: dict | None = None) -> int:
    """Run a server as a child in its own process group (with ``env``, or this process's
    environment), so that Ctrl-C reaches this process only; its output is relayed to stderr
    until then, and it is stopped quietly after."""
    child = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        process_group=0,
    )
    stopping = threading.Event()
    relay = threading.Thread(target=relay_output, args=(child.stdout, stopping), daemon=True)
    relay.start()
    try:
        with _stop_signals():
            code = child.wait()
    finally:
        stopping.set()  # what it prints while it shuts down is not the user's concern
        _stop(child)
        relay.join(timeout=5)
    console.print(
        f"[red]error:[/] {name} stopped by itself with exit code {code} (its output is above)",
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_FAILED


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the standard library's name
        """One line per request is noise on a terminal a user watches for the address."""


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    """A request per thread, so that a browser's parallel requests do not queue."""

    daemon_threads = True


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


def serve_wsgi(app: Callable, name: str, host: str, port: int, console: Console) -> int:
    """Serve a WSGI app until Ctrl-C, which raises KeyboardInterrupt here, as for any command.

    The server runs in a thread of its own so that the interrupt reaches the main thread while
    it only waits: a server on the main thread gets it inside a request, where wsgiref's
    handler catches every exception, prints a traceback and goes on serving."""
    server_class = _ThreadedServer6 if ":" in host else _ThreadedServer  # an IPv6 address
    server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    worker.start()
    try:
        with _stop_signals():
            while worker.is_alive():
                worker.join(timeout=0.5)
    finally:
        server.shutdown()
        server.server_close()
        worker.join()
    console.print(f"[red]error:[/] {name} stopped by itself", highlight=False, soft_wrap=True)
    return EXIT_FAILED


def relay_output(stream, stopping: threading.Event) -> None:
    for line in stream:
        if not stopping.is_set():
            sys.stderr.write(line)
            sys.stderr.flush()


def _stop(child: subprocess.Popen) -> None:
    """Stop a child's whole process group (a server's workers too): SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=wait_s)
            return


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) end the block as Ctrl-C does, so that the child
    is stopped too instead of being left holding the port."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
