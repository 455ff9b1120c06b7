"""Where a submission's units run: one sandbox, its worker groups one after the other.

The isolation rule: student code never runs where it could reach reference code, expected
values, the secret, or a job it could profit from. A unit's tests use correct collaborators
(so that a bug elsewhere costs nothing twice), and those are served by the grader
(served.py, reference_service.py), never sent as code. A served collaborator answers any
input, so the units are graded in groups, in this order:

* "units": every unit that needs no other unit (nothing is served to them);
* "attention_lstm": AttentionLSTM, with lstm_gates and dot_product_attention served;
* "captioner": CaptioningRNN, with every other unit served.

A group's job (its units' code and hidden inputs) and its served pipes reach only its own
processes, and only once every unit of the earlier groups has ended, been reported and had
what it left running killed. So what a unit learns from a served reference can reach only
units graded after it, and those are served everything it could learn: information flows
forward in time only, never into a result already reported. (Three sandboxes, one per
group, cost three torch imports per submission; the order gives the same guarantee for one.)

Round two (collaborators.py) starts a second sandbox, only for a submission that needs it:
one group per unit judged again, in notebook order, served forward passes only (a forward
pass judged again, rnn_forward, gradients too, on its own hidden inputs). Forward
values can be computed from the assignment's equations; the one served answer worth having,
rnn_step_backward's, goes only to rnn_backward, judged last. A second sandbox, because
round one's captioner group, served everything (gradients too), ran last in the first.

The sandbox (sandbox.py: its own user, pid, network, ipc and mount namespaces and private
/tmp; nothing of this machine is writable) starts before its jobs exist (it imports torch
meanwhile); each group's job goes down a pipe of its own, the reports come back as frames
(wire.py) on another, served calls travel on a pair per served group. This module does not
import torch, so that the command line can start the sandbox before importing it itself.
"""

import os
import select
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograder import sandbox, wire
from solution import source as reference_source

AUTOGRADER_DIR = Path(__file__).resolve().parent
# The only files of this machine a sandbox sees, besides the system and Python.
WORKER_FILES = ("worker.py", "graded_tests.py", "forbidden.py", "served.py", "wire.py")

# Limits of one unit (all its tests), enforced in the sandbox by worker.py. A unit's time
# is what it spends computing, sleeping or blocked: time spent waiting for a CPU on a busy
# machine does not count, so that load changes no verdict. A unit's time is never less
# than its CPU time, so a loop that computes always meets the CPU limit first and one that
# sleeps the time limit: the reason given does not depend on the machine either.
UNIT_SECONDS = 45
UNIT_CPU_SECONDS = 30
# Past this wall-clock time the machine is too busy to judge the unit: not the student's.
UNIT_WALL_SECONDS = 600
STARTUP_SECONDS = 300  # a sandbox's start (importing torch) on a loaded machine
# Of the GPU's memory, for each unit's process under --device cuda (one at a time per
# submission): set before student code runs, so that JOBS submissions graded side by side
# cannot starve each other. The caching allocator enforces it in the unit's own process (which could raise it
# again: a cooperative bound, see the README).
CUDA_MEMORY_FRACTION = 0.1
MAX_UNIT_REPORT_BYTES = 80 << 20
SERVED_GRACE_SECONDS = 30  # a unit's outputs (worker.MAX_UNIT_OUTPUT_BYTES) and more

UNITS = tuple(reference_source.graded_units())
# The student's own code of these units runs with the unit (a backward pass needs the
# cache its own forward pass made).
STUDENT_DEPENDENCIES = {"rnn_step_backward": ("rnn_step_forward",), "rnn_backward": ("rnn_forward",)}
# The student's code of these units runs with the unit when it can run at all: the usual
# CS231n way writes the sequence functions with calls to the step functions.
STUDENT_HELPERS = {"rnn_forward": ("rnn_step_forward",),
                   "rnn_backward": ("rnn_step_forward", "rnn_step_backward")}
# Every unit whose student code may run with a unit: where a bug of theirs can cost it.
STUDENT_COLLABORATORS = {u: tuple(c for c in UNITS if c in STUDENT_DEPENDENCIES.get(u, ()) + STUDENT_HELPERS.get(u, ()))
                         for u in UNITS if u in STUDENT_DEPENDENCIES or u in STUDENT_HELPERS}


@dataclass(frozen=True)
class Group:
    """Units graded one after the other in one sandbox, and the units whose reference
    behaviour the grader serves them (all of it, or, for a unit judged again, forward
    passes only: a hand-written backward pass must not obtain its answer as a gradient)."""

    name: str
    units: tuple[str, ...]
    served: tuple[str, ...] = ()
    gradients: bool = True


# Round one: AttentionLSTM and CaptioningRNN are tested with correct collaborators served.
WORKER_GROUPS = (
    Group("units", tuple(u for u in UNITS if u not in ("AttentionLSTM", "CaptioningRNN"))),
    Group("attention_lstm", ("AttentionLSTM",), ("LSTM", "dot_product_attention")),
    Group("captioner", ("CaptioningRNN",), tuple(u for u in UNITS if u != "CaptioningRNN")),
)


def again_group(unit: str, served: tuple[str, ...]) -> Group:
    """Round two: unit judged again, in a sandbox of its own (collaborators.py). A hand-written
    backward pass is served forward passes only (the gradients of rnn_step_forward are
    rnn_step_backward's answer); a forward pass (rnn_forward), whose test differentiates
    through it, is served the gradients too: on its own inputs, which no later group shares."""
    return Group(f"again:{unit}", (unit,), served, gradients=unit not in STUDENT_DEPENDENCIES)


@dataclass
class SandboxOutcome:
    """What the sandbox reported: the units that ended, and the one running when it died."""

    ended: dict = field(default_factory=dict)  # unit -> (how it ended: dict, bytes it sent)
    running: str | None = None  # a unit started, never ended: the sandbox died meanwhile
    problem: str = ""  # why the report stream broke, if it did
    sandbox: "sandbox.SandboxResult | None" = None
    error: str = ""  # the sandbox could not run at all
    watchdog: bool = False  # the grader stopped it for silence: the machine's fault, not a unit's

    @property
    def stopped_by_unit(self) -> bool:
        """The worker was found stopped while a unit ran: only that unit can have done it."""
        return (self.running is not None and self.sandbox is not None
                and self.sandbox.killed_reason == sandbox.WORKER_STOPPED)

    def diagnostics(self) -> dict:
        """Instructor-only: how the sandbox ended and the tail of its stderr."""
        run = self.sandbox
        return {"returncode": None if run is None else run.returncode,
                "killed_reason": None if run is None else run.killed_reason,
                "stderr_tail": "" if run is None else run.stderr[-2000:],
                "stream_problem": self.problem, "error": self.error,
                "defences": [] if run is None else run.defences,
                "missing_defences": [] if run is None else run.missing_defences}


class SubmissionSandbox:
    """The sandbox of one submission, started at once: it runs the given groups in their
    order, each once ``send`` has given it its job."""

    def __init__(self, allow_unsandboxed: bool = False, groups: tuple[Group, ...] = WORKER_GROUPS):
        self.groups = groups
        self.outcome = SandboxOutcome()
        self._cancel = threading.Event()
        self._jobs, self._served = {}, {}  # group -> our end of its job pipe, of its served pipes
        self._results, results_write = os.pipe()
        group_args, group_fds = self._group_pipes()
        passed = [results_write, *group_fds]
        argv = [str(AUTOGRADER_DIR / "worker.py"), "--results", str(results_write), *group_args]
        if sandbox.sandbox_status()[0]:  # bwrap: every other process there is this sandbox's
            argv.append("--own-pid-namespace")
        units = sum(len(g.units) for g in self.groups)
        limits = sandbox.Limits(wall_seconds=STARTUP_SECONDS + units * (UNIT_WALL_SECONDS + 60))
        files = [AUTOGRADER_DIR / name for name in WORKER_FILES]

        def run_sandbox():
            try:
                self.outcome.sandbox = sandbox.run_worker(
                    argv, readonly_files=files, limits=limits, allow_unsandboxed=allow_unsandboxed,
                    pass_fds=tuple(passed), cancel=self._cancel)
            except BaseException as exc:  # run_worker has closed the passed descriptors
                self.outcome.error = f"{type(exc).__name__}: {exc}"

        # Daemon threads: should this process end without wait() (Ctrl-C at the wrong
        # moment), it does not wait for the sandbox, which dies with it (--die-with-parent).
        self._threads = [threading.Thread(target=run_sandbox, name="sandbox", daemon=True),
                         threading.Thread(target=self._read_reports, name="reports", daemon=True)]
        self._served_threads = []
        for thread in self._threads:
            thread.start()

    def _group_pipes(self) -> tuple[list[str], list[int]]:
        """(worker.py's --group arguments, the worker's ends of the pipes they name): a job pipe
        for each group, and a request and a reply pipe for each group that is served."""
        args, passed = [], []
        for group in self.groups:
            job_read, self._jobs[group.name] = os.pipe()
            passed.append(job_read)
            spec = str(job_read)
            if group.served:
                request_read, request_write = os.pipe()
                reply_read, reply_write = os.pipe()
                self._served[group.name] = (request_read, reply_write)
                passed += [request_write, reply_read]
                spec += f":{request_write},{reply_read}"
            args += ["--group", spec]
        return args, passed

    def send(self, group: str, blob: bytes, service=None) -> None:
        """Give a group its job (written on a thread: the worker reads it only when the
        earlier groups are done); service (a ReferenceService) answers its served calls."""
        served = self._served.pop(group, None)
        if served is not None:
            if service is not None:
                thread = threading.Thread(target=service.serve, args=served, name=f"served-{group}", daemon=True)
                thread.start()
                self._served_threads.append(thread)
            else:
                for fd in served:
                    _close(fd)
        job = self._jobs.pop(group)
        thread = threading.Thread(target=_write_all, args=(job, blob), name=f"job-{group}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def wait(self) -> SandboxOutcome:
        """Close what was not sent (the worker then skips those groups); wait for the sandbox."""
        for fd in [*self._jobs.values(), *(fd for pair in self._served.values() for fd in pair)]:
            _close(fd)
        self._jobs, self._served = {}, {}
        for thread in self._threads:  # the sandbox, its reports, the job writers
            thread.join()
        for thread in self._served_threads:  # the sandbox has ended: a call still running is abandoned
            thread.join(timeout=SERVED_GRACE_SECONDS)
            if thread.is_alive():
                self.outcome.problem = self.outcome.problem or "a served call was still running"
        return self.outcome

    close = wait

    def __enter__(self) -> "SubmissionSandbox":
        return self

    def __exit__(self, *exc_info) -> bool:
        self.wait()
        return False

    def _read_reports(self) -> None:
        """Collect the worker's frames; stop the sandbox when it goes silent for longer than
        any unit may take (a stopped or wedged worker)."""
        fd, allowance = self._results, STARTUP_SECONDS
        try:
            while True:
                deadline = time.monotonic() + allowance
                while not select.select([fd], [], [], None if self._cancel.is_set()
                                        else max(deadline - time.monotonic(), 0))[0]:
                    if not self._cancel.is_set():  # silent too long: stop it, await the end
                        self.outcome.problem = f"the worker was silent for {allowance} s"
                        self.outcome.watchdog = True
                        self._cancel.set()
                frame = wire.read_frame(fd, MAX_UNIT_REPORT_BYTES)
                if frame is None:
                    return
                header, payload = frame
                unit = header.get("unit")
                if header.get("event") == "start" and unit in UNITS:
                    self.outcome.running, allowance = unit, UNIT_WALL_SECONDS + 60
                elif header.get("event") == "end" and unit in UNITS and isinstance(header.get("ended"), dict):
                    self.outcome.ended[unit] = (header["ended"], payload)
                    self.outcome.running, allowance = None, 60
                else:
                    raise wire.WireError("unexpected frame")
        except (wire.WireError, EOFError, OSError) as exc:
            self.outcome.problem = self.outcome.problem or f"report stream broken: {exc}"
            self._cancel.set()
        finally:
            os.close(fd)


def _write_all(fd: int, blob: bytes) -> None:
    """Write blob to the pipe and close it; a sandbox that has ended reads no more (EPIPE):
    its units get no result, and wait() says why."""
    try:
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass
    finally:
        os.close(fd)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
