"""Running an untrusted Python worker (student code) where it can do no harm.

``run_worker`` starts ``python argv...`` and reports what happened; it never interprets
the worker's results. The defences, each applied when this machine allows it and listed in
``SandboxResult.defences`` (the ones that could not be applied, with the reason, in
``SandboxResult.missing_defences``):

* bubblewrap (``bwrap``): new user, pid, network, ipc, uts and cgroup namespaces, uid/gid
  65534 inside, no capabilities, no nested user namespaces, an empty environment plus a
  minimal one, and a filesystem that holds only the system directories, the Python
  installation, the caller's read-only directories and the read-write ``workdir``;
* rlimits set in the child before exec: CPU time, data segment (memory), file size, core
  dumps (and the process count when not root: root is exempt from RLIMIT_NPROC);
* a per-run cgroup v1 in the ``pids`` controller (the fork-bomb defence that also works for
  root) and in the ``memory`` controller (the limit that counts every kind of memory);
* a wall clock: on expiry the process group, the cgroups' members and, under bwrap, the
  whole pid namespace are killed; stdout and stderr are read concurrently and only the
  first ``output_bytes`` are kept.

Without bwrap the worker only runs when the caller passes ``allow_unsandboxed=True``.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import itertools
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
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
# The killed_reason of a run whose worker, or a process above it in the sandbox, was found
# stopped (SIGSTOP, SIGTSTP...): only code in the sandbox can have sent the signal, and a
# stopped worker enforces no limit on it.
WORKER_STOPPED = "the worker was stopped by a process of the sandbox"
# Under bwrap the worker is the third process below bwrap: the sandbox's pid 1, the reaper, it.
_BWRAP_DEPTH = 3

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

# Run inside the sandbox between bwrap and the worker: it reports the worker's raw wait
# status on a pipe, because bwrap turns "killed by signal N" into exit code 128 + N.
# Exec'd python is dumpable: it makes itself not, so that no process of the sandbox can
# open its descriptors through /proc/<reaper>/fd (forge its status or stderr), and closes
# every descriptor but its own once the worker runs (a job pipe held open never ends).
_REAPER = """\
import ctypes, os, sys
libc = ctypes.CDLL(None)
if libc.prctl(4, 0, 0, 0, 0) or libc.prctl(3, 0, 0, 0, 0):  # PR_SET_DUMPABLE 0, PR_GET_DUMPABLE
    sys.stderr.write("reaper: could not make itself non-dumpable; refusing to run")
    os._exit(125)
fd = int(sys.argv[1])
os.set_inheritable(fd, False)
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
os.closerange(3, fd)
os.closerange(fd + 1, 1 << 16)
status = os.waitpid(pid, 0)[1]
os.write(fd, b"%d" % status)
os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
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
    extra_tasks = 3 if ok else 0  # bwrap, the sandbox's pid 1 and the reaper
    cgroups = _Cgroups(limits, extra_tasks)
    rlimits, defences, missing = _rlimits(limits, cgroups.pids_active, extra_tasks)
    status_read = status_write = args_fd = private_dir = None
    try:
        if ok:
            status_read, status_write = os.pipe()
            args_fd, command = _bwrap_arguments(_bwrap_command(
                python, argv, workdir, readonly, limits, env, status_write))
            defences.insert(0, _BWRAP_DEFENCE)
        else:
            command = [str(python), *argv]
            missing.insert(0, f"filesystem and network isolation: {why}")
            if workdir is None:
                workdir = private_dir = Path(tempfile.mkdtemp(prefix="captioning-worker-"))
        result = _run(command, mode="bwrap" if ok else "unsandboxed", workdir=workdir or Path("/"),
                      limits=limits, cgroups=cgroups, rlimits=rlimits,
                      # bwrap itself starts with next to nothing: the sandbox's pid 1 keeps
                      # bwrap's environment, which its processes can read.
                      env=_BWRAP_ENV if ok else _worker_env(python, env, home=str(workdir)),
                      pass_fds=tuple(fd for fd in (status_write, args_fd) if fd is not None) + pass_fds,
                      die_with_parent=not ok, on_start=on_start, cancel=cancel)
        if ok:
            os.close(status_write)
            status_write = None
            result.returncode = _worker_returncode(result.returncode, status_read)
        return _completed(result, cgroups, defences, missing)
    finally:
        for fd in (status_read, status_write, args_fd):
            if fd is not None:
                os.close(fd)
        cgroups.cleanup()
        if private_dir is not None:
            remove_tree(private_dir)


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


def _bwrap_command(python: Path, argv: list[str], workdir: Path, readonly_dirs: list[Path],
                   limits: Limits, env: dict[str, str] | None, status_fd: int) -> list[str]:
    """The bwrap command line that runs the reaper, which runs ``python argv...``."""
    bwrap, isolation, _ = _bwrap_setup()
    command = [bwrap, *isolation, "--clearenv", "--proc", "/proc", "--dev", "/dev",
               "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp",
               "--size", str(limits.tmp_bytes), "--tmpfs", "/dev/shm"]
    # NVIDIA device nodes, where there are any, so that --device cuda works in the sandbox.
    for path in sorted(glob.glob("/dev/nvidia*")):
        command += ["--dev-bind-try", path, path]
    for name, value in _worker_env(python, env, home="/tmp").items():
        command += ["--setenv", name, value]
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
    command += ["--remount-ro", "/", "--chdir", str(workdir or "/tmp"), "--"]
    return command + [str(python), "-I", "-S", "-c", _REAPER, str(status_fd), str(python), *argv]


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


def _run(command: list[str], *, mode: str, workdir: Path, limits: Limits, cgroups: _Cgroups,
         rlimits, env: dict[str, str] | None, pass_fds, die_with_parent: bool,
         on_start=lambda: None, cancel=None) -> SandboxResult:
    """Start ``command`` in a new session, collect its output, enforce the wall clock;
    ``on_start`` runs once the process exists."""
    started = time.monotonic()
    deadline = started + limits.wall_seconds
    procs_fds = []
    for path in cgroups.procs_files():
        try:
            procs_fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            pass  # check_member reports the cgroup as missing
    try:
        proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, pass_fds=pass_fds,
            preexec_fn=_child_setup(rlimits, procs_fds, die_with_parent))
    finally:
        for fd in procs_fds:
            os.close(fd)
    on_start()
    cgroups.check_member(proc.pid)
    depth = _BWRAP_DEPTH if mode == "bwrap" else 0
    try:
        stdout, stderr, truncated, reason = _collect(proc, limits, deadline, cgroups, cancel,
                                                     lambda: _worker_stopped(proc.pid, depth))
    finally:
        _kill(proc, cgroups)  # nothing the worker started outlives the run
        proc.stdout.close()
        proc.stderr.close()
    return SandboxResult(
        mode=mode, returncode=proc.wait(), timed_out=reason == "wall-clock limit",
        killed_reason=reason, stdout=stdout.decode(errors="replace"),
        stderr=stderr.decode(errors="replace"), output_truncated=truncated,
        wall_seconds=time.monotonic() - started)


def _collect(proc: subprocess.Popen, limits: Limits, deadline: float, cgroups: _Cgroups,
             cancel=None, stopped=lambda: False):
    """Read stdout and stderr until both close, the process ends, a limit is hit or
    ``stopped()`` says the worker was stopped.

    Returns (stdout bytes, stderr bytes, truncated, killed_reason or None). Bytes beyond
    ``output_bytes`` (both streams together) are read and dropped, so the worker never
    blocks on a full pipe and the grader's memory stays bounded.
    """
    kept = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    seen, reason = _read_pipes(proc, kept, limits, deadline, cgroups, cancel, stopped)
    if reason is not None:
        return _output(kept, seen, limits, reason)
    # Pipes closed: wait for the exit itself, still under the wall clock.
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        _kill(proc, cgroups)
        return _output(kept, seen, limits, "wall-clock limit")
    return _output(kept, seen, limits, None)


def _read_pipes(proc: subprocess.Popen, kept: dict[int, bytearray], limits: Limits, deadline: float,
                cgroups: _Cgroups, cancel, stopped) -> tuple[int, str | None]:
    """(bytes read in all, the killed_reason of a kill, or None when the pipes closed or were
    given up) once reading ends; the first output_bytes read are added to kept."""
    seen = 0
    exited_at = None
    with selectors.DefaultSelector() as selector:
        for fd in kept:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            reason = _stop_reason(now, deadline, cancel, stopped if exited_at is None else None)
            if reason is not None:
                _kill(proc, cgroups)
                return seen, reason
            if exited_at is None and proc.poll() is not None:
                exited_at = now
                _kill(proc, cgroups)  # leftovers holding the pipes open
            elif exited_at is not None and now - exited_at > _EXIT_GRACE_SECONDS:
                break  # an escaped descendant still holds a pipe: stop listening to it
            for key, _ in selector.select(timeout=min(deadline - now, _POLL_SECONDS)):
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                room = limits.output_bytes - sum(len(b) for b in kept.values())
                kept[key.fd] += chunk[:max(room, 0)]
                seen += len(chunk)
                if seen > OUTPUT_KILL_FACTOR * limits.output_bytes:
                    _kill(proc, cgroups)
                    return seen, "output limit"
    return seen, None


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


def _worker_stopped(pid: int, depth: int) -> bool:
    """Whether pid, or one of its only children down to ``depth`` levels (the worker), is
    stopped. The worker's own children (the units) are not looked at: a unit may stop itself."""
    for level in range(depth + 1):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    return True
            if level == depth:
                return False
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = f.read().split()
        except (OSError, IndexError):
            return False  # ended meanwhile
        if len(children) != 1:
            return False  # not started yet, or ending
        pid = int(children[0])
    return False


def _output(kept: dict[int, bytearray], seen: int, limits: Limits, reason: str | None):
    stdout, stderr = kept.values()
    return bytes(stdout), bytes(stderr), seen > limits.output_bytes, reason


def _kill(proc: subprocess.Popen, cgroups: _Cgroups) -> None:
    """SIGKILL the worker's process group and every task in its cgroups.

    Under bwrap the group holds bwrap itself; its death kills the sandbox's pid 1
    (--die-with-parent) and with it the whole pid namespace.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
    cgroups.kill_all()


def _reason_from_status(returncode: int, cgroups: _Cgroups) -> str | None:
    """A human-readable cause when the run was killed by a limit, else None."""
    if cgroups.oom_kills():
        return "memory (cgroup limit reached, OOM killer)"
    if returncode == -signal.SIGXCPU:
        return "cpu-time limit"
    if returncode == -signal.SIGXFSZ:
        return "file-size limit"
    return None


def _worker_returncode(bwrap_returncode: int, status_fd: int) -> int:
    """The worker's own return code, as the reaper reported it on ``status_fd``.

    Falls back to decoding bwrap's exit code (128 + N for signal N) when the reaper did not
    report, e.g. because the whole sandbox was killed.
    """
    os.set_blocking(status_fd, False)
    try:
        report = os.read(status_fd, 64)
    except BlockingIOError:
        report = b""
    if report.strip().isdigit():
        return os.waitstatus_to_exitcode(int(report))
    if bwrap_returncode > 128:
        return -(bwrap_returncode - 128)
    return bwrap_returncode
