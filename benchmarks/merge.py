"""How long the merge after sharded grading takes, per student: the kit's part (the keys of
every submission, class_results.csv, nbgrader's copies) and nbgrader's (autograde from the
stored results into the SQLite gradebook, export).

    python -m benchmarks.merge [--students 200] [--no-gradebook]

A course of copies of the instructor notebook in a temporary directory, with the kit's
nbgrader configuration; every result is stored beforehand (full marks, under each
submission's real key), so that nothing is graded: exactly what `merge` meets after the
shards. Figures in BENCHMARKS.md ("Past one machine").
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autograder import DATA_FILE, REPO_ROOT, batch, checks, grade

SOURCE = REPO_ROOT / "assignment" / "source" / batch.ASSIGNMENT
ENV = {**os.environ, "CAPTIONING_GRADER_SECRET": "merge benchmark",
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
# The kit's own configuration, run from the temporary course (its root set there).
CONFIG = f"""import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
exec(open({str(REPO_ROOT / 'assignment' / 'nbgrader_config.py')!r}).read())
c.CourseDirectory.root = {{root!r}}
"""


def make_course(root: Path, students: int) -> Path:
    """An nbgrader course with the assignment released and students copies submitted."""
    course = root / "course"
    (course / "source" / batch.ASSIGNMENT).mkdir(parents=True)
    for name in (batch.NOTEBOOK, "captioning_helpers.py"):
        shutil.copy(SOURCE / name, course / "source" / batch.ASSIGNMENT / name)
    shutil.copy(DATA_FILE, course / "source" / batch.ASSIGNMENT / "coco.pt")
    (course / "nbgrader_config.py").write_text(CONFIG.format(root=str(course)))
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", batch.ASSIGNMENT, "--force"],
                   cwd=course, env=ENV, check=True, capture_output=True)
    for i in range(students):
        folder = course / "submitted" / f"student{i:04d}" / batch.ASSIGNMENT
        folder.mkdir(parents=True)
        shutil.copy(SOURCE / batch.NOTEBOOK, folder / batch.NOTEBOOK)
    return course


def store_results(course: Path) -> None:
    """Full marks for everyone, stored under each submission's key, as the shards would."""
    os.environ["CAPTIONING_GRADER_SECRET"] = ENV["CAPTIONING_GRADER_SECRET"]
    fingerprint = batch.grader_fingerprint(grade.grader_secret(), DATA_FILE)
    store = batch.ResultStore(course / batch.RESULTS_DIR)
    tests = [grade.TestResult(u, t, p, p) for u, ts in checks.load_points().items() for t, p in ts.items()]
    for sub in batch.find_submissions(course):
        store.put(sub.student, batch.submission_key(sub.notebook, fingerprint),
                  grade.GradeResult(tests, [], "bwrap", "cpu"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--no-gradebook", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        course = make_course(Path(root), args.students)
        store_results(course)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "autograder", "merge", str(course), "--no-gradebook"],
                              cwd=REPO_ROOT, env=ENV, capture_output=True, text=True)
        kit = time.perf_counter() - start
        assert done.returncode == 0, done.stderr
        print(f"merge, {args.students} students (kit's part) {kit:7.1f} s = {kit / args.students * 1000:.0f} ms "
              "per student", flush=True)
        if args.no_gradebook:
            return
        start = time.perf_counter()
        from autograder.cluster import build_gradebook

        assert build_gradebook(course) == 0
        nbgrader = time.perf_counter() - start
        print(f"nbgrader autograde + export, {args.students} students {nbgrader:7.1f} s = "
              f"{nbgrader / args.students:.2f} s per student", flush=True)


if __name__ == "__main__":
    main()
