"""The grading worker: runs a submission's units on the grader's inputs, inside the sandbox.

    python worker.py JOB_DIR OUT_DIR

JOB_DIR (read-only) holds this file, runners.py, forbidden.py, job.json, inputs.npz and the
code files job.json names. For every unit the worker forks once (torch is imported once,
before any computation), runs the unit's code and tests in the child, and the child writes
OUT_DIR/<unit>.npz (outputs) and OUT_DIR/<unit>.json (errors). Everything written here is
untrusted data to the grader: it compares the arrays itself and only shows the errors.
This file imports nothing from the repository besides its two neighbours.
"""

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


def load_namespace(job_dir: str, code_files: list[dict]) -> dict:
    """Execute the provided code, the reference code of other units and the unit's code, in
    that order, in one namespace; each file is compiled under its cell's name."""
    namespace = {"__name__": "submission", "__builtins__": __builtins__}
    for entry in code_files:
        with open(os.path.join(job_dir, entry["file"])) as f:
            source = f.read()
        with forbidden.guard():
            exec(compile(source, f"<{entry['name']}>", "exec"), namespace)
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


def run_unit(job_dir: str, out_dir: str, unit: dict, inputs, device: str) -> None:
    """In the forked child: every case of every test of one unit."""
    torch.set_num_threads(1)
    block_forbidden_for_good()
    outputs, errors = {}, []
    try:
        namespace = load_namespace(job_dir, unit["code"])
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


def warm_up(units: list[str]) -> None:
    """Import, once and before forking, what torch and the provided code import lazily.

    Otherwise every forked unit imports it again: torch.autograd.grad with grad_outputs
    imports torch.fx's symbolic shapes (0.75 s per unit), and the provided ImageEncoder
    imports torchvision.models (1.9 s). Library code only: no submitted code runs here.
    """
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    torch.autograd.grad(x * 2, [x], grad_outputs=torch.ones(2, dtype=torch.float64))
    if "CaptioningRNN" in units:
        import torchvision.models  # noqa: F401


def main(job_dir: str, out_dir: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    warm_up([unit["unit"] for unit in job["units"]])
    inputs = np.load(os.path.join(job_dir, "inputs.npz"), allow_pickle=False)
    for unit in job["units"]:
        unit_inputs = _UnitInputs(inputs, unit["unit"])
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)  # its own group, so a timeout kills what it started too
            # Nothing a unit prints counts: it goes nowhere, so that no amount of output can
            # fill the sandbox's pipes or get the whole worker killed for its size.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = 0
            try:
                run_unit(job_dir, out_dir, unit, unit_inputs, job["device"])
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        ended = wait_for(pid, job["unit_timeout"])
        try:
            os.killpg(pid, signal.SIGKILL)  # whatever the unit left running (a fork bomb)
        except OSError:
            pass
        with open(os.path.join(out_dir, unit["unit"] + ".exit.json"), "w") as f:
            json.dump(ended, f)


class _UnitInputs:
    """The entries of inputs.npz under "<unit>/", with that prefix removed (lazy)."""

    def __init__(self, npz, unit: str):
        self._npz, self._prefix = npz, unit + "/"
        self.files = [k[len(self._prefix):] for k in npz.files if k.startswith(self._prefix)]

    def __getitem__(self, key):
        return self._npz[self._prefix + key]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
