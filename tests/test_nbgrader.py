"""nbgrader's own commands over a small class: autograde, export, feedback."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import nbformat
import pytest

from autograder import ASSIGNMENT, COURSE_DIR, DATA_FILE, POINTS_FILE
from conftest import REPO_ROOT
from grading import write_submission
from solution import source as reference

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast

COURSE = COURSE_DIR


def nbgrader(course: Path, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CAPTIONING_GRADER_SECRET": "nbgrader test",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"], cwd=course,
                          env=env, check=True, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """A course copy with two submissions, autograded and with feedback generated."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(COURSE / "nbgrader_config.py", course)
    source = course / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    for name in (f"{ASSIGNMENT}.ipynb", "captioning_helpers.py"):
        shutil.copy(COURSE / "source" / ASSIGNMENT / name, source)
    shutil.copy(DATA_FILE, source)  # as `make release` does: the data ships with the release
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    released = course / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"

    submitted = course / "submitted"
    # alice: the reference. bob: the release with only rnn_step_forward written (his way).
    write_submission(submitted / "alice" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    bob_code = reference.strip_solutions(reference.unit_source("rnn_step_forward")).replace(
        "raise NotImplementedError()", "next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)\n    cache = None")
    write_submission(submitted / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
                     {"rnn_step_forward": bob_code}, notebook=released)
    nbgrader(course, "autograde", ASSIGNMENT, "--force")
    nbgrader(course, "export", "--to", "grades.csv")
    nbgrader(course, "generate_feedback", ASSIGNMENT, "--force")
    return course


def test_grades_csv_has_each_students_score(graded_class):
    with open(graded_class / "grades.csv") as f:
        scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}
    assert scores == {"alice": 100.0, "bob": 4.0}


def test_feedback_explains_lost_points_without_revealing_the_reference(graded_class):
    html = (graded_class / "feedback" / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "forward: 4/4" in html
    assert "NotImplementedError (not written yet)" in html
    secret = [line for line in reference.solution_lines(reference.read_source()) if len(line) > 20]
    assert not [line for line in secret if line in html]


def test_nbgrader_sees_the_cells_the_kit_reads(tmp_path):
    """nbgrader's copy of a submission is built from what the kit reads (plain JSON, lines
    joined): its solution cells are the submission's, not a stub saying nothing could be read."""
    from types import SimpleNamespace

    import nbformat

    from autograder import nbgrader_autograde
    from grading import INSTRUCTOR_NOTEBOOK

    path = write_submission(tmp_path / "s.ipynb", {"rnn_forward": "# mine\nx = 1\n"})
    source = nbformat.read(INSTRUCTOR_NOTEBOOK, as_version=4)
    copy = nbgrader_autograde.nbgrader_copy(SimpleNamespace(notebook=path, note=""), source)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in copy.cells}
    assert by_id["rnn_forward"] == "# mine\nx = 1\n"
    assert "def lstm_gates" in by_id["LSTM"]  # the instructor's, untouched
    assert "could be graded" not in copy.cells[0].source and "cannot process" not in copy.cells[0].source


def feedback_page(course: Path, student: str) -> str:
    return (course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()


def test_feedback_index_names_each_unit_with_its_score(graded_class):
    with open(POINTS_FILE, "rb") as f:
        points = {unit: float(sum(tests.values())) for unit, tests in tomllib.load(f).items()}
    # bob wrote rnn_step_forward alone, and it is right (4 points, as his grade says)
    expected = {unit: (points[unit] if unit == "rnn_step_forward" else 0.0, points[unit]) for unit in points}
    toc = re.search(r'<div id="toc">(.*?)</div>', feedback_page(graded_class, "bob"), re.S).group(1)
    entries = [re.sub(r"<[^>]+>|\s+", " ", li).split() for li in re.findall(r"<li>(.*?)</li>", toc, re.S)]
    scored = {e[0]: (float(e[2]), float(e[4].rstrip(")"))) for e in entries if e[1:2] == ["(Score:"]}
    assert scored == expected
    assert not [e for e in entries if e[0] in ("Test", "Comment")]  # nbgrader's unnamed entries


def test_feedback_shows_no_output_value_under_grade_cells(graded_class):
    # the score value KitGrader hands to nbgrader; the page gives the score in the cell's heading
    html = feedback_page(graded_class, "bob")
    assert "Out[" not in html
    assert "Score: 4.0 / 4.0" in html


def test_feedback_maths_are_mathml_and_need_no_network(graded_class):
    html = feedback_page(graded_class, "bob")
    submitted = nbformat.read(graded_class / "submitted" / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", 4)
    markdown = "\n".join(c.source for c in submitted.cells if c.cell_type == "markdown")
    formulas = re.findall(r"\$\$.+?\$\$|\$.+?\$", markdown, re.S)
    assert len(formulas) > 20
    assert html.count("<math ") == len(formulas)
    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']?(https?:)?//", html)  # nothing fetched
    assert "MathJax.Hub" not in html  # nor configured
    assert "\\mathbb" not in html and "\\frac" not in html


def test_autograded_and_feedback_folders_hold_no_data_file(graded_class):
    assert (graded_class / "release" / ASSIGNMENT / DATA_FILE.name).is_file()  # students still get it
    for step in ("autograded", "feedback"):
        for student in ("alice", "bob"):
            folder = graded_class / step / student / ASSIGNMENT
            assert folder.is_dir()
            assert not list(folder.rglob("*.pt")), f"{step}/{student}"


# In the browser: each <pre> of grader output no wider than its box, every formula laid out.
BROWSER_PROBE = r"""<script>
var r = {overflowing: [], maths: 0, unrendered: 0};
document.querySelectorAll('div.output_text pre').forEach(function (p) {
  if (p.scrollWidth > p.clientWidth + 1) r.overflowing.push(p.textContent.slice(0, 80)); });
document.querySelectorAll('math').forEach(function (m) {
  var b = m.getBoundingClientRect(); r.maths += 1; if (!(b.width > 0 && b.height > 0)) r.unrendered += 1; });
r.tex_shown = /\\(mathbb|frac|sum)/.test(document.body.innerText);
var d = document.createElement('pre'); d.id = 'measured'; d.textContent = JSON.stringify(r);
document.body.appendChild(d);
</script></body>"""


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (apt-get install chromium)")
def test_feedback_page_in_a_browser(graded_class):
    """Laid out by headless Chromium 640 px wide, where bob's reasons are wider than their box."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "probe.html"
        page.write_text(feedback_page(graded_class, "bob").replace("</body>", BROWSER_PROBE))
        dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=640,2000",
                              "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    measured = json.loads(re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S).group(1).replace("&quot;", '"'))
    assert measured["overflowing"] == []
    assert measured["maths"] > 20 and measured["unrendered"] == 0
    assert not measured["tex_shown"]
