"""Warm start for DVC train stages: fork each stage from a process that imported everything.

Importing torch, Lightning, MLflow and pandas takes about 5 s, and the study has one
train stage per dataset x family (44 by default), each a new process started by
`dvc repro`. So a stage's command is a thin client (standard library only): it asks a
local server, which has done those imports once, to fork a child that runs the stage
with the client's arguments, working directory, environment, stdout and stderr. The
client relays signals to the child and exits with its exit code, so to DVC the stage
looks like any other command; a signal stops every job of the client, queued ones
included (:func:`run_many`).

- The server is started by the first client that finds none, and exits after
  ``REGSTUDY_WARM_IDLE`` seconds (default 60) without a job.
- A server serves only the code it imported: its socket's name holds a hash of the
  interpreter and of the package's source files (path, size, mtime).
- Each job is a fresh fork: nothing one job does (seeds, threads, MLflow or Hydra
  state) can reach the next.
- ``REGSTUDY_WARM=0`` runs the stage in the client's own process instead; so does any
  system but Linux (:func:`_warm_on`).
- A job may train on a GPU: the server imports torch but never initialises CUDA (the
  device is looked for through NVML, :func:`regstudy.compute.gpu_device`), so each
  forked job starts CUDA itself.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
PRELOAD = ("regstudy.job", "regstudy.stages.train", "mlflow.store.tracking.sqlalchemy_store",
           "alembic", "matplotlib.pyplot")
# One-time costs paid here once, not in every job: MLflow's, and Hydra's plugin scan at the first compose.
WARM_UP = ("regstudy.tracking:warm_up", "regstudy.stages.train:warm_up")
HEADER = struct.Struct("!I")


def _state_dir() -> Path:
    d = Path(os.environ.get("TMPDIR", "/tmp")) / f"regstudy-warm-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def code_hash() -> str:
    """Changes whenever the interpreter, any source file or compiled extension of the
    package, or the kernel path asked of torch (:mod:`regstudy.kernels`, fixed at the
    server's import) changes."""
    from .kernels import KERNEL_ENV

    h = hashlib.sha256(sys.executable.encode())
    h.update(repr([os.environ.get(key) for key in KERNEL_ENV]).encode())
    for path in sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.so")]):
        st = path.stat()
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def socket_path() -> Path:
    return _state_dir() / f"{code_hash()}.sock"


def _warm_on() -> bool:
    """Whether stages fork their jobs from the warm server: on Linux (macOS forbids fork
    after the system frameworks torch loads; Windows has no fork), unless REGSTUDY_WARM=0.
    Without it each job runs in the stage's process, the same numbers, slower to start."""
    return (os.environ.get("REGSTUDY_WARM", "1") != "0" and sys.platform.startswith("linux")
            and hasattr(socket, "send_fds"))


def run(target: str, argv: list[str]) -> int:
    """Run ``target`` (``"module:function"``, called with ``argv``) in a warm fork."""
    return run_many(target, [argv], workers=1)[0]


# Seconds a stopped job has to end its runs and exit before its process group is killed
# (the next job then ends the runs it left RUNNING: lifecycle.owner_alive).
STOP_GRACE = 30.0


def run_many(target: str, argvs: list[list[str]], workers: int = 2) -> list[int]:
    """Run ``target`` once per argument list, ``workers`` warm forks at a time; return the
    exit codes in order.

    Interruption is total: SIGINT, SIGTERM or SIGHUP (or, with
    :func:`~regstudy.lifecycle.watch_parent`, the end of the process that started this one)
    reaches every running job, no queued job starts, and once the running ones have ended
    (their runs KILLED, their results not committed) :class:`~regstudy.lifecycle.Terminated`
    is raised here.
    """
    from .lifecycle import CAUGHT, Terminated, interrupt_on_signals

    path = socket_path() if _warm_on() else None
    first = path and (_connect(path) or _start_server(path))
    if not first:
        if path:
            print("regstudy: warm server unavailable, running in this process", file=sys.stderr)
        interrupt_on_signals()  # a signal raises Terminated out of the job and out of this loop
        return [_call(target, argv) for argv in argvs]
    import threading
    from concurrent.futures import ThreadPoolExecutor

    connections, running, stopped = [first], set(), []
    lock = threading.RLock()  # a second signal's handler may run inside the first's
    overdue = threading.Timer(STOP_GRACE, lambda: kill(signal.SIGKILL))
    overdue.daemon = True

    def stop(signum, frame):
        with lock:
            if not stopped:
                overdue.start()
            stopped.append(signum)
        kill(signum)

    def kill(signum: int) -> None:
        with lock:
            for pid in running:
                _signal(pid, signum)

    def one(argv: list[str]) -> int | None:
        with lock:
            if stopped:
                return None  # queued when the stage was stopped: never starts
            sock = connections.pop() if connections else None
        for _ in range(2):  # a server that ended as it accepted us started nothing: once more
            sock = sock or _connect(path) or _start_server(path)
            if sock is None:
                print("regstudy: the warm server is gone and could not be started again", file=sys.stderr)
                return 1
            try:
                return exchange(sock, argv)
            except NotStarted:
                sock = None
                with lock:
                    if stopped:
                        return None
        print("regstudy: the warm server ended the job without starting it", file=sys.stderr)
        return 1

    def exchange(sock: socket.socket, argv: list[str]) -> int:
        pids = []

        def started(pid: int) -> None:
            with lock:
                pids.append(pid)
                running.add(pid)
                if stopped:  # stopped while the server forked it
                    _signal(pid, stopped[-1])

        with sock:
            try:
                return _exchange(sock, target, argv, started)
            finally:
                with lock:
                    running.difference_update(pids)

    for signum in CAUGHT:
        signal.signal(signum, stop)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        codes = list(pool.map(one, argvs))
    overdue.cancel()
    for sock in connections:  # not taken: stopped before the first job
        sock.close()
    if stopped:
        raise Terminated(stopped[0])
    return codes


def _signal(pid: int, signum: int) -> None:
    """``signum`` to a job; SIGKILL to its process group (the job leads it, with its tracking
    process)."""
    try:
        if signum == signal.SIGKILL:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:  # it has just ended
        pass


def _resolve(target: str):
    """``"package.module:function"`` -> (the module, the function)."""
    module, function = target.split(":")
    mod = importlib.import_module(module)
    return mod, getattr(mod, function)


def _call(target: str, argv: list[str]) -> int:
    """Call ``target`` with ``argv``; a signal raises :class:`~regstudy.lifecycle.Terminated`."""
    from .lifecycle import interrupt_on_signals

    interrupt_on_signals()
    mod, function = _resolve(target)
    sys.argv = [mod.__file__, *argv]  # as `python -m <module>` has it (MLflow's source tag reads it)
    return int(function(argv) or 0)


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except OSError:
        sock.close()
        return None


def _start_server(path: Path, timeout: float | None = 120.0) -> socket.socket | None:
    """Start a server for ``path`` (one at a time, under a lock), unless one is already
    starting, and connect to it; ``timeout=None``: return at once, unconnected."""
    import fcntl  # POSIX only, as the server is (_warm_on): this module imports anywhere

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _connect(path)  # started meanwhile by another client
        if sock is not None:
            return sock
        spawned = not _starting(path)
        if spawned:
            _spawn(path)
        if timeout is None:
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock = _connect(path)
            if sock is not None:
                return sock
            if not _starting(path):
                if spawned:  # ours died during its start
                    return None
                _spawn(path)  # the one seen alive was ending (idle), not starting
                spawned = True
            time.sleep(0.05)
    return None


def prestart() -> None:
    """Start a server in the background, if none runs or is starting, and return at once:
    a stage that runs before the train stages (generate) calls it, so that the server's
    imports (about 5 s) overlap that stage instead of delaying the first train stage."""
    if not _warm_on():
        return
    sock = _start_server(socket_path(), timeout=None)
    if sock is not None:
        sock.close()


def _spawn(path: Path) -> None:
    """Start the server process for ``path``, detached; its pid goes to ``<path>.pid``."""
    log = open(path.with_suffix(".log"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "regstudy.warm", str(path)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, start_new_session=True, close_fds=True)
    path.with_suffix(".pid").write_text(str(proc.pid))


def _starting(path: Path) -> bool:
    """Whether the server last spawned for ``path`` is still alive (starting, or serving)."""
    import psutil

    try:
        pid = int(path.with_suffix(".pid").read_text())
        command = psutil.Process(pid).cmdline()
    except (OSError, ValueError, psutil.Error):
        return False
    return "regstudy.warm" in command and str(path) in command  # not a recycled pid


class NotStarted(ConnectionError):
    """The server closed the connection before forking the job (it was ending)."""


def _exchange(sock: socket.socket, target: str, argv: list[str], started) -> int:
    """Send one job request; call ``started(pid)`` when forked; return its exit code.
    NotStarted where the server closed the connection before forking it."""
    request = json.dumps({"target": target, "argv": argv, "cwd": os.getcwd(),
                          "env": dict(os.environ)}).encode()
    sys.stdout.flush()
    sys.stderr.flush()
    pid_seen = False
    try:
        socket.send_fds(sock, [HEADER.pack(len(request))], [1, 2])
        sock.sendall(request)
        for line in sock.makefile("r"):
            kind, value = line.split()
            if kind == "pid":
                pid_seen = True
                started(int(value))
            elif kind == "exit":
                return int(value)
    except (BrokenPipeError, ConnectionResetError):
        if not pid_seen:
            raise NotStarted from None
        raise
    if not pid_seen:
        raise NotStarted
    print("regstudy: the warm server ended the job without an exit code", file=sys.stderr)
    return 1


# --- the server ---


def serve(path: Path) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    for target in WARM_UP:
        _resolve(target)[1]()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    listener.bind(str(path))
    listener.listen(8)
    idle = float(os.environ.get("REGSTUDY_WARM_IDLE", "60"))
    jobs: dict[int, socket.socket] = {}
    exits: dict[int, int] = {}  # pid -> a pidfd, readable once the job has ended
    orphans: set[int] = set()  # jobs whose client died, already told to stop
    last = time.monotonic()
    try:
        while jobs or time.monotonic() - last < idle:
            watched = [conn for pid, conn in jobs.items() if pid not in orphans]
            # A job's end wakes the loop at once (its pidfd); the timeout is a fallback.
            ready, _, _ = select.select([listener, *watched, *exits.values()], [], [], 0.05)
            if listener in ready:
                conn, _ = listener.accept()
                pid = _fork_job(conn, listener)
                if pid:
                    jobs[pid] = conn
                    fd = _pidfd(pid)
                    if fd is not None:
                        exits[pid] = fd
            for pid, conn in list(jobs.items()):
                if conn in ready and not _peek(conn):  # the client is gone (killed): so is its job
                    _terminate(pid)
                    orphans.add(pid)
            for pid, conn in list(jobs.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
                    _send(conn, f"exit {code if code >= 0 else 128 - code}\n")
                    conn.close()
                    del jobs[pid]
                    if pid in exits:
                        os.close(exits.pop(pid))
                    orphans.discard(pid)
                    last = time.monotonic()
    finally:
        path.unlink(missing_ok=True)


def _pidfd(pid: int) -> int | None:
    """A file descriptor that becomes readable when child ``pid`` ends (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _peek(conn: socket.socket) -> bool:
    """False once the client has closed its end (the client never writes after its request)."""
    try:
        return bool(conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return True
    except OSError:
        return False


def _terminate(pid: int) -> None:
    """SIGTERM to a job whose client died: it ends its runs KILLED and commits nothing."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _send(conn: socket.socket, text: str) -> None:
    try:
        conn.sendall(text.encode())
    except OSError:
        pass


def _fork_job(conn: socket.socket, listener: socket.socket) -> int | None:
    """Receive one request and fork its job; return the child's pid (None if malformed)."""
    try:
        head, fds, _, _ = socket.recv_fds(conn, HEADER.size, 2)
        (size,) = HEADER.unpack(head)
        body = b""
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise OSError("short request")
            body += chunk
        request = json.loads(body)
    except (OSError, ValueError, struct.error):
        conn.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        listener.close()
        conn.close()
        os.setsid()
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        from .lifecycle import report_interrupt

        code = 1
        try:
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            code = _call(request["target"], request["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except KeyboardInterrupt as e:
            code = report_interrupt(e, "the job's runs end KILLED")
        except BaseException:  # noqa: BLE001 - reported like an uncaught exception
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    for fd in fds:
        os.close(fd)
    _send(conn, f"pid {pid}\n")
    return pid


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
