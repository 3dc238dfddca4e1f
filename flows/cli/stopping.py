"""SIGTERM and SIGINT end every command within seconds, with no process left behind.

Python's default SIGTERM kills the interpreter without running `atexit`, where Prefect stops the
temporary server `sae-sweep run` started: the server was orphaned. Unwinding alone is not enough either:
a sweep's cells and a cell's labels run in worker threads (blocked in HTTP requests and Prefect's retry
delays) that the interpreter joins before it exits, so a signal during labelling left the process
waiting minutes for them. So the first signal does both:

- it raises `KeyboardInterrupt` in the main thread (during a flow run Prefect's own SIGTERM handler
  raises its `TerminationSignal` instead, marks the run, then re-sends the signal to this handler), so
  whatever can finish cleanly does: Prefect records the run's state, `atexit` stops the server;
- a watchdog gives that `GRACE_S`, then stops every child process (terminate, then kill) and leaves with
  `os._exit(128 + signal)`.

Nothing is lost by the hard exit: every output is written atomically (a temporary renamed into place)
and the locks are `flock`s the kernel drops, so a re-run finds the last checkpoint and every completed
output and resumes. A second Ctrl-C skips the grace.

The watchdog learns of a signal through `signal.set_wakeup_fd`, which the interpreter writes for every
signal with a Python handler, whichever handler is installed: Prefect swaps SIGTERM's handler for its
own during a flow run, and the watchdog must start all the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType

GRACE_S = 5.0
"""How long the main thread may unwind (Prefect records the run's state) before the hard stop."""

CHILD_GRACE_S = 3.0
"""How long a child (the temporary Prefect server) has to exit after SIGTERM before SIGKILL."""

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_SEEN = 100  # offset of the byte the handler itself sends (signal numbers are below 65)


class _Stop:
    """The process-wide stop state (one per process: signals are process-wide)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.signal: int | None = None  # the first stop signal the watchdog saw
        self.raised: int | None = None  # the signal whose KeyboardInterrupt was raised
        # Both ends stay referenced here: a closed writer would silently disable the wakeup fd.
        self.sockets: tuple[socket.socket, socket.socket] | None = None


_stop = _Stop()


def received() -> int | None:
    """The stop signal received, or None."""
    return _stop.signal if _stop.signal is not None else _stop.raised


def install() -> None:
    """Make SIGTERM and SIGINT stop the process as described above. Main thread only; idempotent."""
    if threading.current_thread() is not threading.main_thread() or _stop.sockets is not None:
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    reader.settimeout(0.2)
    _stop.sockets = (reader, writer)
    for signum in _SIGNALS:
        signal.signal(signum, _raise_interrupt)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(reader,), name="stop-watchdog", daemon=True).start()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # Raised once: while the main thread unwinds (a `finally` joining threads, Prefect reporting the
    # run's state), a later signal — Prefect re-sends the SIGTERM it caught — must not interrupt it.
    with _stop.lock:
        first = _stop.raised is None
        if first:
            _stop.raised = signum
    # Tell the watchdog directly too, in case something replaced the wakeup fd (an asyncio loop in the
    # main thread does): `_SEEN + signum` starts the stop but is never taken for a second signal.
    if _stop.sockets is not None:
        with contextlib.suppress(OSError):
            _stop.sockets[1].send(bytes([_SEEN + signum if first else signum]))
    if first:
        raise KeyboardInterrupt


def _watch(reader: socket.socket) -> None:
    """Reads the signal numbers written to the wakeup fd; after the grace, the hard stop."""
    deadline: float | None = None
    while True:
        try:
            data = reader.recv(64)
        except TimeoutError:
            data = b""
        now = time.monotonic()
        for byte in data:
            signum = byte - _SEEN if byte > _SEEN else byte
            if signum not in _SIGNALS:
                continue
            if _stop.signal is None:
                _stop.signal = signum
                deadline = now + GRACE_S
                _say(
                    f"stopping on {signal.Signals(signum).name}: outputs and checkpoints written so far "
                    "are kept; run the same command again to resume"
                )
            elif byte == signal.SIGINT:
                deadline = now  # a second Ctrl-C: no more grace
        if deadline is not None and now >= deadline:
            hard_stop(_stop.signal or signal.SIGTERM)


def stop_children(timeout: float = CHILD_GRACE_S) -> None:
    """Terminate every process this one started (and theirs), then kill the ones still there."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=timeout)


def hard_stop(signum: int) -> None:
    """Children stopped, then exit now with the conventional status (143 for SIGTERM, 130 for SIGINT),
    without waiting for the threads still blocked."""
    stop_children()
    _say(f"stopped on {signal.Signals(signum).name} (threads still waiting were abandoned)")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(128 + signum)


def exit_code() -> int:
    """The status a command interrupted by a signal ends with."""
    return 128 + (received() or signal.SIGINT)


def _say(text: str) -> None:
    with contextlib.suppress(Exception):
        print(text, file=sys.stderr, flush=True)
