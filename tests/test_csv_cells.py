"""Every CSV the kit writes is safe to open in a spreadsheet (issue 22, item 3).

The student often chooses the first column (the folder's name becomes the student id of
class_results.csv, grades.csv and similarity.csv). Each file is written with hostile names
and read back with Python's csv module, cell by cell, as a spreadsheet would see it: no
cell may begin with a formula character unless it is a plain number, and scores stay numbers.
"""

import csv
import os
import re
import sys
from pathlib import Path

import pytest

from autograder import REPO_ROOT, batch, checks, grade, similarity, spreadsheet_cell

# OWASP's list of what makes a spreadsheet run a cell, written out here rather than taken
# from the kit's constant.
HOSTILE = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1", "-cmd|' /C calc'!A0"]
PLAIN_NUMBER = re.compile(r"-?\d+(\.\d*)?")


def cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def runnable(cell: str) -> bool:
    """Whether a spreadsheet would read the cell as a formula."""
    return cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not PLAIN_NUMBER.fullmatch(cell)


def test_a_cell_keeps_its_text_behind_an_apostrophe_and_a_number_stays_a_number():
    assert [spreadsheet_cell(v) for v in HOSTILE] == ["'" + v for v in HOSTILE]
    assert [spreadsheet_cell(v) for v in (-5, -2.5, 0, 95, "-5", "-0.25", "95.0", "s123", "")] == \
        [-5, -2.5, 0, 95, "-5", "-0.25", "95.0", "s123", ""]
    assert spreadsheet_cell(None) == "" and spreadsheet_cell(True) == "True"


def test_class_results_csv_runs_no_student_name_and_keeps_scores_numeric(tmp_path):
    """Fails without the fix: the names were written as they are."""
    points = checks.load_points()
    full = grade.GradeResult([grade.TestResult(u, t, p, p) for u, ts in points.items() for t, p in ts.items()],
                             ["-graded note"], "bwrap", "cpu")
    outcomes = {name: full for name in HOSTILE} | {"s1": full}
    path = tmp_path / "class_results.csv"
    batch.write_class_csv(path, outcomes)
    header, *rows = cells(path)
    assert not [c for row in [header, *rows] for c in row if runnable(c)]
    students = {row[0] for row in rows}
    assert students == {"'" + name for name in HOSTILE} | {"s1"}
    assert {float(row[header.index("score")]) for row in rows} == {100.0}


def test_similarity_csv_runs_no_student_name(tmp_path):
    path = tmp_path / "similarity_reference.csv"
    similarity.write_matches_csv(path, [], [f"{name}: unreadable" for name in HOSTILE])
    assert not [c for row in cells(path) for c in row if runnable(c)]


def test_grades_csv_runs_no_student_id(tmp_path, monkeypatch):
    """nbgrader's export, through the kit's plugin (assignment/nbgrader_config.py), as
    `make autograde` and `make merge` run it. Fails without the fix."""
    nbgrader_api = pytest.importorskip("nbgrader.api")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # its alembic
    from autograder.nbgrader_autograde import KitCsvExport
    with nbgrader_api.Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        gradebook.add_assignment("rnn_captioning")
        for name in [*HOSTILE, "s1"]:
            gradebook.add_student(name)
        gradebook.add_submission("rnn_captioning", HOSTILE[0])
        KitCsvExport(to=str(tmp_path / "grades.csv")).export(gradebook)
    header, *rows = cells(tmp_path / "grades.csv")
    assert not [c for row in [header, *rows] for c in row if runnable(c)], rows
    assert {row[header.index("student_id")] for row in rows} == {"'" + name for name in HOSTILE} | {"s1"}
    for row in rows:
        score = row[header.index("score")]
        assert score == "" or float(score) >= 0, row


def test_every_csv_the_kit_writes_goes_through_write_csv():
    # One rule, declared once: no other module builds a CSV writer of its own.
    writers = {path.relative_to(REPO_ROOT).as_posix() for folder in ("autograder", "benchmarks", "data", "assignment")
               for path in (REPO_ROOT / folder).rglob("*.py")
               if re.search(r"csv\.(writer|DictWriter)\(", path.read_text(encoding="utf-8"))}
    assert writers == {"autograder/__init__.py"}
