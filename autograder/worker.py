"""The grading worker: runs a submission's worker groups on the grader's inputs, in its sandbox.

    python worker.py --results FD --group JOB_FD[:REQUEST_FD,REPLY_FD] [--group ...]
                     [--preload MODULE]... [--own-pid-namespace]

One sandbox grades one submission; its groups (see submission_sandbox.py) run one after the other, in
the order of the --group arguments. This process imports torch, makes itself non-dumpable,
and for each group in turn reads its job (job.json and the hidden inputs, one .npz) from the
group's job pipe, never before every unit of the earlier groups has ended. It runs each unit
in a forked child that closes every pipe but its own served pair before any submitted code
runs, and sends its outputs back on a pipe of its own. On the results pipe this process
reports, as frames (wire.py), "start" before a unit runs and "end" with how it ended and
what it sent once it has ended; the grader treats all of it as untrusted data. A group with
served pipes gets stand-ins whose calls go to the grader (served.py). This file imports
nothing from the repository besides its neighbours.
"""

import ctypes
import importlib
import io
import os
import resource
import select
import signal
import sys
import time
import traceback

import numpy as np
import torch

import forbidden
import graded_tests
import served
import wire

_MAX_ERROR_CHARS = 300
MAX_JOB_BYTES = 1 << 30
MAX_UNIT_OUTPUT_BYTES = 64 << 20
PR_GET_DUMPABLE, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 3, 4, 36  # from <linux/prctl.h>


def describe(exc: BaseException) -> str:
    """One line naming an exception and where in the submission it was raised."""
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith("<"):  # the submission's code is compiled as <unit>
            where = f" (line {frame.lineno} of your {frame.filename.strip('<>')} cell)"
            break
    message = f": {exc}" if str(exc) else ""
    if isinstance(exc, NotImplementedError):
        message = " (not written yet)"
    return f"{type(exc).__name__}{message}{where}"[:_MAX_ERROR_CHARS]


def load_namespace(code: list[dict]) -> dict:
    """Execute the job's code entries in order in one namespace: the provided code, the
    served stand-ins, then the student's cells, each compiled under its cell's name."""
    namespace = {"__name__": "submission", "__builtins__": __builtins__}
    for entry in code:
        if "served" in entry:
            served.install(namespace, entry["served"])
            continue
        exec(compile(entry["source"], f"<{entry['name']}>", "exec"), namespace)
        if entry["name"] == "provided code":
            # The grader encodes the images itself: no sandbox imports torchvision.
            namespace["ImageEncoder"] = graded_tests.PrecomputedFeatures
    return namespace


def to_array(value, name: str) -> np.ndarray:
    """A plain numpy copy of a tensor output; anything else is an error for the grader."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"output {name} is a {type(value).__name__}, not a torch.Tensor")
    return np.array(torch.Tensor.numpy(value.detach().cpu().clone().as_subclass(torch.Tensor)))


def run_test(namespace: dict, unit: str, test: dict, inputs, device: str) -> tuple[dict, list]:
    """Every case of one test: (outputs by "test/case/name", errors)."""
    outputs, errors = {}, []
    run = graded_tests.runner(unit, test["test"])
    for case in range(test["cases"]):
        prefix = wire.case_key(test["test"], case, "")
        case_inputs = {k[len(prefix):]: torch.from_numpy(inputs[k]).to(device)
                       for k in inputs.files if k.startswith(prefix)}
        try:
            result = run(namespace, case_inputs, test["shared"])
            for name, value in result.items():
                outputs[prefix + name] = to_array(value, name)
        except BaseException as exc:
            errors.append({"test": test["test"], "case": case, "error": describe(exc)})
    return outputs, errors


def report(fd: int, test: str, outputs: dict, errors: list) -> None:
    """One test's outputs, errors and the forbidden uses recorded so far, as one frame."""
    blob = io.BytesIO()
    np.savez(blob, **outputs)
    header = {"test": test, "errors": errors, "violations": forbidden.violations()}
    wire.write_frame(fd, header, blob.getvalue())


def run_unit(unit: dict, inputs, job: dict, output_fd: int) -> None:
    """In the forked child: limits and blocks first, then the unit's tests, each reported
    on output_fd as soon as it is done (a later timeout loses only the later tests)."""
    cpu = job["unit_cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    torch.set_num_threads(1)
    if job["device"] == "cuda":  # a bounded share of the GPU for each sandbox
        torch.cuda.set_per_process_memory_fraction(job["cuda_memory_fraction"])
    forbidden.block_for_good()
    if unit.get("no_autograd"):
        forbidden.refuse_autograd(unit["unit"])
    if unit.get("no_threads"):
        forbidden.refuse_threads(unit["unit"])
    try:
        namespace = load_namespace(unit["code"])
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: nothing ran
        report(output_fd, "*", {}, [{"test": "*", "case": "*",
                                    "error": "your cell failed to run: " + describe(exc)}])
        return
    for test in unit["tests"]:
        report(output_fd, test["test"], *run_test(namespace, unit["unit"], test, inputs, job["device"]))


def active_seconds(pid: int, wall: float) -> float:
    """The time pid has been running or waiting for itself (sleeping, blocked): wall-clock
    time less what it spent waiting for a CPU, so that a busy machine does not count."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            waited = int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return wall  # no scheduler statistics here: wall-clock time
    return max(wall - waited, 0.0)


def collect(pid: int, read_fd: int, job: dict) -> tuple[dict, bytes]:
    """Wait for a unit's child while reading what it sends; stop it at its time limits.

    Returns (how it ended, the bytes it sent, at most MAX_UNIT_OUTPUT_BYTES). A child past
    ``unit_seconds`` of its own time (active_seconds) ended with "timeout", one whose
    processes together used ``unit_cpu_seconds`` of CPU "cpu", one still alive after
    ``unit_wall_seconds`` of wall-clock time (a machine too busy to judge it) "busy".
    """
    started = time.monotonic()
    _UNIT_CPU.update(base=_reaped_cpu_seconds(), checked=0.0)
    received, size, ended, open_ = [], 0, None, True
    os.set_blocking(read_fd, False)
    while open_ or ended is None:
        ready = select.select([read_fd], [], [], 0.02)[0] if open_ else time.sleep(0.02)
        if ready:
            try:
                chunk = os.read(read_fd, 1 << 20)
            except BlockingIOError:
                chunk = None
            open_ = chunk != b""
            if chunk:
                size += len(chunk)
                if size <= MAX_UNIT_OUTPUT_BYTES:
                    received.append(chunk)
        elif ended is not None:
            break  # it has ended, and nothing more is coming
        if ended is None:
            ended = _check_child(pid, started, job)
    os.close(read_fd)
    ended.setdefault("seconds", round(time.monotonic() - started, 1))
    if size > MAX_UNIT_OUTPUT_BYTES:
        return {**ended, "oversized": size}, b""
    return ended, b"".join(received)


def _check_child(pid: int, started: float, job: dict) -> dict | None:
    """How the unit's child ended, once it has (killing it at its limits); else None."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        ended = ({"ended": "killed", "signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                 else {"ended": "exited", "code": os.WEXITSTATUS(status)})
    else:
        wall = time.monotonic() - started
        late = wall > job["unit_wall_seconds"]
        # The unit's own limits first: past the wall clock, "busy" (run it again) is only for
        # a unit within them, so that one which stopped this process for a while (it is the
        # only one that can) meets its time limit, not a free second try.
        if active_seconds(pid, wall) > job["unit_seconds"]:
            how = "timeout"
        elif (late or wall - _UNIT_CPU["checked"] > 0.25) and unit_cpu_seconds() > job["unit_cpu_seconds"]:
            how = "cpu"  # its processes together: many of them starve its main one
        elif late:
            how = "busy"
        else:
            _UNIT_CPU["checked"] = wall if wall - _UNIT_CPU["checked"] > 0.25 else _UNIT_CPU["checked"]
            return None
        kill_group(pid)
        os.waitpid(pid, 0)
        ended = {"ended": how, "seconds": round(wall, 1)}
    kill_group(pid)  # what it left running may hold the pipe open
    kill_leftovers()
    return ended


_UNIT_CPU = {"base": 0.0, "checked": 0.0}  # this process's reaped CPU at the unit's start
_TICKS = os.sysconf("SC_CLK_TCK")


def _reaped_cpu_seconds() -> float:
    times = os.times()
    return times.children_user + times.children_system


def unit_cpu_seconds() -> float:
    """CPU time of the running unit's processes, the ones that ended included: every other
    process here, with what they reaped, and what this process reaped since the unit began."""
    total = _reaped_cpu_seconds() - _UNIT_CPU["base"]
    for pid in other_processes():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15]) / _TICKS  # utime..cstime
        except (OSError, IndexError, ValueError):
            pass  # ended meanwhile: its parent's cutime has it
    return total


def kill_group(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except OSError:
            pass


def warm_up(preload: list[str]) -> None:
    """Import, once and before forking, what torch imports lazily.

    Otherwise every forked unit imports it again: torch.autograd.grad with grad_outputs
    imports torch.fx's symbolic shapes (0.75 s per unit); forbidden.prepare reads torch's
    registries (0.7 s). Library code only: no submitted
    code has run yet.
    """
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    torch.autograd.grad(x * 2, [x], grad_outputs=torch.ones(2, dtype=torch.float64))
    for module in preload:
        importlib.import_module(module)
    forbidden.prepare()  # what block_for_good blocks, worked out once for every unit


def prctl(option: int, value: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, value, 0, 0, 0)


def make_undumpable() -> None:
    """No process of this sandbox may read this one's memory or open its pipes through
    /proc; forked children inherit it."""
    prctl(PR_SET_DUMPABLE, 0)
    if prctl(PR_GET_DUMPABLE, 0) != 0:
        raise SystemExit("worker: could not make itself non-dumpable; refusing to run")


def read_job(fd: int):
    """(job description, inputs .npz) from the job pipe, read to its end; None when the
    grader sent nothing (no unit of the group can run)."""
    chunks, size = [], 0
    while chunk := os.read(fd, 1 << 20):
        size += len(chunk)
        if size > MAX_JOB_BYTES:
            raise ValueError("job too large")
        chunks.append(chunk)
    os.close(fd)
    return wire.unpack_job(b"".join(chunks)) if chunks else None


def fork_before(deadline: float) -> int | None:
    """os.fork(), retried while the sandbox's process limit is full; None past the deadline."""
    while True:
        try:
            return os.fork()
        except BlockingIOError:  # EAGAIN: what an earlier unit left has not died yet
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


_OWN_PID_NAMESPACE = {"yes": False}  # set by --own-pid-namespace (the bwrap sandbox)


def other_processes() -> list[int]:
    """Every process of this sandbox but its init (pid 1), the reaper (this process's parent)
    and this one: the sandbox runs one unit at a time, so all others are what units left. Without a
    pid namespace of its own (unsandboxed), only this process's children."""
    keep = {1, os.getppid(), os.getpid()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep:
            continue
        if not _OWN_PID_NAMESPACE["yes"]:
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) != os.getpid():
                        continue
            except (OSError, IndexError, ValueError):
                continue  # ended meanwhile
        found.append(int(entry))
    return found


def kill_leftovers() -> None:
    """Kill whatever a unit left running (setsid, double forks, a fork bomb still forking):
    SIGKILL to every other process, again until none is left; a killed process forks no
    more, and this process, the subreaper, reaps the orphans."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        leftovers = other_processes()
        if not leftovers:
            return
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.01)


def run_units(job: dict, inputs, results_fd: int, served_fds: tuple[int, ...], private: set[int]) -> None:
    """Each unit in a forked child, one after the other, reported on results_fd. private:
    this process's pipes, which each child closes (but its served pair) before any
    submitted code runs."""
    os.chdir("/tmp")  # the sandbox's private, size-limited tmpfs
    closing = sorted(private - set(served_fds))
    for unit in job["units"]:
        name = unit["unit"]
        wire.write_frame(results_fd, {"event": "start", "unit": name})
        read_fd, write_fd = os.pipe()
        pid = fork_before(time.monotonic() + job["unit_seconds"])
        if pid == 0:
            code = 0
            try:
                for fd in [read_fd, *closing]:  # only this process's parent reports and reads jobs
                    os.close(fd)
                os.setpgid(0, 0)  # its own group, so that a timeout kills what it started too
                # Nothing a unit prints counts: it goes nowhere, so that no amount of output
                # can fill the sandbox's pipes or get the whole worker killed for its size.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                if served_fds:
                    served.connect(*served_fds)
                run_unit(unit, wire.UnitInputs(inputs, name), job, write_fd)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        if pid is None:
            os.close(read_fd)
            ended, sent = {"ended": "not started"}, b""
        else:
            ended, sent = collect(pid, read_fd, job)
        wire.write_frame(results_fd, {"event": "end", "unit": name, "ended": ended}, sent)


def main(results_fd: int, groups: list[tuple[int, tuple[int, ...]]], preload: list[str]) -> None:
    """groups: (job pipe, served pipes) of each group, in the order they run."""
    make_undumpable()  # first: the pipes are open in this process
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    graded_tests.strict_float_math()
    warm_up(preload)
    # Once here rather than in each unit's process (15 ms each): every unit inherits it,
    # and nothing this process does itself needs a forbidden built-in.
    forbidden.block_for_good()
    private = {results_fd} | {fd for job_fd, served_fds in groups for fd in (job_fd, *served_fds)}
    for job_fd, served_fds in groups:
        job = read_job(job_fd)  # blocks until the grader has sent it (or sent nothing)
        private.discard(job_fd)
        if job is not None:
            run_units(*job, results_fd, served_fds, private)
        for fd in served_fds:  # no later group's unit may call this group's collaborators
            os.close(fd)
            private.discard(fd)
    os.close(results_fd)


def parse_arguments(argv: list[str]) -> tuple[int, list[tuple[int, tuple[int, ...]]], list[str]]:
    results_fd, groups, preload = None, [], []
    rest = iter(argv)
    for argument in rest:
        if argument == "--results":
            results_fd = int(next(rest))
        elif argument == "--group":
            job, _, served_fds = next(rest).partition(":")
            groups.append((int(job), tuple(int(fd) for fd in served_fds.split(",") if fd)))
        elif argument == "--preload":
            preload.append(next(rest))
        elif argument == "--own-pid-namespace":
            # bwrap's init is 1, the reaper 2, this worker 3: anything else is not a sandbox
            # of its own, where signalling "every other process" would reach the machine's.
            _OWN_PID_NAMESPACE["yes"] = os.getpid() <= 4
    return results_fd, groups, preload


if __name__ == "__main__":
    main(*parse_arguments(sys.argv[1:]))
    sys.stdout.flush()
    os._exit(0)  # torch's teardown takes most of a second, and the grader waits for it
