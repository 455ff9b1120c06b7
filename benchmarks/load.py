"""Verdicts under load: a class graded on a quiet machine, then beside CPU-bound processes.

    python -m benchmarks.load [--runs 3] [--hogs 4] [--jobs 2]          (make bench-load)

A class of ten submissions whose verdicts touch every limit that a busy machine could move
(a correct one, the stubs, a bug, an endless loop, legal heavy computing, legal sleeping, a
loop that only sleeps, a cell that kills its sandbox, a flood of output, a process that
forks) is graded with `python -m autograder batch --jobs N --force` once with nothing else
started, then --runs times while --hogs processes spin on the CPUs. Every run must give each
student exactly what the first gave: the status, and the score and reason of every test.
Prints each run's time, the machine's load average, and the verdict; exits 1 on a
difference. tests/test_load.py runs the same trial.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from autograder import ASSIGNMENT, DATA_FILE, NOTEBOOK_NAME, REPO_ROOT
from autograder.submission import write_submission
from solution import source as reference

HOG = "while True: pass"


def _with(unit: str, code: str) -> dict[str, str]:
    """The reference cell of unit with code appended (run when the cell is loaded)."""
    return {unit: reference.unit_source(unit) + "\n\n" + code.strip() + "\n"}


def load_class() -> dict[str, dict[str, str]]:
    """{student: {unit: the cell that replaces the reference's}}; {} is the reference."""
    stubs = {u: reference.strip_solutions(reference.unit_source(u)) for u in reference.graded_units()}
    return {
        "correct": {},
        "stubs": stubs,
        "bug": {"rnn_forward": reference.unit_source("rnn_forward").replace("torch.tanh(", "torch.sigmoid(", 1)},
        "endless_loop": _with("WordEmbedding", "while True:\n    pass"),
        # About 2-5 s of CPU (0.4 GFLOP per product): legal, and far below the limits.
        "heavy_but_legal": _with("dot_product_attention", (
            "_x = torch.randn(600, 600, dtype=torch.float64)\n"
            "for _ in range(60):\n    _x = torch.tanh(_x @ _x)")),
        "sleeps_3_s": _with("temporal_softmax_loss", "import time as _t\n_t.sleep(3)"),
        "sleeps_forever": _with("LSTM", "import time as _t\nwhile True:\n    _t.sleep(0.5)"),
        "kills_its_sandbox": _with("WordEmbedding", "import os as _o, signal as _s\n_o.kill(_o.getppid(), _s.SIGKILL)"),
        "prints_a_flood": _with("rnn_step_forward", "for _i in range(200000):\n    print('x' * 100)"),
        "forks_a_spinner": _with("AttentionLSTM", (
            "import os as _o\nif _o.fork() == 0:\n    while True:\n        pass")),
    }


def make_course(root: Path) -> Path:
    course = root / "course"
    for student, cells in load_class().items():
        write_submission(course / "submitted" / student / ASSIGNMENT / NOTEBOOK_NAME, cells)
    return course


def verdicts(course: Path) -> dict[str, tuple]:
    """{student: (status, ((unit, test, score, reason), ...))} from the batch's stored results."""
    found = {}
    for path in sorted((course / "grader_results").glob("*.json")):
        stored = json.loads(path.read_text())
        result = stored.get("result") or stored.get("not_graded", {}).get("result", {})
        found[path.stem] = (result.get("status", "?"), tuple(
            (t["unit"], t["test"], t["score"], t["reason"]) for t in result.get("tests", ())))
    return found


def grade_class(course: Path, jobs: int, data: Path) -> tuple[float, dict]:
    """(seconds, verdicts) of one `batch --force` of the course."""
    env = {**os.environ, "CAPTIONING_GRADER_SECRET": "load trial"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "autograder", "batch", str(course), "--jobs", str(jobs),
                           "--force", "--data", str(data)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise RuntimeError(f"batch exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, verdicts(course)


def differences(expected: dict, got: dict) -> list[str]:
    """What differs between two runs' verdicts, one line per student and test."""
    lines = []
    for student in sorted(set(expected) | set(got)):
        want, have = expected.get(student), got.get(student)
        if want == have:
            continue
        if want is None or have is None or want[0] != have[0]:
            lines.append(f"{student}: status {want and want[0]} -> {have and have[0]}")
            continue
        for a, b in zip(want[1], have[1]):
            if a != b:
                lines.append(f"{student}: {a} -> {b}")
    return lines


def trial(root: Path, *, runs: int = 3, hogs: int = 4, jobs: int = 2,
          data: Path = DATA_FILE, echo=print) -> list[str]:
    """Grade the class once, then runs times beside hogs spinning processes; the
    differences from the first run (none: the verdicts do not depend on load)."""
    course = make_course(root)
    seconds, first = grade_class(course, jobs, data)
    echo(f"quiet run               {seconds:7.1f} s   load average {os.getloadavg()[0]:5.1f}")
    found = []
    spinners = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
    try:
        for run in range(1, runs + 1):
            seconds, got = grade_class(course, jobs, data)
            lines = differences(first, got)
            echo(f"beside {hogs} spinners, run {run} {seconds:7.1f} s   load average "
                 f"{os.getloadavg()[0]:5.1f}   {'identical' if not lines else f'{len(lines)} differences'}")
            found += [f"run {run}: {line}" for line in lines]
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"verdicts under load: {len(load_class())} submissions, JOBS={args.jobs}, {os.cpu_count()} CPUs",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="load-trial-") as scratch:
        found = trial(Path(scratch), runs=args.runs, hogs=args.hogs, jobs=args.jobs,
                      echo=lambda line: print(line, flush=True))
    for line in found:
        print(line)
    print("every run gave the quiet run's verdicts" if not found else f"{len(found)} differences")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
