"""How a job's processes end, whatever ends them.

- ``interrupt_on_signals``: SIGTERM and SIGHUP raise :class:`Terminated` (a
  ``KeyboardInterrupt``, as SIGINT does), so that a job cleans up on each of them: its
  results folder is not committed and its MLflow runs end ``KILLED``.
- ``owner`` / ``owner_alive``: who owns a ``RUNNING`` run (host, pid and the process's
  start time, so a recycled pid is not mistaken for the owner), so that the next job
  can close the runs of a process that was killed outright (``kill -9``, an OOM kill).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The process got a terminating signal (its number is ``signum``)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum


received: int | None = None  # the last signal _raise turned into Terminated


def _raise(signum, frame):
    global received
    received = signum
    raise Terminated(signum)


def reraise_interrupt() -> None:
    """Lightning turns an interrupt during ``fit`` into ``sys.exit(1)`` (and ignores SIGINT
    from then on): raise it again as the :class:`Terminated` it was, with our handlers back."""
    interrupt_on_signals()
    raise Terminated(received or signal.SIGINT)


def interrupt_on_signals() -> None:
    """From now on, SIGINT, SIGTERM and SIGHUP raise :class:`Terminated` (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        for signum in CAUGHT:
            signal.signal(signum, _raise)


def exit_code(exc: BaseException) -> int:
    """The shell's exit code of a process ended by ``exc``: 128 + signal for a signal."""
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    return 128 + signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat``), or None
    if it is gone (a zombie, dead but not yet reaped, is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]  # state; start time is field 22


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    return _start_time(pid) is not None


def owner(pid: int | None = None) -> str:
    """``host:pid:start``: this process (or ``pid``), told apart from a later one with its pid."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def owner_alive(tag: str) -> bool:
    """Whether the process an :func:`owner` tag names still runs. A process on another
    host cannot be checked from here: it counts as alive."""
    try:
        host, pid, start = tag.rsplit(":", 2)
        pid = int(pid)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    return _start_time(pid) == start
