"""How long grading takes: one submission, a class, stock nbgrader, the notebook itself.

    python -m benchmarks.grading [--runs 5] [--class-size 50] [--class-runs 5]
                                 [--stock-size 1] [--stock-runs 5]

Prints medians (and every run) of:
* one submission graded end to end, as `python -m autograder grade` runs it (interpreter
  start, torch import, reference outputs, the sandboxed worker);
* a cold grade against `python -c "import torch"` (part "cold"), timed alternately, and the
  ratio of their medians (target: at most 1.5x);
* round two's cost (part "again"): a submission whose rnn_step_forward drops its bias, so
  that rnn_step_backward is judged again in a second sandbox, timed alternately with the
  correct one;
* a class of --class-size copies of the reference with JOBS=1 and JOBS=2 (`python -m
  autograder batch`, nothing cached), with the machine's CPU time from /proc/stat (every
  process's, the sandboxes' included) per submission (target for JOBS=2: at most 2 CPU-s
  per submission and 60 s for 50);
* stock `nbgrader autograde` (executing the instructor notebook in a kernel) on
  --stock-size copies, --stock-runs times, per submission, and its ratio to ours (one
  submission, end to end), measured in the same run;
* the instructor notebook executed top to bottom on the CPU (nbclient).
Targets on the 2-core development machine: one submission under 10 s; 50 submissions
under 5 minutes with JOBS=2; the notebook under 5 minutes.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autograder import ASSIGNMENT, NOTEBOOK_NAME, REPO_ROOT, SOURCE_NOTEBOOK
ENV = {**os.environ, "CAPTIONING_PRETRAINED": "0", "CUDA_VISIBLE_DEVICES": "",
       "CAPTIONING_GRADER_SECRET": "benchmark", "PYTHONPATH": str(REPO_ROOT),
       "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def timed(command, **kwargs) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=ENV, **kwargs)
    return time.perf_counter() - start


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (/proc/stat, every process)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def timed_cpu(command, **kwargs) -> tuple[float, float]:
    """(wall seconds, machine CPU seconds) of one run of command."""
    cpu = machine_cpu_seconds()
    wall = timed(command, **kwargs)
    return wall, machine_cpu_seconds() - cpu


def report(label: str, seconds: list[float], per: int = 1) -> float:
    median = statistics.median(seconds)
    runs = ", ".join(f"{s:.1f}" for s in seconds)
    extra = f" = {median / per:.1f} s per submission" if per > 1 else ""
    print(f"{label:<46} median {median:7.1f} s{extra}   (runs: {runs})", flush=True)
    return median


def make_class(root: Path, size: int, config: Path | None = None) -> Path:
    """A course directory with size copies of the reference notebook as submissions."""
    course = root / f"class{size}-{len(list(root.iterdir()))}"
    for i in range(size):
        target = course / "submitted" / f"student{i:03d}" / ASSIGNMENT
        target.mkdir(parents=True)
        shutil.copy(SOURCE_NOTEBOOK, target / NOTEBOOK_NAME)
    if config:
        shutil.copy(config, course / "nbgrader_config.py")
    return course


def stock_nbgrader_course(root: Path, size: int) -> Path:
    """nbgrader with its default pipeline: every notebook executed in a kernel."""
    course = make_class(root, size)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.root = __file__.rsplit('/', 1)[0]\n"
        "c.Execute.timeout = 900\n")
    source = course / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    for name in (NOTEBOOK_NAME, "captioning_helpers.py"):
        shutil.copy(SOURCE_NOTEBOOK.parent / name, source / name)
    os.symlink(REPO_ROOT / "data" / "coco.pt", source / "coco.pt")
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT,
                    "--force"], cwd=course, check=True, capture_output=True, env=ENV)
    # The submissions need the data and helpers beside them, as students have them.
    for student in (course / "submitted").iterdir():
        for name in ("captioning_helpers.py", "coco.pt"):
            shutil.copy(source / name, student / ASSIGNMENT / name)
    return course


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--class-size", type=int, default=50)
    parser.add_argument("--class-runs", type=int, default=5)
    parser.add_argument("--class-jobs", default="1,2", help="the JOBS values of the class runs")
    parser.add_argument("--stock-size", type=int, default=1)
    parser.add_argument("--stock-runs", type=int, default=5)
    parser.add_argument("--parts", default="one,cold,class,stock,notebook",
                        help="which figures to measure (stock needs one: it prints the ratio)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    python = sys.executable
    print(f"grading benchmarks: {os.cpu_count()} CPUs, python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as scratch:
        root = Path(scratch)
        if parts & {"one", "stock"}:
            one = [timed([python, "-m", "autograder", "grade", str(SOURCE_NOTEBOOK),
                          "--results", str(root / "r.json")], cwd=REPO_ROOT) for _ in range(args.runs)]
            ours = report("one submission, end to end (target < 10 s)", one)

        if "cold" in parts:
            time_cold_against_import(root, python, args.runs)

        if "again" in parts:
            time_round_two(root, python, args.runs)

        for jobs in map(int, args.class_jobs.split(",")) if "class" in parts else ():
            runs = [timed_cpu([python, "-m", "autograder", "batch", str(make_class(root, args.class_size)),
                               "--jobs", str(jobs)], cwd=REPO_ROOT) for _ in range(args.class_runs)]
            label = f"class of {args.class_size}, JOBS={jobs}"
            report(label + (" (target < 60 s)" if jobs == 2 else ""), [wall for wall, _ in runs], per=args.class_size)
            cpu = [c / args.class_size for _, c in runs]
            print(f"{label + ', machine CPU per submission':<46} median {statistics.median(cpu):7.2f} s"
                  + ("  (target <= 2)" if jobs == 2 else "") + f"   (runs: {', '.join(f'{c:.2f}' for c in cpu)})",
                  flush=True)

        if "stock" in parts:
            stock_course = stock_nbgrader_course(root, args.stock_size)
            stock = [timed([python, "-m", "nbgrader", "autograde", ASSIGNMENT, "--force"],
                           cwd=stock_course) for _ in range(args.stock_runs)]
            stock_each = report(f"stock nbgrader autograde, {args.stock_size} submissions", stock,
                                per=args.stock_size) / args.stock_size
            print(f"{'stock nbgrader / ours, per submission':<46} {stock_each / ours:.1f}x", flush=True)
        if "notebook" in parts:
            time_notebook(root, python, args.runs)


def time_cold_against_import(root: Path, python: str, runs: int) -> None:
    """`python -m autograder grade` of the instructor notebook and `python -c "import torch"`,
    alternately: the cold grade's cost in units of the one import no grader can avoid."""
    times = {"grade": [], "import": []}
    for _ in range(runs):
        times["grade"].append(timed([python, "-m", "autograder", "grade", str(SOURCE_NOTEBOOK),
                                     "--results", str(root / "r.json")], cwd=REPO_ROOT))
        times["import"].append(timed([python, "-c", "import torch"], cwd=REPO_ROOT))
    grade = report("cold grade of one submission", times["grade"])
    torch_import = report('python -c "import torch"', times["import"])
    ratios = sorted(g / i for g, i in zip(times["grade"], times["import"]))
    print(f"{'cold grade / import torch (target <= 1.5x)':<46} {grade / torch_import:.2f}x of the medians, "
          f"{statistics.median(ratios):.2f}x the median pair", flush=True)


def time_round_two(root: Path, python: str, runs: int) -> None:
    """A submission with a bug in rnn_step_forward against the correct one, run alternately."""
    from autograder.submission import write_submission
    from solution import source as reference

    code = reference.unit_source("rnn_step_forward")
    buggy = write_submission(root / "buggy" / NOTEBOOK_NAME,
                             {"rnn_step_forward": code.replace("prev_h.mm(Wh) + b)", "prev_h.mm(Wh))")})
    times = {"correct": [], "buggy": []}
    for _ in range(runs):
        for label, notebook in (("correct", SOURCE_NOTEBOOK), ("buggy", buggy)):
            times[label].append(timed([python, "-m", "autograder", "grade", str(notebook),
                                       "--results", str(root / "r.json")], cwd=REPO_ROOT))
    correct = report("correct submission (one sandbox)", times["correct"])
    again = report("rnn_step_forward bug (round two: a second)", times["buggy"])
    print(f"{'round two / one round':<46} {again / correct:.2f}x", flush=True)


def time_notebook(root: Path, python: str, runs: int) -> None:
    """The instructor notebook executed top to bottom in a kernel, on the CPU."""
    notebook_dir = root / "notebook"
    notebook_dir.mkdir()
    for name in (NOTEBOOK_NAME, "captioning_helpers.py"):
        shutil.copy(SOURCE_NOTEBOOK.parent / name, notebook_dir / name)
    os.symlink(REPO_ROOT / "data" / "coco.pt", notebook_dir / "coco.pt")
    run_notebook = ("import nbformat, sys; from nbclient import NotebookClient; "
                    f"nb = nbformat.read('{NOTEBOOK_NAME}', 4); "
                    "NotebookClient(nb, timeout=900, kernel_name='python3').execute()")
    notebook = [timed([python, "-c", run_notebook], cwd=notebook_dir) for _ in range(runs)]
    report("instructor notebook on CPU (target < 300 s)", notebook)


if __name__ == "__main__":
    main()
