"""How a job's processes end, whatever ends them.

- ``interrupt_on_signals``: SIGTERM and SIGHUP raise :class:`Terminated` (a
  ``KeyboardInterrupt``, as SIGINT does), so that a job cleans up on each of them: its
  results folder is not committed and its MLflow runs end ``KILLED``.
- ``watch_parent``: a stage stops (SIGTERM to itself) when the process that started it
  ends, so that it never outlives DVC, which dies of SIGTERM and ``kill -9`` without
  passing them on.
- ``owner`` / ``owner_alive``: who owns a ``RUNNING`` run (host, pid and the process's
  start time, so a recycled pid is not mistaken for the owner), so that the next job
  can close the runs of a process that was killed outright (``kill -9``, an OOM kill).

Processes are looked at with psutil, not through ``/proc``: the same code on any system.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import psutil

# the terminating signals this system has (Windows has no SIGHUP)
CAUGHT = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


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


def report_interrupt(exc: KeyboardInterrupt, what: str) -> int:
    """Say on stderr, in one line, that a signal (``exc``) stopped this process and what
    became of its work; return the shell's exit code (130 for SIGINT, 143 for SIGTERM)."""
    print(f"regstudy: interrupted ({exc or 'SIGINT'}); {what}", file=sys.stderr, flush=True)
    return exit_code(exc)


# The shells DVC may run a stage's command through (``$SHELL -c``); dash does not exec the
# command, so it stays between DVC and the stage, and outlives DVC.
SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "fish"})


def watch_parent(interval: float = 0.2) -> None:
    """SIGTERM to this process, which then stops as on any SIGTERM, once the process that
    started it has ended: the parent, or the parent's parent where the parent is a shell
    running this command (``$SHELL -c``). DVC dies of SIGTERM (``timeout``, a CI cancel,
    ``kill PID``) and of ``kill -9`` without passing them on to its stage."""
    parent, name = psutil.Process().parent(), "?"
    if parent is None:
        return
    try:
        name = parent.name()
        if name in SHELLS and "-c" in parent.cmdline():
            parent = parent.parent() or parent
            name = parent.name()
    except psutil.AccessDenied:  # not ours to look at: not watched
        return
    except psutil.NoSuchProcess:  # it has just ended: the watch says so at once
        pass

    def watch() -> None:
        while _running(parent):
            time.sleep(interval)
        print(f"regstudy: stopping: {name} (pid {parent.pid}), which started this process, has ended",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="regstudy-watch-parent", daemon=True).start()


def _running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs: its pid not reused (psutil checks its start time),
    and not a zombie (dead, not yet reaped)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _process(pid: int) -> psutil.Process | None:
    """Process ``pid`` while it runs, else None."""
    try:
        process = psutil.Process(pid)
    except psutil.Error:
        return None
    return process if _running(process) else None


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if it is gone."""
    process = _process(pid)
    try:
        return None if process is None else process.create_time()
    except psutil.Error:
        return None


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    return _process(pid) is not None


# How far apart two readings of a process's start time may be: on Linux it is counted from
# the boot time, which moves (by whole seconds) when the wall clock is set. A recycled pid
# is a process started long after the owner.
START_TOLERANCE = 2.0


def owner(pid: int | None = None) -> str:
    """``host:pid:start``: this process (or ``pid``), told apart from a later one with its pid."""
    pid = os.getpid() if pid is None else pid
    start = _start_time(pid)
    return f"{socket.gethostname()}:{pid}:{'?' if start is None else f'{start:.2f}'}"


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
    now = _start_time(pid)
    try:
        return now is not None and abs(now - float(start)) < START_TOLERANCE
    except ValueError:  # "?": its start was not known
        return now is not None
