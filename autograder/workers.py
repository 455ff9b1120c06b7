"""Where a submission's units run: three worker groups in one sandbox per submission.

Which code runs beside which is the isolation rule: no student code ever runs in a process
that holds the reference code of its own unit. Tests of a unit that needs other units use
their reference (so that their bugs cost nothing twice), so the units are split into
groups, each a separate non-dumpable process in the sandbox (see worker.py):

* "units": every unit that needs no other unit's code;
* "attention_lstm": AttentionLSTM, with the reference LSTM gates and attention;
* "captioner": CaptioningRNN, with the reference of every other unit.

``Workers`` starts the sandbox before the jobs exist (it imports torch meanwhile) and then
feeds each group its job down the group's own pipe. This module does not import torch, so
that the command line can start the sandbox before importing torch itself.
"""

import os
import shutil
import tempfile
import threading
from pathlib import Path

from autograder import sandbox
from solution import source as reference_source

AUTOGRADER_DIR = Path(__file__).resolve().parent
WORKER_FILES = ("worker.py", "runners.py", "forbidden.py")
UNIT_TIMEOUT_SECONDS = 30

UNITS = tuple(reference_source.graded_units())
# The student's own code of these units runs with the unit (a backward pass needs the
# cache its own forward pass made).
STUDENT_DEPENDENCIES = {"rnn_step_backward": ("rnn_step_forward",), "rnn_backward": ("rnn_forward",)}
# The student's code of these units runs with the unit when it can run at all: the usual
# CS231n way writes the sequence functions with calls to the step functions.
STUDENT_HELPERS = {"rnn_forward": ("rnn_step_forward",),
                   "rnn_backward": ("rnn_step_forward", "rnn_step_backward")}
# The reference code of these units runs with the unit, so that their bugs cost nothing here.
REFERENCE_DEPENDENCIES = {
    "AttentionLSTM": ("LSTM", "dot_product_attention"),
    "CaptioningRNN": tuple(u for u in UNITS if u != "CaptioningRNN"),
}
WORKER_GROUPS = (
    ("units", tuple(u for u in UNITS if u not in REFERENCE_DEPENDENCIES)),
    ("attention_lstm", ("AttentionLSTM",)),
    ("captioner", ("CaptioningRNN",)),
)
# The provided ImageEncoder imports torchvision.models: imported once, before the fork.
PRELOAD = ("torchvision.models",)


class Workers:
    """The sandbox that grades one submission: every group's process, started at once.

    ``send`` gives a group its job (an .npz, see grade.job_blob) and closes its pipe; a
    group sent nothing ends without running anything. ``wait`` closes what was not sent and
    waits for the sandbox. Outputs land in ``out_dir(group)``; ``close`` removes them.
    """

    def __init__(self, allow_unsandboxed: bool = False):
        self._scratch = Path(tempfile.mkdtemp(prefix="captioning-grade-"))
        worker_dir = self._scratch / "worker"
        worker_dir.mkdir()
        for name in WORKER_FILES:
            shutil.copy(AUTOGRADER_DIR / name, worker_dir / name)
        argv = [str(worker_dir / "worker.py"), str(self._scratch / "out")]
        for module in PRELOAD:
            argv += ["--preload", module]
        self._pipes, read_ends = {}, []
        for group, _ in WORKER_GROUPS:
            self.out_dir(group).mkdir(parents=True)
            read_end, self._pipes[group] = os.pipe()
            read_ends.append(read_end)
            argv.append(f"{group}={read_end}")
        # Groups run side by side: the largest one may use every one of its units' timeouts.
        seconds = UNIT_TIMEOUT_SECONDS * max(len(units) for _, units in WORKER_GROUPS) + 60
        limits = sandbox.Limits(wall_seconds=seconds, cpu_seconds=seconds, memory_bytes=4 << 30,
                                max_processes=96, output_bytes=64 << 10)
        self._outcome = []  # [SandboxResult] or [exception], once the run has ended

        def run():
            try:
                self._outcome.append(sandbox.run_worker(
                    argv, workdir=self._scratch / "out", readonly_dirs=[worker_dir],
                    limits=limits, allow_unsandboxed=allow_unsandboxed, pass_fds=tuple(read_ends)))
            except BaseException as exc:
                self._outcome.append(exc)

        # A daemon thread: should this process end without wait() (Ctrl-C at the wrong
        # moment), it does not wait for the sandbox, which dies with it (--die-with-parent).
        self._thread = threading.Thread(target=run, name="sandbox", daemon=True)
        self._thread.start()

    def out_dir(self, group: str) -> Path:
        return self._scratch / "out" / group

    def send(self, group: str, blob: bytes) -> None:
        """Write a group's job and close its pipe (blocks until the group has read it)."""
        with open(self._pipes.pop(group), "wb") as pipe:
            try:
                pipe.write(blob)
            except BrokenPipeError:
                pass  # the sandbox has ended: the group's units get "no result"

    def wait(self) -> sandbox.SandboxResult:
        """Close the pipes not sent (those groups end at once); wait for the sandbox."""
        while self._pipes:
            os.close(self._pipes.popitem()[1])
        self._thread.join()
        if isinstance(self._outcome[0], BaseException):
            raise self._outcome[0]
        return self._outcome[0]

    def close(self) -> None:
        """Wait for the sandbox (see wait) and remove its files."""
        try:
            self.wait()
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)
