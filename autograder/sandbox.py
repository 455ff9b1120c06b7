"""Running an untrusted Python worker (student code) where it can do no harm.

``run_worker`` runs ``python argv...`` and reports what happened; it never interprets the
worker's results. The worker is forked, warm, from this process's zygote (zygote.py: a
process that imported torch and the worker's modules once, and never holds reference code,
expected values, the secret or any submission), into a sandbox made for this run alone.
The defences, each applied when this machine allows it and listed in
``SandboxResult.defences`` (the ones that could not be applied, with the reason, in
``SandboxResult.missing_defences``):

* bubblewrap (``bwrap``), started for each run: new user, pid, network, ipc, uts and cgroup
  namespaces, uid/gid 65534 inside, no capabilities, no nested user namespaces, and a
  filesystem that holds only the system directories, the Python installation, the caller's
  read-only directories and the read-write ``workdir``. Its pid 1 is a non-dumpable holder
  that does nothing; the zygote's child (the keeper) joins every namespace of it through a
  pidfd, drops every capability, and forks the worker, the run's first process there;
* rlimits set by the keeper: CPU time, data segment (memory), file size, core dumps (and the
  process count when not root: root is exempt from RLIMIT_NPROC);
* a per-run cgroup v1 in the ``pids`` controller (the fork-bomb defence that also works for
  root) and in the ``memory`` controller (the limit that counts every kind of memory), which
  bwrap, the holder, the keeper and the worker all join;
* a wall clock: on expiry the worker's process group, the cgroups' members and, under bwrap,
  the whole pid namespace are killed; stdout and stderr are read concurrently and only the
  first ``output_bytes`` are kept.

Without bwrap the worker only runs when the caller passes ``allow_unsandboxed=True``.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import functools
import glob
import itertools
import json
import os
import resource
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SANDBOX_UID = 65534  # "nobody": the identity the worker has inside the sandbox
CGROUP_ROOT = Path("/sys/fs/cgroup")  # cgroup v1 controllers are mounted below it
OUTPUT_KILL_FACTOR = 16  # a worker that writes this many times output_bytes is killed
_READ_CHUNK = 1 << 16
_POLL_SECONDS = 0.05  # how often the reading loop checks whether the worker has exited
_EXIT_GRACE_SECONDS = 1.0  # how long to drain pipes held open by leftovers after the worker exits
_run_ids = itertools.count()
# The killed_reason of a run whose worker was found stopped (SIGSTOP, SIGTSTP...): only code
# in the sandbox can have sent the signal, and a stopped worker enforces no limit on it.
WORKER_STOPPED = "the worker was stopped by a process of the sandbox"
# How long a zygote may take to import torch and warm up, and a sandbox to start, on a
# loaded machine; past it the run fails (never a student's fault: the caller says so).
ZYGOTE_START_SECONDS = 300
HOLDER_START_SECONDS = 120
ZYGOTE_FILE = Path(__file__).resolve().parent / "zygote.py"

# Namespaces and identity under bwrap. --unshare-user is explicit because bwrap run by root
# would otherwise skip the user namespace (and run the worker as real root).
_BWRAP_ISOLATION = [
    "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
    "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--hostname", "sandbox",
]
# How SandboxResult.defences names what bwrap applies.
_BWRAP_DEFENCE = (f"bwrap: user, pid, net, ipc, uts and cgroup namespaces, uid {SANDBOX_UID}, "
                  "no capabilities, minimal read-only filesystem")
# Files of /etc that the dynamic loader and Python read; nothing else of /etc is visible.
_ETC_FILES = ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"]
_SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
_BWRAP_ENV = {"PATH": "/usr/bin:/bin"}

# The sandbox's pid 1, the process whose namespaces the keeper joins: it makes itself
# non-dumpable (no process of the sandbox may trace it or open its descriptors through /proc),
# says so, keeps nothing but /dev/null, and waits to be killed. As the pid namespace's init
# it ignores every signal sent from inside, so no unit can end or stop it.
_HOLDER = """\
import ctypes, os, signal
libc = ctypes.CDLL(None)
if libc.prctl(4, 0, 0, 0, 0) or libc.prctl(3, 0, 0, 0, 0):
    os._exit(125)
# As zygote.set_process_title: what its command line shows is a name, not the paths above.
fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
start, end = int(fields[45]), int(fields[46])
ctypes.memmove(start, b"captioning-sandbox".ljust(end - start, b"\\0")[:end - start], end - start)
null = os.open("/dev/null", os.O_RDWR)
os.write(1, b"ready\\n")
for fd in (0, 1, 2):
    os.dup2(null, fd)
os.closerange(3, 1 << 16)
while True:
    signal.pause()
"""


@dataclass(frozen=True)
class Limits:
    """What one worker run may use; the defaults are a grading sandbox's (submission_sandbox.py sets
    its wall clock from the units it runs)."""

    wall_seconds: float = 120.0  # whole run; then everything the worker started is killed
    cpu_seconds: int = 900  # RLIMIT_CPU, per process (a unit's own limit is far lower)
    memory_bytes: int = 3 << 30  # RLIMIT_DATA per process, and the memory cgroup's limit
    max_processes: int = 64  # tasks (processes and threads!) of the worker: pids.max
    file_size_bytes: int = 64 << 20  # RLIMIT_FSIZE: the largest file the worker can write
    output_bytes: int = 64 << 10  # stdout + stderr kept; the run is killed at 16 times this
    tmp_bytes: int = 256 << 20  # size of the sandbox's private /tmp and /dev/shm (tmpfs)


@dataclass
class SandboxResult:
    """What happened to one worker run; interpreting it is the caller's job."""

    mode: str  # "bwrap" or "unsandboxed"
    returncode: int | None  # as subprocess reports it: -N when killed by signal N
    timed_out: bool
    killed_reason: str | None  # "wall-clock limit", "output limit", "memory", ...
    stdout: str
    stderr: str
    output_truncated: bool
    wall_seconds: float
    defences: list[str] = field(default_factory=list)  # those active during this run
    missing_defences: list[str] = field(default_factory=list)  # those unavailable, and why


class SandboxUnavailable(RuntimeError):
    """bwrap cannot isolate a worker here and the caller did not allow running unsandboxed."""


@functools.lru_cache(maxsize=1)
def _bwrap_setup() -> tuple[str | None, list[str], str]:
    """(bwrap path or None, isolation flags that work here, explanation)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, [], "bwrap (bubblewrap) is not installed"
    # --disable-userns (bwrap >= 0.8) stops the worker from making nested user namespaces.
    for flags in ([*_BWRAP_ISOLATION, "--disable-userns"], _BWRAP_ISOLATION):
        probe = [bwrap, *flags, "--ro-bind", "/", "/", "--proc", "/proc", "true"]
        try:
            done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, [], f"bwrap failed to start: {exc}"
        if done.returncode == 0:
            return bwrap, flags, f"{bwrap} isolates workers here"
    why = done.stderr.strip() or f"exit status {done.returncode}"
    return None, [], (f"bwrap cannot create its namespaces here ({why}); user namespaces may be "
                      "disabled (sysctl user.max_user_namespaces, "
                      "kernel.apparmor_restrict_unprivileged_userns)")


def sandbox_status() -> tuple[bool, str]:
    """Whether bwrap can isolate a worker on this machine, and why not."""
    bwrap, _, why = _bwrap_setup()
    return bwrap is not None, why


def run_worker(argv: list[str], *, workdir: Path | None = None, readonly_dirs=(),
               readonly_files=(), limits: Limits = Limits(), allow_unsandboxed: bool = False,
               env: dict[str, str] | None = None, python: Path | None = None,
               pass_fds: tuple[int, ...] = (), cancel=None) -> SandboxResult:
    """Run ``python argv...`` in ``workdir`` under the sandbox and the limits; wait for it.

    ``readonly_dirs`` and ``readonly_files`` (the worker's code), and ``workdir``
    (read-write) are the only parts of the filesystem visible besides the system and
    Python directories. Without ``workdir`` nothing of this machine is writable: the worker
    runs in the sandbox's private /tmp (under bwrap; unsandboxed, in a private directory).
    ``cancel`` (a threading.Event) ends the run early when set.
    ``env`` adds to or overrides the minimal environment (see ``_worker_env``).
    ``pass_fds`` stay open, with their numbers, in the worker; this function closes them
    here once the worker has started (or failed to), so that a writer at the other end of
    a pipe gets EPIPE rather than blocking when the worker ends.
    Raises SandboxUnavailable when bwrap cannot run and ``allow_unsandboxed`` is False.
    """
    open_fds = list(pass_fds)

    def close_passed_fds():  # once only: a number closed twice may meanwhile be another file's
        while open_fds:
            try:
                os.close(open_fds.pop())
            except OSError:
                pass

    try:
        return _run_worker(argv, workdir, readonly_dirs, readonly_files, limits, allow_unsandboxed,
                           env, python, tuple(pass_fds), close_passed_fds, cancel)
    finally:
        close_passed_fds()


class ZygoteFailed(RuntimeError):
    """The zygote could not fork this run's worker (it died, stopped, or would not start)."""


class Zygote:
    """The warm process that forks this run's keeper and worker (zygote.py).

    One per Python interpreter and grader process, started on first use (or early, by
    ``start_zygote``) and again whenever it has died or been stopped: a request it cannot
    answer is retried once with a new zygote, then the run fails, never with a score.
    """

    def __init__(self, python: Path, preload: tuple[str, ...] = ()):
        self.python, self.preload = python, preload
        self._lock = threading.Lock()
        self._stderr = collections.deque(maxlen=50)
        self._start()

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        bootstrap = ("import sys; sys.path.insert(0, sys.argv[1]); import zygote; "
                     "zygote.main(int(sys.argv[2]), sys.argv[3:])")
        try:
            self.proc = subprocess.Popen(
                [str(self.python), "-c", bootstrap, str(ZYGOTE_FILE.parent), str(child.fileno()), *self.preload],
                cwd="/", env=_worker_env(self.python, None, home="/tmp"), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(child.fileno(),),
                start_new_session=True)
        finally:
            child.close()
        self._socket, self._ready = parent, None
        threading.Thread(target=self._keep_stderr, args=(self.proc.stderr,), daemon=True,
                         name="zygote-stderr").start()

    def _keep_stderr(self, stream) -> None:
        for line in stream:
            self._stderr.append(line.decode(errors="replace"))

    def start_problem(self) -> str:
        """Wait until the zygote has warmed up; why it cannot fork, or ""."""
        if self._ready is None:
            self._socket.settimeout(ZYGOTE_START_SECONDS)
            try:
                reply = json.loads(self._socket.recv(1 << 16) or b"null")
            except (OSError, ValueError) as exc:
                reply = None
                self._stderr.append(f"no word from the zygote: {exc}")
            self._ready = (reply or {}).get("problem", "the zygote died while starting") if isinstance(reply, dict) \
                else "the zygote died while starting"
            if self._ready:
                self._ready += ": " + "".join(self._stderr)[-2000:]
        return self._ready

    def healthy(self) -> bool:
        return self.proc.poll() is None and not _is_stopped(self.proc.pid)

    def fork(self, request: dict, fds: list[int]) -> int:
        """Send one run's request with its descriptors; the keeper's pid. ZygoteFailed when
        neither this zygote nor a new one forks it."""
        with self._lock:
            problem = ""
            for _ in range(2):
                if not self.healthy():
                    self._restart()
                problem = self.start_problem()
                if not problem:
                    try:
                        socket.send_fds(self._socket, [json.dumps(request).encode()], fds)
                        reply = self._reply()
                        if reply.get("pid", -1) > 0:
                            return reply["pid"]
                        problem = reply.get("problem") or "the zygote could not fork"
                    except (OSError, ValueError, AttributeError) as exc:
                        problem = f"the zygote did not answer ({type(exc).__name__}: {exc})"
                self._restart()
            raise ZygoteFailed(problem)

    def _reply(self) -> dict:
        """The zygote's answer to a request: a fork takes milliseconds, so a zygote that
        stops or dies meanwhile is noticed within a second, not at a time limit."""
        deadline = time.monotonic() + ZYGOTE_START_SECONDS
        self._socket.settimeout(1.0)
        while True:
            try:
                return json.loads(self._socket.recv(1 << 16))
            except socket.timeout:
                if not self.healthy() or time.monotonic() > deadline:
                    raise OSError("the zygote stopped or ended without answering") from None

    def _restart(self) -> None:
        self.close()
        self._start()

    def close(self) -> None:
        """End the zygote (its keepers and workers run on: each has its own sandbox)."""
        self._socket.close()
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()


_ZYGOTES: dict[tuple, Zygote] = {}
_ZYGOTES_LOCK = threading.Lock()


def _forget_zygotes() -> None:
    """In a forked copy of this process: its parent's zygotes are not its own (two writers
    on one socket), and a lock another thread held at the fork would never be released."""
    global _ZYGOTES_LOCK
    _ZYGOTES.clear()
    _ZYGOTES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_zygotes)


def start_zygote(python: Path | None = None, preload: tuple[str, ...] = ()) -> Zygote:
    """This process's zygote for python (started now if there is none): call it early so
    that its start-up overlaps with the caller's own."""
    key = (Path(python or sys.executable).absolute(), tuple(preload))
    with _ZYGOTES_LOCK:
        if key not in _ZYGOTES:
            _ZYGOTES[key] = Zygote(*key)
        return _ZYGOTES[key]


@atexit.register
def _close_zygotes() -> None:
    with _ZYGOTES_LOCK:
        for zygote in _ZYGOTES.values():
            zygote.close()
        _ZYGOTES.clear()


def _is_stopped(pid: int | None) -> bool:
    """Whether pid is in a stopped or traced state (it would never report again)."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False  # ended meanwhile


def _checked_paths(workdir, readonly_dirs, readonly_files, python) -> tuple[Path | None, list[Path], Path]:
    """(workdir or None, the read-only directories then files, python), each checked to exist
    (workdir and the directories as directories) and made absolute."""
    workdir = None if workdir is None else _existing_dir(workdir)
    readonly = [_existing_dir(path) for path in readonly_dirs]
    readonly += [Path(path).resolve(strict=True) for path in readonly_files]
    python = Path(python or sys.executable).absolute()  # not resolved: a venv's python is a link
    return workdir, readonly, python


def _sandbox_or_refuse(allow_unsandboxed: bool) -> tuple[bool, str]:
    """(whether bwrap can run, why not); raises SandboxUnavailable when it cannot and running
    without it is not allowed."""
    ok, why = sandbox_status()
    if not ok and not allow_unsandboxed:
        raise SandboxUnavailable(f"{why}; pass allow_unsandboxed=True to run the worker without "
                                 "isolation (rlimits and the wall clock still apply)")
    return ok, why


def _run_worker(argv, workdir, readonly_dirs, readonly_files, limits, allow_unsandboxed, env,
                python, pass_fds, on_start, cancel):
    """run_worker's SandboxResult; on_start closes the caller's copies of pass_fds."""
    workdir, readonly, python = _checked_paths(workdir, readonly_dirs, readonly_files, python)
    ok, why = _sandbox_or_refuse(allow_unsandboxed)
    extra_tasks = 3 if ok else 1  # bwrap, the holder and the keeper; unsandboxed, the keeper
    cgroups = _Cgroups(limits, extra_tasks)
    rlimits, defences, missing = _rlimits(limits, cgroups.pids_active, extra_tasks)
    private_dir = None
    if ok:
        defences.insert(0, _BWRAP_DEFENCE)
    else:
        missing.insert(0, f"filesystem and network isolation: {why}")
        if workdir is None:
            workdir = private_dir = Path(tempfile.mkdtemp(prefix="captioning-worker-"))
    run = _Run("bwrap" if ok else "unsandboxed", limits, cgroups, cancel)
    try:
        run.start(python, argv, workdir, readonly, env, rlimits, pass_fds, on_start)
        return _completed(run.collect(), cgroups, defences, missing)
    finally:
        run.close()
        cgroups.cleanup()
        if private_dir is not None:
            remove_tree(private_dir)


class _Run:
    """One worker run: its sandbox's holder (under bwrap), the keeper and the worker that the
    zygote forked for it, and the grader's ends of their pipes."""

    def __init__(self, mode: str, limits: Limits, cgroups: _Cgroups, cancel):
        self.mode, self.limits, self.cgroups, self.cancel = mode, limits, cgroups, cancel
        self.started = time.monotonic()
        self.deadline = self.started + limits.wall_seconds
        self.holder: subprocess.Popen | None = None
        self.keeper = self.worker = self.wait_status = None
        self.failure = ""  # why the worker never ran (the grader's side, never the worker's)
        self.output: dict[int, bytearray] = {}
        self.status = None  # our end of the keeper's status socket
        self._status_buffer = b""

    # --- starting ---------------------------------------------------------------------------

    def start(self, python: Path, argv, workdir, readonly, env, rlimits, pass_fds, on_start) -> None:
        """Start the holder (under bwrap), then have the zygote fork the keeper and worker."""
        procs_fds = self._cgroup_procs_fds()
        theirs = []  # this process's copies of what goes to the keeper (pass_fds: on_start's)
        try:
            pidfd = None
            if self.mode == "bwrap":
                pidfd = self._start_holder(python, workdir, readonly, rlimits, procs_fds)
                if pidfd is None:
                    return
                theirs.append(pidfd)
            self.status, status_theirs = socket.socketpair()
            theirs.insert(0, status_theirs.detach())
            out_read, out_write = os.pipe()
            err_read, err_write = os.pipe()
            self.output = {out_read: bytearray(), err_read: bytearray()}
            theirs[1:1] = [os.open(os.devnull, os.O_RDONLY), out_write, err_write]
            request = {"sandboxed": self.mode == "bwrap", "rlimits": rlimits, "cgroups": len(procs_fds),
                       "pass_fds": list(pass_fds), "argv": list(argv),
                       "env": _worker_env(python, env, home="/tmp" if self.mode == "bwrap" else str(workdir)),
                       "cwd": str(workdir or "/tmp")}
            try:
                self.keeper = start_zygote(python).fork(request, [*theirs, *procs_fds, *pass_fds])
            except ZygoteFailed as exc:
                self.failure = f"the zygote could not fork the worker: {exc}"
        finally:
            for fd in theirs + procs_fds:
                _close_quietly(fd)
            on_start()

    def _cgroup_procs_fds(self) -> list[int]:
        fds = []
        for path in self.cgroups.procs_files():
            try:
                fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
            except OSError:
                pass  # check_member reports the cgroup as missing
        return fds

    def _start_holder(self, python: Path, workdir, readonly, rlimits, procs_fds) -> int | None:
        """Start bwrap with the holder as its pid 1; a pidfd of the holder once it is ready,
        or None with self.failure set."""
        info_read, info_write = os.pipe()
        args_fd = None
        try:
            args_fd, command = _bwrap_arguments(_bwrap_command(python, workdir, readonly, self.limits, info_write))
            self.holder = subprocess.Popen(
                command, cwd="/", env=_BWRAP_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True,
                pass_fds=tuple(fd for fd in (args_fd, info_write) if fd is not None),
                preexec_fn=_child_setup(rlimits, procs_fds, False))
        finally:
            for fd in (args_fd, info_write):
                if fd is not None:
                    os.close(fd)
        try:
            info, said = _read_until(
                {info_read: lambda data: data.rstrip().endswith(b"}"),
                 self.holder.stdout.fileno(): lambda data: data.endswith(b"ready\n")},
                min(self.deadline, time.monotonic() + HOLDER_START_SECONDS))
        finally:
            os.close(info_read)
        if info is None:
            self._kill()
            self.holder.wait()
            self.failure = ("the sandbox did not start: " + self.holder.stderr.read(4000).decode(errors="replace")
                            + f" (bwrap exit status {self.holder.returncode})")
            return None
        holder_pid = json.loads(info)["child-pid"]
        pidfd = os.pidfd_open(holder_pid)
        if _parent_of(holder_pid) != self.holder.pid:  # a recycled pid names another process
            os.close(pidfd)
            self.failure = "the sandbox's holder ended before the worker could join it"
            return None
        return pidfd

    # --- running ----------------------------------------------------------------------------

    def collect(self) -> SandboxResult:
        """Read the worker's stdout and stderr and the keeper's reports until the worker has
        ended and its pipes are closed, or a limit is hit."""
        if self.failure:
            return self._result(None, b"", self.failure.encode(), False)
        seen, reason = self._read_pipes()
        out, err = (bytes(buffer) for buffer in self.output.values())
        if self.wait_status is None:
            unreported = self._await_status()
            reason = reason or unreported
        if self.failure:
            err += b"\n" + self.failure.encode()
        return self._result(reason, out, err, seen > self.limits.output_bytes)

    def _read_pipes(self) -> tuple[int, str | None]:
        """(bytes read in all, the killed_reason of a kill, or None when the worker ended and
        its pipes closed or were given up); the first output_bytes read are kept."""
        seen, exited_at = 0, None
        with selectors.DefaultSelector() as selector:
            for fd in self.output:
                selector.register(fd, selectors.EVENT_READ)
            selector.register(self.status, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if exited_at is None:
                    reason = _stop_reason(now, self.deadline, self.cancel, self._stopped)
                    if reason is not None:
                        self._kill()
                        return seen, reason
                    if self.wait_status is not None:
                        exited_at = now
                        self._kill()  # leftovers holding the pipes open
                elif not any(fd in selector.get_map() for fd in self.output) or now - exited_at > _EXIT_GRACE_SECONDS:
                    return seen, None  # past the grace, an escaped descendant holds a pipe: give up
                for key, _ in selector.select(timeout=max(min(self.deadline - now, _POLL_SECONDS), 0)):
                    if key.fileobj is self.status:
                        if not self._read_status():
                            selector.unregister(self.status)
                        continue
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if not chunk:
                        selector.unregister(key.fd)
                        continue
                    room = self.limits.output_bytes - sum(len(b) for b in self.output.values())
                    self.output[key.fd] += chunk[:max(room, 0)]
                    seen += len(chunk)
                    if seen > OUTPUT_KILL_FACTOR * self.limits.output_bytes:
                        self._kill()
                        return seen, "output limit"

    def _read_status(self) -> bool:
        """Take the keeper's report lines ("W pid", "S wait status", "E why"); False at its end."""
        chunk = self.status.recv(4096)
        self._status_buffer += chunk
        *lines, self._status_buffer = self._status_buffer.split(b"\n")
        for line in lines:
            kind, _, value = line.decode(errors="replace").partition(" ")
            if kind == "W" and value.isdigit():
                self.worker = int(value)
                self.cgroups.check_member(self.keeper)  # it joined them before forking the worker
            elif kind == "S" and value.lstrip("-").isdigit():
                self.wait_status = int(value)
            elif kind == "E":
                self.failure = value[:2000]
                self.wait_status = 125 << 8
        if not chunk and self.wait_status is None:
            self.wait_status = signal.SIGKILL  # the keeper was killed: so was the worker
        return bool(chunk)

    def _await_status(self) -> str | None:
        """After a kill: the keeper reports the worker's end once it has reaped it."""
        deadline = time.monotonic() + 5
        while self.wait_status is None and time.monotonic() < deadline:
            if select.select([self.status], [], [], 0.05)[0] and not self._read_status():
                break
        return None if self.wait_status is not None else "the worker's end was not reported"

    def _stopped(self) -> bool:
        """Whether the worker, or the keeper above it, is stopped: neither would end."""
        return _is_stopped(self.worker) or _is_stopped(self.keeper)

    def _kill(self) -> None:
        """SIGKILL the worker's group, bwrap (whose death ends the holder and with it the whole
        pid namespace) and every task in the run's cgroups."""
        for group in (self.worker, self.holder.pid if self.holder else None):
            if group is not None:
                try:
                    os.killpg(group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass  # the group is already gone
        self.cgroups.kill_all()

    def _result(self, reason, stdout: bytes, stderr: bytes, truncated: bool) -> SandboxResult:
        returncode = None if self.wait_status is None else os.waitstatus_to_exitcode(self.wait_status)
        return SandboxResult(mode=self.mode, returncode=returncode, timed_out=reason == "wall-clock limit",
                             killed_reason=reason, stdout=stdout.decode(errors="replace"),
                             stderr=stderr.decode(errors="replace"), output_truncated=truncated,
                             wall_seconds=time.monotonic() - self.started)

    def close(self) -> None:
        """Nothing of the run outlives it: kill what is left, close our ends, reap bwrap."""
        self._kill()
        if self.status is not None:
            self.status.close()  # a keeper still waiting kills its worker and ends
        for fd in self.output:
            _close_quietly(fd)
        if self.holder is not None:
            self.holder.wait()
            self.holder.stdout.close()
            self.holder.stderr.close()


def _read_until(sources: dict, deadline: float) -> tuple[bytes | None, bytes | None]:
    """Read each fd of sources until its predicate holds for what it sent: (the first
    source's bytes, the second's), or (None, None) at an end of file or the deadline."""
    received = {fd: b"" for fd in sources}
    pending = set(sources)
    while pending:
        wait = deadline - time.monotonic()
        if wait <= 0:
            return None, None
        for fd in select.select(list(pending), [], [], wait)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                return None, None
            received[fd] += chunk
            if sources[fd](received[fd]):
                pending.discard(fd)
    first, second = received.values()
    return first, second


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _completed(result: SandboxResult, cgroups: _Cgroups, defences: list[str],
               missing: list[str]) -> SandboxResult:
    """result, given the limit that killed it (when it was not killed otherwise) and the lists
    of defences applied and missing (the cgroups' first; they are removed here)."""
    result.killed_reason = result.killed_reason or _reason_from_status(result.returncode, cgroups)
    result.defences = cgroups.defences + defences
    result.missing_defences = cgroups.missing + missing + cgroups.cleanup()
    return result


def remove_tree(path: Path) -> None:
    """Remove a directory a worker could write to, whatever it left there: never raises
    (shutil.rmtree recurses, so a 5,000-level chain would raise RecursionError)."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    except RecursionError:
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True)


def _bwrap_arguments(command: list[str]) -> tuple[int, list[str]]:
    """(fd, short command): bwrap reads its options from a pipe (--args), so that its
    command line, which every process of the sandbox can read, shows no option (the bound
    paths) but only the command it runs."""
    split = command.index("--")
    read_end, write_end = os.pipe()
    data = b"".join(arg.encode() + b"\0" for arg in command[1:split])
    if len(data) > 60_000:  # a pipe holds 64 KiB, and bwrap reads only once it has started
        os.close(read_end)
        os.close(write_end)
        return None, command
    os.write(write_end, data)
    os.close(write_end)
    return read_end, [command[0], "--args", str(read_end), *command[split:]]


def _existing_dir(path: Path) -> Path:
    """``path`` made absolute; ValueError when it is not a directory (bwrap would fail later)."""
    path = Path(path).resolve()
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory")
    return path


def _worker_env(python: Path, extra: dict[str, str] | None, home: str) -> dict[str, str]:
    """The whole environment of the worker: nothing of the grader's leaks into it."""
    env = {
        "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home, "TMPDIR": "/tmp", "LANG": "C.UTF-8",
        "USER": "nobody", "LOGNAME": "nobody",  # getpass.getuser() finds no passwd file inside
        # One thread each: reproducible timings, and threads count against max_processes.
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1",
    }
    env.update(extra or {})
    return env


@functools.lru_cache(maxsize=8)
def _python_dirs(python: Path) -> tuple[str, ...]:
    """The directories ``python`` needs: its prefixes (the venv and the base installation)."""
    if python == Path(sys.executable):
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    else:
        code = ("import sys; "
                "print(sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)")
        prefixes = set(subprocess.run([str(python), "-I", "-c", code], capture_output=True,
                                      text=True, check=True, timeout=60).stdout.split())
    return tuple(sorted(prefixes))


def _bwrap_command(python: Path, workdir: Path | None, readonly_dirs: list[Path], limits: Limits,
                   info_fd: int) -> list[str]:
    """The bwrap command line that starts the holder as the sandbox's pid 1 and writes its
    pid (as this machine sees it) on info_fd."""
    bwrap, isolation, _ = _bwrap_setup()
    command = [bwrap, *isolation, "--clearenv", "--proc", "/proc", "--dev", "/dev",
               "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp",
               "--size", str(limits.tmp_bytes), "--tmpfs", "/dev/shm"]
    # NVIDIA device nodes, where there are any, so that --device cuda works in the sandbox.
    for path in sorted(glob.glob("/dev/nvidia*")):
        command += ["--dev-bind-try", path, path]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /lib -> usr/lib
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        command += ["--ro-bind-try", path, path]
    # Parents before children, so that a directory nested in another keeps its own mode.
    binds = [("--ro-bind", Path(p)) for p in _python_dirs(python)]
    binds += [("--ro-bind", p) for p in readonly_dirs] + ([("--bind", workdir)] if workdir else [])
    for flag, path in sorted(binds, key=lambda bind: len(bind[1].parts)):
        command += [flag, str(path), str(path)]
    # The sandbox's root is a tmpfs: make it read-only so that only workdir and /tmp take writes.
    command += ["--remount-ro", "/", "--as-pid-1", "--info-fd", str(info_fd), "--"]
    return command + [str(python), "-I", "-S", "-c", _HOLDER]


def _rlimits(limits: Limits, pids_cgroup: bool, extra_tasks: int):
    """([(resource, soft, hard)] for the child, [active defences], [missing defences]).

    RLIMIT_DATA rather than RLIMIT_AS: torch's CUDA build reserves far more address space
    than it uses (RLIMIT_AS below about 4 GiB breaks ``import torch`` even on CPU), while the
    data limit counts only private writable memory, which is what allocations use.
    """
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),  # SIGXCPU, then SIGKILL
        (resource.RLIMIT_DATA, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    active = [f"rlimits: cpu {limits.cpu_seconds} s, data {limits.memory_bytes} B, "
              f"file size {limits.file_size_bytes} B, no core dumps"]
    missing = []
    if pids_cgroup:
        pass  # the cgroup counts every task, whoever runs it
    elif os.geteuid() == 0:
        missing.append("fork-bomb defence: no writable pids cgroup, and root is exempt from "
                       "RLIMIT_NPROC (the wall clock still ends the run)")
    else:
        # RLIMIT_NPROC counts every task of this uid, so leave room for the ones already there.
        nproc = _tasks_of_uid(os.getuid()) + limits.max_processes + extra_tasks
        wanted.append((resource.RLIMIT_NPROC, nproc, nproc))
        active.append(f"RLIMIT_NPROC {nproc} (shared with this uid's other processes)")
    rlimits = [(res, *_within_hard_limit(res, soft, hard)) for res, soft, hard in wanted]
    return rlimits, active, missing


def _within_hard_limit(res: int, soft: int, hard: int) -> tuple[int, int]:
    """(soft, hard) lowered to the current hard limit: only root may raise a hard limit."""
    current = resource.getrlimit(res)[1]
    if current == resource.RLIM_INFINITY or os.geteuid() == 0:
        return soft, hard
    return min(soft, current), min(hard, current)


def _tasks_of_uid(uid: int) -> int:
    """How many tasks (threads included) the real ``uid`` has now."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue  # the process ended meanwhile
        if int(fields["Uid"].split()[0]) == uid:
            count += int(fields["Threads"])
    return count


class _Cgroups:
    """A per-run cgroup (v1) in the pids, memory and cpu controllers, when they are writable.

    Created below this process's own cgroup; the child moves itself in before exec, so every
    task it starts is counted. ``kill_all`` kills whatever is still inside, ``cleanup``
    removes the directories.
    """

    def __init__(self, limits: Limits, extra_tasks: int):
        self.dirs: dict[str, Path] = {}
        self.defences: list[str] = []
        self.missing: list[str] = []
        name = f"autograder-sandbox-{os.getpid()}-{next(_run_ids)}"
        settings = {
            "pids": [("pids.max", limits.max_processes + extra_tasks)],
            # memsw (memory + swap) as well, where swap accounting exists, so swap is no way out.
            "memory": [("memory.limit_in_bytes", limits.memory_bytes),
                       ("memory.memsw.limit_in_bytes", limits.memory_bytes)],
            # One scheduling group per run: a worker with 64 spinning processes gets the same
            # CPU share as a worker with one, so it cannot starve the workers beside it.
            "cpu": [("cpu.shares", 1024)],
        }
        for controller, values in settings.items():
            try:
                path = self._create(controller, name, values)
            except OSError as exc:
                self.missing.append(f"{controller} cgroup: {exc}")
                continue
            self.dirs[controller] = path
            self.defences.append(f"{controller} cgroup: {', '.join(f'{k}={v}' for k, v in values)}")

    @staticmethod
    def _create(controller: str, name: str, values: list[tuple[str, int]]) -> Path:
        """mkdir the cgroup and write its limits: the first is required, the others optional."""
        parent = _own_cgroup(controller)
        if parent is None:
            raise OSError(f"no cgroup v1 '{controller}' hierarchy at {CGROUP_ROOT / controller}")
        path = parent / name
        path.mkdir()
        (required, value), *optional = values
        try:
            (path / required).write_text(str(value))
        except OSError:
            path.rmdir()
            raise
        for filename, value in optional:
            try:
                (path / filename).write_text(str(value))
            except OSError:
                pass  # e.g. no swap accounting: the memory limit alone still holds
        return path

    @property
    def pids_active(self) -> bool:
        return "pids" in self.dirs

    def procs_files(self) -> list[Path]:
        return [path / "cgroup.procs" for path in self.dirs.values()]

    def check_member(self, pid: int) -> None:
        """Drop (as missing) each cgroup that the child did not manage to join."""
        for controller, path in list(self.dirs.items()):
            if str(pid) not in _read(path / "cgroup.procs").split():
                del self.dirs[controller]
                self.defences = [d for d in self.defences if not d.startswith(controller)]
                self.missing.append(f"{controller} cgroup: the child could not join it")

    def kill_all(self) -> None:
        """SIGKILL every task inside, repeatedly: a fork bomb refills its slots meanwhile."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            pids = {int(pid) for path in self.dirs.values()
                    for pid in _read(path / "cgroup.procs").split()}
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def oom_kills(self) -> int:
        """How many tasks the memory cgroup's OOM killer killed."""
        if "memory" not in self.dirs:
            return 0
        for line in _read(self.dirs["memory"] / "memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def cleanup(self) -> list[str]:
        """Remove the cgroups (after killing leftovers); problems come back as messages."""
        problems = []
        if self.dirs:
            self.kill_all()
        for controller, path in list(self.dirs.items()):
            for _ in range(200):  # rmdir fails with EBUSY until the killed tasks are gone
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    error = exc
                    time.sleep(0.01)
            else:
                problems.append(f"{controller} cgroup {path} could not be removed: {error}")
            del self.dirs[controller]
        return problems


def _own_cgroup(controller: str) -> Path | None:
    """The directory of this process's cgroup in a v1 controller's hierarchy, or None."""
    mount = CGROUP_ROOT / controller
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            own = mount / path.lstrip("/")
            # In a container without a cgroup namespace the path may be the host's view.
            return own if own.is_dir() else mount if mount.is_dir() else None
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _child_setup(rlimits, cgroup_procs_fds: list[int], die_with_parent: bool):
    """The function run in the child between fork and exec: plain system calls, no locks."""
    libc = ctypes.CDLL(None, use_errno=True) if die_with_parent else None
    pr_set_pdeathsig = 1

    def setup():
        for fd in cgroup_procs_fds:
            try:
                os.write(fd, str(os.getpid()).encode())
            except OSError:
                pass  # the parent sees that the child is not a member and reports it
        for res, soft, hard in rlimits:
            resource.setrlimit(res, (soft, hard))
        if libc is not None:  # bwrap does this itself with --die-with-parent
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    return setup


def _stop_reason(now: float, deadline: float, cancel, stopped) -> str | None:
    """The killed_reason for which the run must end now (the wall clock, the grader's cancel,
    the worker found stopped), or None. stopped is None once the worker has exited."""
    if now >= deadline:
        return "wall-clock limit"
    if cancel is not None and cancel.is_set():
        return "stopped by the grader"
    if stopped is not None and stopped():
        return WORKER_STOPPED
    return None


def _reason_from_status(returncode: int, cgroups: _Cgroups) -> str | None:
    """A human-readable cause when the run was killed by a limit, else None."""
    if cgroups.oom_kills():
        return "memory (cgroup limit reached, OOM killer)"
    if returncode == -signal.SIGXCPU:
        return "cpu-time limit"
    if returncode == -signal.SIGXFSZ:
        return "file-size limit"
    return None


