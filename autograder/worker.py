"""The grading worker: runs a submission's units on the grader's inputs, inside the sandbox.

    python worker.py OUT_DIR [--preload MODULE]... GROUP=FD [GROUP=FD ...]

One sandbox grades one submission. This process imports torch once (and what torch and the
provided code import lazily), makes itself non-dumpable, and forks one child per worker
group. Each child reads its job (job.json and the hidden inputs, in one .npz) from its own
pipe FD, which no other process here holds open, and runs each of its units in a forked
grandchild that writes OUT_DIR/GROUP/<unit>.npz (outputs) and <unit>.json (errors).

A group's job holds the reference code of other units (see grade.py). Non-dumpable
processes cannot be read by their siblings (ptrace, /proc/PID/mem, /proc/PID/fd need
CAP_SYS_PTRACE, which nothing here has), so the student code of one group never sees the
reference code sent to another. Everything written to OUT_DIR is untrusted data to the
grader: it compares the arrays itself and only shows the errors. This file imports nothing
from the repository besides its two neighbours.
"""

import ctypes
import importlib
import io
import json
import os
import signal
import sys
import time
import traceback
import warnings

import numpy as np
import torch

import forbidden
import runners

_MAX_ERROR_CHARS = 300
MAX_JOB_BYTES = 1 << 30
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
    """Execute the provided code, the reference code of other units and the unit's code, in
    that order, in one namespace; each source is compiled under its cell's name."""
    namespace = {"__name__": "submission", "__builtins__": __builtins__}
    for entry in code:
        with forbidden.guard():
            exec(compile(entry["source"], f"<{entry['name']}>", "exec"), namespace)
    return namespace


def to_array(value, name: str) -> np.ndarray:
    """A plain numpy copy of a tensor output; anything else is an error for the grader."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"output {name} is a {type(value).__name__}, not a torch.Tensor")
    return np.array(torch.Tensor.numpy(value.detach().cpu().clone().as_subclass(torch.Tensor)))


_FOREVER = []  # what block_forbidden_for_good made: kept alive until the child ends


def block_forbidden_for_good() -> None:
    """In the forked child, before any submitted code: forbidden built-ins raise until it ends.

    The guard is entered and never left, so code that replaces ``forbidden.guard`` or runs
    after the tests (e.g. from a patched ``numpy.savez``) cannot escape it; and the aten ops
    themselves get raising kernels, which also stops the routes that skip the Python names
    the guard patches (``torch._C._VariableFunctions.lstm_cell``, ``torch.ops.aten.lstm``).
    """
    guard = forbidden.guard()
    guard.__enter__()
    library = torch.library.Library("aten", "IMPL")
    _FOREVER.extend([guard, library])  # a Library removes its kernels when collected

    def raiser(name):
        def kernel(*args, **kwargs):
            raise forbidden.ForbiddenModuleError(f"{name} is not allowed in this assignment")
        return kernel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        for name in forbidden.FORBIDDEN_TORCH_OPS:
            packet = getattr(torch.ops.aten, name)
            for overload in packet.overloads():
                qualified = name if overload == "default" else f"{name}.{overload}"
                for key in ("CompositeImplicitAutograd", "CompositeExplicitAutograd", "Autograd", "CPU", "CUDA"):
                    library.impl(qualified, raiser(f"torch.{name}"), key)


def run_unit(out_dir: str, unit: dict, inputs, device: str) -> None:
    """In the forked child: every case of every test of one unit."""
    torch.set_num_threads(1)
    block_forbidden_for_good()
    outputs, errors = {}, []
    try:
        namespace = load_namespace(unit["code"])
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: nothing ran
        errors.append({"test": "*", "case": "*", "error": "your cell failed to run: " + describe(exc)})
        namespace = None
    for test in unit["tests"] if namespace is not None else []:
        run = runners.runner(unit["unit"], test["test"])
        for case in range(test["cases"]):
            prefix = f"{test['test']}/{case}/"
            case_inputs = {k[len(prefix):]: torch.from_numpy(inputs[k]).to(device)
                           for k in inputs.files if k.startswith(prefix)}
            case_inputs.update({k: torch.from_numpy(inputs[k]).to(device)
                                for k in inputs.files if k.startswith("shared/")})
            case_inputs = {k.removeprefix("shared/"): v for k, v in case_inputs.items()}
            try:
                with forbidden.guard():
                    result = (run(namespace, case_inputs, test["options"]) if "options" in test
                              else run(namespace, case_inputs))
                for name, value in result.items():
                    outputs[prefix + name] = to_array(value, name)
            except BaseException as exc:
                errors.append({"test": test["test"], "case": case, "error": describe(exc)})
    name = os.path.join(out_dir, unit["unit"])
    np.savez(name + ".partial.npz", **outputs)
    os.replace(name + ".partial.npz", name + ".npz")
    with open(name + ".json", "w") as f:
        json.dump({"errors": errors}, f)


def wait_for(pid: int, timeout: float) -> dict:
    """Wait for a child; kill its process group past the timeout. Returns how it ended."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return {"ended": "killed", "signal": os.WTERMSIG(status)}
            return {"ended": "exited", "code": os.WEXITSTATUS(status)}
        if time.monotonic() > deadline:
            for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                except OSError:
                    pass
            os.waitpid(pid, 0)
            return {"ended": "timeout", "seconds": timeout}
        time.sleep(0.01)


def warm_up(preload: list[str]) -> None:
    """Import, once and before forking, what torch and the provided code import lazily.

    Otherwise every forked unit imports it again: torch.autograd.grad with grad_outputs
    imports torch.fx's symbolic shapes (0.75 s per unit), and the provided ImageEncoder
    imports torchvision.models (1.9 s, named in preload). Library code only: no submitted
    code has run yet.
    """
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    torch.autograd.grad(x * 2, [x], grad_outputs=torch.ones(2, dtype=torch.float64))
    for module in preload:
        importlib.import_module(module)


def prctl(option: int, value: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, value, 0, 0, 0)


def make_undumpable() -> None:
    """No process of this sandbox may read this one's memory; forked children inherit it."""
    prctl(PR_SET_DUMPABLE, 0)
    if prctl(PR_GET_DUMPABLE, 0) != 0:
        raise SystemExit("worker: could not make itself non-dumpable; refusing to run")


def read_job(fd: int):
    """(job description, inputs .npz) from the group's pipe, read to its end; None when the
    grader sent nothing (no unit of the group can run)."""
    chunks, size = [], 0
    while chunk := os.read(fd, 1 << 20):
        size += len(chunk)
        if size > MAX_JOB_BYTES:
            raise ValueError("job too large")
        chunks.append(chunk)
    os.close(fd)
    if not chunks:
        return None
    inputs = np.load(io.BytesIO(b"".join(chunks)), allow_pickle=False)
    return json.loads(inputs["job.json"].tobytes()), inputs


def fork_before(deadline: float) -> int | None:
    """os.fork(), retried while the sandbox's process limit is full; None past the deadline."""
    while True:
        try:
            return os.fork()
        except BlockingIOError:  # EAGAIN: e.g. a fork bomb in another group's unit
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or it ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def kill_leftovers() -> None:
    """Kill what a unit left running. This process is its group's subreaper, so a unit's
    descendants that escaped its process group (setsid, double fork) are its children."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        leftovers = children_of(os.getpid())
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


def run_group(fd: int, out_dir: str) -> None:
    """In a group's child: read the job, then run each unit in a forked grandchild."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    job = read_job(fd)
    if job is None:
        return
    job, inputs = job
    os.chdir(out_dir)  # the units' working directory: nothing else there is writable
    for unit in job["units"]:
        unit_inputs = _UnitInputs(inputs, unit["unit"])
        pid = fork_before(time.monotonic() + job["unit_timeout"])
        if pid == 0:
            os.setpgid(0, 0)  # its own group, so a timeout kills what it started too
            # Nothing a unit prints counts: it goes nowhere, so that no amount of output can
            # fill the sandbox's pipes or get the whole worker killed for its size.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = 0
            try:
                run_unit(out_dir, unit, unit_inputs, job["device"])
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        if pid is None:
            ended = {"ended": "not started"}
        else:
            ended = wait_for(pid, job["unit_timeout"])
            try:
                os.killpg(pid, signal.SIGKILL)  # whatever the unit left running (a fork bomb)
            except OSError:
                pass
        kill_leftovers()
        with open(os.path.join(out_dir, unit["unit"] + ".exit.json"), "w") as f:
            json.dump(ended, f)


def main(out_dir: str, preload: list[str], groups: dict[str, int]) -> None:
    make_undumpable()  # first: the job pipes are open in this process
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    warm_up(preload)
    children = []
    for group, fd in groups.items():
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for other in groups.values():
                    if other != fd:
                        os.close(other)
                run_group(fd, os.path.join(out_dir, group))
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    for fd in groups.values():
        os.close(fd)
    for pid in children:
        os.waitpid(pid, 0)


class _UnitInputs:
    """The entries of inputs.npz under "<unit>/", with that prefix removed (lazy)."""

    def __init__(self, npz, unit: str):
        self._npz, self._prefix = npz, unit + "/"
        self.files = [k[len(self._prefix):] for k in npz.files if k.startswith(self._prefix)]

    def __getitem__(self, key):
        return self._npz[self._prefix + key]


def parse_arguments(argv: list[str]) -> tuple[str, list[str], dict[str, int]]:
    out_dir, preload, groups = argv[0], [], {}
    rest = iter(argv[1:])
    for argument in rest:
        if argument == "--preload":
            preload.append(next(rest))
        else:
            group, fd = argument.split("=")
            groups[group] = int(fd)
    return out_dir, preload, groups


if __name__ == "__main__":
    main(*parse_arguments(sys.argv[1:]))
    sys.stdout.flush()
    os._exit(0)  # torch's teardown takes most of a second, and the grader waits for it
