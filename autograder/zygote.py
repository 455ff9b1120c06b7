"""The zygote: one warm process that forks every sandboxed worker (sandbox.py starts it).

    python -c BOOTSTRAP CONTROL_FD [PRELOAD ...]      (sandbox.Zygote writes the command)

Start-up is what a grading used to pay for every submission: importing torch and the worker's
modules, and working out what forbidden.block_for_good blocks (worker.warm_up). The zygote
pays it once, then serves requests on its control socket (a socketpair with the grader),
one per run: each request carries descriptors and limits, never a job, code or inputs, and
the zygote answers it by forking a *keeper*:

1. the keeper joins the run's cgroups (the grader passes their ``cgroup.procs`` open), sets
   the run's rlimits, and joins every namespace of the run's sandbox: a fresh bwrap sandbox
   that the grader started for this run alone (its own user, mount, pid, network, IPC, UTS
   and cgroup namespaces, private ``/tmp``; its pid 1 is a non-dumpable holder), through a
   pidfd of that holder (one setns call, all or nothing);
2. it drops every capability (it has all of them in the sandbox's user namespace once it
   joined it), its bounding and ambient sets, and sets no_new_privs;
3. it forks the *worker*, which is the first process of this run inside the sandbox's pid
   namespace, and waits for it; the worker reads its job only from the descriptors passed
   in, so student code runs only after every step above. The keeper itself stays outside
   that pid namespace (no process of the sandbox can name it), reports the worker's pid and
   wait status on the run's status socket, and kills the worker's process group when the
   grader closes that socket.

Without bwrap (allow_unsandboxed) the keeper skips the namespaces and capabilities.

The zygote never holds reference code, expected values, the secret or any submission: it
imports only the worker's files (this one, worker.py, graded_tests.py, forbidden.py,
served.py, wire.py), torch and numpy, and what they import. It never initialises CUDA (a
forked child could not use it), runs one thread (a fork copies only the calling thread),
and refuses to fork otherwise. Each child gets a copy of its memory (copy on write), so
what a submission changes (torch's module state, a monkeypatched function, the RNG, a
registered op or hook) stays in that submission's processes.
"""

import ctypes
import fcntl
import json
import os
import resource
import runpy
import select
import signal
import socket
import sys
import traceback

CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID = 0x10000000, 0x00020000, 0x20000000
CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWCGROUP = 0x40000000, 0x08000000, 0x04000000, 0x02000000
SANDBOX_NAMESPACES = (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
                      | CLONE_NEWUTS | CLONE_NEWCGROUP)
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_GET_DUMPABLE = 1, 4, 3
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
MAX_REQUEST_BYTES = 1 << 20
MAX_FDS = 64
# What the workers' command lines show: nothing of the grader's paths or arguments.
PROCESS_TITLE = b"captioning-worker"

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def set_process_title() -> None:
    """Overwrite this process's command line in place (what /proc/PID/cmdline shows to every
    process of a sandbox, dumpable or not): the bootstrap's paths and arguments go. The
    kernel reads the bytes the process was started with, from arg_start to arg_end."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5)
    except (OSError, IndexError, ValueError):
        return
    if end - start > len(PROCESS_TITLE):
        ctypes.memmove(start, PROCESS_TITLE + b"\0" * (end - start - len(PROCESS_TITLE)), end - start)


def drop_privileges() -> None:
    """No capability left in any set, none to be gained by exec (no_new_privs)."""
    for cap in range(64):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last one: ignored
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    if any(d.effective or d.permitted or d.inheritable for d in data):
        raise OSError("capabilities remain after capset")


def join_sandbox(pidfd: int) -> None:
    """Enter every namespace of the run's sandbox: the holder's, named by its pidfd (so that
    a recycled pid can never name another sandbox), all at once."""
    try:
        os.setgroups([])  # root's supplementary groups would keep granting access inside
    except OSError:
        pass  # not root: there are none this process could drop
    _check(_libc.setns(pidfd, SANDBOX_NAMESPACES), "setns into the run's sandbox")
    os.close(pidfd)


def _place(fds: list[int], targets: list[int]) -> None:
    """Give the received descriptors the numbers the worker expects (targets); close every
    other descriptor of this process."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1 << 12) for fd in fds]
    for fd in fds:
        os.close(fd)
    for fd, target in zip(high, targets):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
    edge = 3
    for target in sorted(t for t in targets if t >= 3):
        os.closerange(edge, target)
        edge = target + 1
    os.closerange(edge, 1 << 16)


def _report(status_fd: int, line: str) -> None:
    try:
        os.write(status_fd, line.encode() + b"\n")
    except OSError:
        pass  # the grader has gone: nothing to tell


def keep(request: dict, fds: dict, control: socket.socket) -> None:
    """The keeper (never returns): sandbox, privileges, then the worker, then its status."""
    status = fds["status"]
    try:
        control.close()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()  # its own session: no terminal, and a process group the grader can kill
        for fd in fds["cgroups"]:
            try:
                os.write(fd, str(os.getpid()).encode())
            except OSError:
                pass  # the grader finds it is not a member and reports the cgroup as missing
            os.close(fd)
        for resource_id, soft, hard in request["rlimits"]:
            resource.setrlimit(resource_id, (soft, hard))
        if request["sandboxed"]:
            join_sandbox(fds["pidfd"])
            drop_privileges()
        targets = [0, 1, 2, *request["pass_fds"]]
        status_target = max(targets) + 1
        _place([fds["stdin"], fds["stdout"], fds["stderr"], *fds["pass"], status],
               [*targets, status_target])
        status = status_target
    except BaseException as exc:
        _report(status, f"E the sandbox could not be entered: {type(exc).__name__}: {exc}")
        os._exit(125)
    worker = os.fork()
    if worker == 0:
        os.close(status)
        run_worker(request)
    _report(status, f"W {worker}")
    _wait(worker, status)


def _wait(worker: int, status: int) -> None:
    """Wait for the worker, report its wait status; kill it if the grader hangs up first."""
    while True:
        done, wait_status = os.waitpid(worker, os.WNOHANG)
        if done:
            _report(status, f"S {wait_status}")
            os._exit(0)
        if select.select([status], [], [], 0.05)[0] and not os.read(status, 1):
            for kill in (lambda: os.killpg(worker, signal.SIGKILL), lambda: os.kill(worker, signal.SIGKILL)):
                try:
                    kill()
                except OSError:
                    pass
            os.waitpid(worker, 0)
            os._exit(0)


def run_worker(request: dict) -> None:
    """In the worker (never returns): the run's environment, then ``python argv...``."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group, which the grader kills at the run's end
        if not request["sandboxed"]:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with its keeper
        elif _capabilities_left():
            raise SystemExit("worker: capabilities left in the sandbox; refusing to run")
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv = request["argv"]
        if argv[0] == "-c":
            sys.argv = ["-c", *argv[2:]]
            sys.path[0] = ""
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(argv[0])
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code & 0xFF)


def _capabilities_left() -> bool:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    return any(int(fields.get(name, "0").strip(), 16) for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"))


def _receive(control: socket.socket):
    """(request, {name: fd}) or None when the grader has closed the socket."""
    message, fds, _, _ = socket.recv_fds(control, MAX_REQUEST_BYTES, MAX_FDS)
    if not message:
        for fd in fds:
            os.close(fd)
        return None
    request = json.loads(message)
    taken = iter(fds)
    named = {name: next(taken) for name in ("status", "stdin", "stdout", "stderr")}
    if request["sandboxed"]:
        named["pidfd"] = next(taken)
    named["cgroups"] = [next(taken) for _ in range(request["cgroups"])]
    named["pass"] = [next(taken) for _ in request["pass_fds"]]
    return request, named


def fork_ready() -> str:
    """Why this process must not fork a worker now, or "" (one thread, no CUDA context)."""
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        return f"the zygote runs {threads} threads"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "the zygote has initialised CUDA"
    return ""


def serve(control: socket.socket) -> None:
    """Fork a keeper for each request until the grader closes the control socket."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # keepers report to the grader, not here
    while True:
        received = _receive(control)
        if received is None:
            return
        request, fds = received
        problem = fork_ready()
        pid = -1 if problem else os.fork()
        if pid == 0:
            keep(request, fds, control)
        for fd in [fd for value in fds.values() for fd in (value if isinstance(value, list) else [value])]:
            os.close(fd)
        control.sendall(json.dumps({"pid": pid, "problem": problem}).encode())


def main(control_fd: int, preload: list[str]) -> None:
    """Warm up once (no submitted code exists yet), say so, then serve."""
    import worker

    worker.make_undumpable()  # no process may read this one's memory; every child inherits it
    set_process_title()
    control = socket.socket(fileno=control_fd)
    worker.graded_tests.strict_float_math()
    worker.warm_up(preload)
    control.sendall(json.dumps({"ready": os.getpid(), "problem": fork_ready()}).encode())
    serve(control)
