"""Python children for the tests, forked from a warm interpreter instead of started cold.

A test that starts ``python -c CODE``, ``python SCRIPT`` or ``python -m MODULE`` paid 0.1-0.2 s
of CPU before the child ran a line of its own: the interpreter, then importing pfdb, peewee,
peewee-migrate and psycopg2. About 170 such children were some 20 CPU-seconds of a run on two
cores. ``Popen`` and ``run`` here fork them from a *zygote*: one Python per test process that
has imported those modules and holds no connection, thread or open file of its own (importing
pfdb reads no environment and opens nothing: pfdb/__init__.py). Each child is still a process
of its own, with its own pid, connections, locks and signals, the environment, working
directory and standard streams it is given, and the exit code Python would give it (its
interpreter shuts down as usual: atexit handlers, buffers flushed).

What a zygote cannot stand in for: a test about start-up itself (bin/pfdb, the console script,
an installed wheel, another interpreter, what gets imported when, a umask set by a shell) starts
a real interpreter with ``subprocess``. So does one that needs what a child takes from the
zygote, not from the test: the locale, PYTHONHASHSEED, PYTHONWARNINGS and TZ as read at
start-up, the umask and resource limits when the zygote started, and the preloaded modules from
this checkout whatever PYTHONPATH says.
"""

from __future__ import annotations

import io
import json
import locale
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPE, DEVNULL, STDOUT = subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT
CompletedProcess, TimeoutExpired, CalledProcessError = (
    subprocess.CompletedProcess,
    subprocess.TimeoutExpired,
    subprocess.CalledProcessError,
)

_START = subprocess.Popen

# What every child would import anyway, so the zygote imports it once.
PRELOAD = (
    "pfdb",
    "pfdb.cli",
    "pfdb.feeds",
    "pfdb.migrations",
    "pfdb.maintenance",
    "pfdb.categories",
    "peewee_migrate",
    "peewee_migrate.auto",
    "psycopg2",
    "psycopg2.extras",
    "sqlite3",
    "csv",
    "json",
    "runpy",
    "textwrap",
)

# The zygote: imports PRELOAD, then forks one child per request read from the control socket.
# A request is JSON (argv, env, cwd) with four descriptors: the child's stdin, stdout and
# stderr, and a socket on which the zygote reports the child's pid, then its wait status.
ZYGOTE = r"""
import gc, importlib, io, json, os, select, signal, socket, sys, types

control = socket.socket(fileno=int(sys.argv[1]))
for name in sys.argv[2:]:
    importlib.import_module(name)
# What is imported now is never garbage: a child's collections, and its interpreter's shutdown,
# skip it instead of touching (and so copying) every page of it (60 -> 20 ms of CPU a child).
gc.freeze()
ZYGOTE_PATH = list(sys.path)

# Ctrl-C is the test process's to handle: the zygote ends when its control socket closes.
signal.signal(signal.SIGINT, signal.SIG_IGN)
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *_: None)
children = {}  # pid -> status socket


def reap():
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sock = children.pop(pid, None)
        if sock is not None:
            try:
                sock.send(b"exit %d" % status)
            except OSError:
                pass
            sock.close()


def serve():
    # Returns only in a child, with what it is to run.
    while True:
        ready, _, _ = select.select([control, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            reap()
        if control not in ready:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 20, 4)
        except OSError:
            message, fds = b"", []
        if not message:
            sys.exit(0)  # the test process is gone
        status = socket.socket(fileno=fds[3])
        try:
            request = json.loads(message)
            pid = os.fork()
        except Exception as exc:  # one bad request (or no memory to fork) fails that request only
            status.send(b"error " + repr(exc).encode()[:900])
            status.close()
            for fd in fds[:3]:
                os.close(fd)
            continue
        if pid:
            for fd in fds[:3]:
                os.close(fd)
            children[pid] = status
            try:
                status.send(b"pid %d" % pid)
            except OSError:
                pass
            reap()
            continue
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # Python's own Ctrl-C handler, even where the suite runs with SIGINT ignored (nohup, a
        # background job), which a started interpreter would inherit.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sock in [control, status, *children.values()]:
            sock.close()
        os.close(wake_r)
        os.close(wake_w)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in set(fds[:3]):
            if fd > 2:
                os.close(fd)
        return request


def streams(env):
    # As the interpreter makes them: newline "\n", PYTHONIOENCODING and PYTHONUNBUFFERED from
    # the child's environment. What else an interpreter reads at start-up (the locale,
    # PYTHONHASHSEED, PYTHONWARNINGS, TZ) is the zygote's: such a test starts a real interpreter.
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    encoding, _, errors = env.get("PYTHONIOENCODING", "").partition(":")
    made = []
    for fd, like in ((0, sys.__stdin__), (1, sys.__stdout__), (2, sys.__stderr__)):
        writing = fd != 0
        raw = io.FileIO(fd, "w" if writing else "r", closefd=False)
        buffered = raw if (writing and unbuffered) else (io.BufferedWriter(raw) if writing else io.BufferedReader(raw))
        made.append(io.TextIOWrapper(
            buffered, encoding=encoding or like.encoding, errors=errors or like.errors, newline="\n",
            line_buffering=writing and (fd == 2 or os.isatty(fd)), write_through=writing and unbuffered,
        ))
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__ = made


request = serve()
argv, env = request["argv"], request["env"]
os.chdir(request["cwd"])
os.environ.clear()
os.environ.update(env)
streams(env)
wanted = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
rest = [p for p in ZYGOTE_PATH[1:] if p not in wanted]  # this checkout's pfdb stays first
first = {"-c": "", "-m": os.getcwd()}.get(argv[0], os.path.dirname(os.path.abspath(argv[0])))
sys.path[:] = [first, *wanted, *rest]
main = types.ModuleType("__main__")
sys.modules["__main__"] = main
del request, env, wanted, rest, first
if argv[0] == "-m":
    import runpy
    sys.argv = [*argv[1:]]
    runpy._run_module_as_main(sys.argv[0])
else:
    sys.argv = ["-c" if argv[0] == "-c" else argv[0], *argv[2 if argv[0] == "-c" else 1:]]
    source = argv[1] if argv[0] == "-c" else open(argv[0], "rb").read()
    if argv[0] != "-c":
        main.__file__ = os.path.abspath(argv[0])
    main.__dict__["__builtins__"] = __builtins__
    exec(compile(source, "<string>" if argv[0] == "-c" else argv[0], "exec"), main.__dict__)
"""


class _Zygote:
    """One per test process, started on first use; a new one if it died."""

    _lock = threading.Lock()
    _current: _Zygote | None = None

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), *env.get("PYTHONPATH", "").split(os.pathsep)] if p)
        self.process = _START(  # not subprocess.Popen itself: a test may spy on that
            [sys.executable, "-c", ZYGOTE, str(theirs.fileno()), *PRELOAD],
            env=env,
            cwd=ROOT,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        theirs.close()
        self.control = ours

    @classmethod
    def get(cls) -> _Zygote:
        with cls._lock:
            if cls._current is None or cls._current.process.poll() is not None:
                cls._current = cls()
            return cls._current

    def fork(self, request: dict, fds: list[int]) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._lock:
                socket.send_fds(self.control, [json.dumps(request).encode()], [*fds, theirs.fileno()])
        finally:
            theirs.close()
        return ours


def _argv(args) -> list[str]:
    """The arguments after the interpreter in ``[python, -c CODE | -m MODULE | SCRIPT, ...]``."""
    args = [os.fspath(a) for a in args]
    if len(args) < 2 or args[0] != sys.executable:
        raise ValueError(f"tests.processes runs this Python only ([sys.executable, ...]), not {args[:2]!r}")
    if args[1].startswith("-") and args[1] not in ("-c", "-m"):
        raise ValueError(f"tests.processes knows -c and -m only, not {args[1]!r}: use subprocess")
    return args[1:]


class Popen:
    """A forked child with ``subprocess.Popen``'s surface for what the tests use."""

    def __init__(self, args, *, stdin=None, stdout=None, stderr=None, env=None, cwd=None, text=False, bufsize=-1):
        argv = _argv(args)
        self.args = list(args)
        self.returncode: int | None = None
        self.text = text
        self.stdin = self.stdout = self.stderr = None
        self._readers: list[threading.Thread] | None = None
        self._output: dict[str, str | bytes] = {}
        send, ours_for_them = [], []  # what the child gets; which of those we made (closed once sent)
        try:
            for fd, how in ((0, stdin), (1, stdout), (2, stderr)):
                if how == STDOUT and fd == 2:
                    send.append(send[1])
                elif how == PIPE:
                    r, w = os.pipe()
                    mine, theirs = (w, r) if fd == 0 else (r, w)
                    ours_for_them.append(theirs)
                    send.append(theirs)
                    setattr(self, ("stdin", "stdout", "stderr")[fd], self._wrap(mine, fd == 0, bufsize))
                elif how == DEVNULL:
                    ours_for_them.append(os.open(os.devnull, os.O_RDWR))
                    send.append(ours_for_them[-1])
                elif how is None:
                    send.append(fd)  # inherited, as subprocess does
                else:
                    send.append(how if isinstance(how, int) else how.fileno())
            request = {
                "argv": argv,
                "env": dict(os.environ if env is None else env),
                "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
            }
            self._status = _Zygote.get().fork(request, send)
            for fd in ours_for_them:  # the zygote holds its own copies now
                os.close(fd)
            ours_for_them.clear()
            self.pid = int(self._receive(None).split()[1])
        except BaseException:
            for f in (self.stdin, self.stdout, self.stderr, getattr(self, "_status", None)):
                if f is not None:
                    f.close()
            raise
        finally:
            for fd in ours_for_them:
                os.close(fd)

    def _wrap(self, fd: int, writing: bool, bufsize: int):
        raw = open(fd, "wb" if writing else "rb", buffering=bufsize)
        if not self.text:
            return raw
        return io.TextIOWrapper(raw, encoding=locale.getpreferredencoding(False), write_through=writing)

    def _receive(self, timeout: float | None) -> bytes:
        ready, _, _ = select.select([self._status], [], [], timeout)
        if not ready:
            raise TimeoutExpired(self.args, timeout)
        message = self._status.recv(1024)
        if not message or message.startswith(b"error "):
            raise RuntimeError(
                f"the test zygote could not run {self.args[:3]!r}: {message[6:].decode() or 'it is gone'}"
            )
        return message

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self._finish(self._receive(0))
            except TimeoutExpired:
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._finish(self._receive(timeout))
        return self.returncode

    def _finish(self, message: bytes) -> None:
        self.returncode = os.waitstatus_to_exitcode(int(message.split()[1]))
        self._status.close()

    def communicate(self, input=None, timeout: float | None = None):
        """Feed ``input``, read both outputs to their end, wait; after a TimeoutExpired it can be called again."""
        if input and self.stdin is None:
            raise ValueError("communicate(input) needs stdin=PIPE")
        if self._readers is None:  # the first call starts them; a call after a timeout waits for the same
            self._readers = []
            if self.stdin is not None:
                self._readers.append(threading.Thread(target=self._feed, args=(input,), daemon=True))
            for name in ("stdout", "stderr"):
                if getattr(self, name) is not None:
                    self._readers.append(threading.Thread(target=self._drain, args=(name,), daemon=True))
            for thread in self._readers:
                thread.start()
        deadline = None if timeout is None else _now() + timeout
        for thread in self._readers:
            thread.join(None if deadline is None else max(0.0, deadline - _now()))
            if thread.is_alive():
                raise TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - _now()))
        for name in ("stdout", "stderr"):
            if getattr(self, name) is not None:
                getattr(self, name).close()
        return self._output.get("stdout"), self._output.get("stderr")

    def _feed(self, input) -> None:
        try:
            if input:
                self.stdin.write(input)
            self.stdin.close()
        except BrokenPipeError:
            pass

    def _drain(self, name: str) -> None:
        # The stream itself, text or bytes: what a readline() before left in its buffer is kept.
        self._output[name] = getattr(self, name).read()

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # it ended since: as subprocess, nothing to signal
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in (self.stdout, self.stderr, self.stdin):
            if f is not None:
                try:
                    f.close()
                except BrokenPipeError:
                    pass
        self.wait()


def _now() -> float:
    import time

    return time.monotonic()


def run(
    args,
    *,
    input=None,
    capture_output=False,
    timeout=None,
    check=False,
    text=False,
    stdin=None,
    stdout=None,
    stderr=None,
    env=None,
    cwd=None,
) -> CompletedProcess:
    """``subprocess.run`` for a forked child."""
    if capture_output:
        stdout = stderr = PIPE
    if input is not None:
        stdin = PIPE
    with Popen(args, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd, text=text) as child:
        try:
            out, err = child.communicate(input, timeout=timeout)
        except TimeoutExpired:
            child.kill()
            child.wait()
            raise
    result = CompletedProcess(child.args, child.returncode, out, err)
    if check:
        result.check_returncode()
    return result
