"""The similarity report (issue 15): a disguised copy is the top pair, far above honest
solutions written differently, and the handed-out scaffold counts for nothing.

Expected values come from what the code is, not from the report's output: a copy whose
names, comments, spacing and order of independent lines were changed is the same program
token for token, so all of its own code is shared (similarity 1); two untouched stubs have
no code of their own (0); honest variants of tests/catalogue/correct.py share only short
idioms (well under half)."""

import ast
import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from autograder import __main__ as cli
from autograder import similarity
from catalogue import correct
from catalogue.correct import solved
from grading import write_submission
from solution import source as reference

UNITS = tuple(reference.graded_units())
STUBS = {unit: reference.strip_solutions(reference.unit_source(unit)) for unit in UNITS}
ALICE = {**correct.VARIANTS[0].cells, **correct.VARIANTS[2].cells}
BOB = {**correct.VARIANTS[1].cells, **correct.VARIANTS[5].cells, **correct.VARIANTS[3].cells}

# Alice's rnn_step_backward (STEP_BACKWARD_EINSUM) as Mallory hands it in: `da` renamed,
# the five independent gradients in another order, comments and spacing changed.
MALLORY_STEP_BACKWARD = solved("rnn_step_backward", """
    # backprop through tanh first
    grad_a = dnext_h * (1 - cache["next_h"] ** 2)   # tanh' = 1 - tanh^2
    dWh = torch.einsum("nk,nh->kh", cache["prev_h"], grad_a)
    db = torch.einsum("nh->h", grad_a)

    dx = torch.einsum("nh,dh->nd", grad_a, cache["Wx"])
    dWx   =   torch.einsum( "nd,nh->dh", cache["x"], grad_a )  # weights
    dprev_h = torch.einsum("nh,kh->nk", grad_a, cache["Wh"])
""")


def assigned_names(code: str) -> set[str]:
    """The names code assigns (its local variables), found with ast, not with the module."""
    return {node.id for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}


def disguised(code: str) -> str:
    """code with every assigned name renamed (not attributes: the program stays the same),
    its comments replaced and its spacing changed."""
    for number, name in enumerate(sorted(assigned_names(code))):
        code = re.sub(rf"(?<![.\w]){name}\b", f"my_var_{number}", code)  # x.T stays x.T
    lines = []
    for line in code.splitlines():
        code_part = line.split("  #")[0].rstrip()  # the catalogue's comments go
        indent = code_part[:len(code_part) - len(code_part.lstrip())]
        if code_part.strip() and not code_part.strip().startswith(('"', "-", "Inputs", "Returns")):
            lines.append(f"{indent}# {len(lines)} a comment of the copier's own")
        lines.append(code_part.replace(" = ", "=").replace(", ", " ,  "))
    return "\n".join(lines) + "\n\n"


def submit(course: Path, student: str, cells: dict[str, str]) -> None:
    """student's notebook in course/submitted/: the given units, the released stubs elsewhere."""
    path = course / "submitted" / student / "rnn_captioning" / "rnn_captioning.ipynb"
    write_submission(path, {**STUBS, **cells})


@pytest.fixture(scope="module")
def small_class(tmp_path_factory) -> Path:
    """alice, bob (honest, written differently), carol (the reference solution), mallory
    (alice's code disguised), two untouched stubs, and a notebook that is not JSON."""
    course = tmp_path_factory.mktemp("course")
    submit(course, "alice", ALICE)
    submit(course, "bob", BOB)
    submit(course, "carol", {unit: reference.unit_source(unit) for unit in UNITS})
    submit(course, "mallory", {**{unit: disguised(code) for unit, code in ALICE.items()},
                               "rnn_step_backward": MALLORY_STEP_BACKWARD})
    submit(course, "stub_one", {})
    submit(course, "stub_two", {})
    broken = course / "submitted" / "zed" / "rnn_captioning" / "rnn_captioning.ipynb"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"cells": [ this is not JSON')
    return course


@pytest.fixture(scope="module")
def report(small_class):
    """The small class's report, written to its default place (COURSE/similarity/)."""
    return similarity.similarity_report(small_class)


def by_pair(report) -> dict[frozenset, similarity.Pair]:
    """The report's pairs by the set of their two students."""
    return {frozenset((p.a, p.b)): p for p in report.pairs}


def test_a_disguised_copy_is_the_top_pair_far_above_honest_ones(report):
    pairs = by_pair(report)
    top = report.pairs[0]
    assert {top.a, top.b} == {"alice", "mallory"}
    assert top.overall > 0.99, top.units  # the same program: all of it is shared
    # Reordered independent lines and a renamed variable: the same program.
    assert top.units["rnn_step_backward"] > 0.95
    honest = [pairs[frozenset(p)] for p in (("alice", "bob"), ("alice", "carol"), ("bob", "carol"))]
    for pair in honest:
        assert pair.overall < 0.5, (pair.a, pair.b, pair.overall)
        assert top.overall - pair.overall > 0.4


def test_the_scaffold_alone_is_not_similarity(report):
    pairs = by_pair(report)
    assert pairs[frozenset(("stub_one", "stub_two"))].overall < 0.02
    for other in ("alice", "bob", "carol", "mallory"):
        assert pairs[frozenset(("stub_one", other))].overall < 0.02
    # Both stubs are the very last pairs' kind: nothing of their own to share.
    assert report.pairs[0].overall > pairs[frozenset(("stub_one", "stub_two"))].overall + 0.9


def test_the_csv_has_a_row_per_pair_most_similar_first_and_the_unreadable_notebook(report, small_class):
    with open(small_class / "similarity" / similarity.PAIRS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    pair_rows = [row for row in rows if row["rank"]]
    assert len(pair_rows) == 6 * 5 // 2  # six readable students
    assert {pair_rows[0]["student_a"], pair_rows[0]["student_b"]} == {"alice", "mallory"}
    scores = [float(row["similarity"]) for row in pair_rows]
    assert scores == sorted(scores, reverse=True)
    assert set(pair_rows[0]) >= {"student_a", "student_b", "similarity", *UNITS}
    unread = [row for row in rows if not row["rank"]]
    assert [row["student_a"] for row in unread] == ["zed"]
    assert "could not be read" in unread[0]["note"]


def test_the_html_says_it_is_no_verdict_and_shows_the_copy_side_by_side(report, small_class):
    page = (small_class / "similarity" / similarity.REPORT_HTML).read_text()
    assert "never a verdict" in page and "changes\nno grade" in page
    assert 'id="pair-1"' in page and "<mark>" in page
    assert "zed" in page and "could not be read" in page
    assert not re.search(r"<(script|link|img|iframe)\b|https?://", page, re.I)  # self-contained
    # What was handed out (docstrings, the stub's lines) is never marked as shared.
    assert not re.search(r"<mark>[^<]*(Inputs:|Returns|NotImplementedError)", page)


def tokens(code: str) -> str:
    """code's normalised token stream."""
    return similarity.normalise(code).symbols


def test_normalisation_defeats_renames_comments_spacing_and_reordering():
    original = similarity.normalise(correct.STEP_BACKWARD_EINSUM)
    copy = similarity.normalise(MALLORY_STEP_BACKWARD)
    assert original.symbols == copy.symbols
    # An honest rewrite is another token stream.
    assert similarity.normalise(correct.STEP_BACKWARD_FROM_PREACTIVATION).symbols != original.symbols
    # Dependent lines keep their order: swapping them is a different program.
    assert tokens("a = x + 1\nb = a * 2\n") != tokens("b = a * 2\na = x + 1\n")
    assert tokens("a = x + 1\nb = y * 2\n") == tokens("q = y * 2\np = x + 1\n")  # independent: reordered
    assert tokens("s.append(x)\nt = len(s)\n") != tokens("t = len(s)\ns.append(x)\n")  # append changes s


def test_torch_calls_and_attributes_are_kept_local_names_are_not():
    tanh, sigmoid = similarity.normalise("h = torch.tanh(x)"), similarity.normalise("h = torch.sigmoid(x)")
    assert tanh.symbols != sigmoid.symbols
    assert similarity.normalise("out = inp.sum(0)").symbols == similarity.normalise("h = x.sum(0)").symbols
    assert similarity.normalise("out = inp.sum(0)").symbols != similarity.normalise("h = x.mean(0)").symbols
    assert tokens("a, _ = f(x)") == tokens("a, unused = f(x)")  # "_" is a name like any other


def test_hostile_names_and_code_are_escaped(tmp_path):
    hostile = '<img src=x onerror=alert(1)>'
    code = solved("rnn_step_forward", """
        next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)  # </pre><script>alert("pwned")</script>
        cache = ("</pre><script>alert(2)</script>", x, prev_h, Wx, Wh, next_h)  # \u202e evil
    """)
    submit(tmp_path, hostile, {"rnn_step_forward": code})
    submit(tmp_path, "=cmd|' -C calc'!A0", {"rnn_step_forward": code})
    result = similarity.similarity_report(tmp_path)
    page = (tmp_path / "similarity" / similarity.REPORT_HTML).read_text()
    assert result.pairs[0].overall > 0.95
    assert "<script" not in page.lower() and "<img" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x" in page
    assert "\u202e" not in page and "U+202E" in page
    with open(tmp_path / "similarity" / similarity.PAIRS_CSV, newline="") as f:
        first = next(csv.DictReader(f))
    assert "'=cmd|' -C calc'!A0" in (first["student_a"], first["student_b"])  # no formula


def test_a_reference_corpus_finds_the_student_who_handed_in_a_public_solution(small_class, tmp_path):
    corpus = tmp_path / "public"
    corpus.mkdir()
    shutil.copy(reference.SOLUTION_FILE, corpus / "someones_solution.py")
    (corpus / "notes.ipynb").write_text("not a notebook")
    result = similarity.similarity_report(small_class, corpus, tmp_path / "out")
    found = {m.student: m for m in result.matches}
    assert found["carol"].overall > 0.95  # carol handed in exactly that code
    assert found["alice"].overall < 0.5 and found["bob"].overall < 0.5
    assert found["stub_one"].overall == 0
    with open(tmp_path / "out" / similarity.REFERENCE_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["student"] == "carol" and rows[0]["public_solution"] == "someones_solution.py"
    assert any("notes.ipynb" in row["note"] for row in rows)
    assert "Close to a known public solution" in (tmp_path / "out" / similarity.REPORT_HTML).read_text()


def test_the_command_line(small_class, tmp_path, capsys):
    assert cli.main(["similarity", str(small_class), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / similarity.REPORT_HTML).is_file()
    assert "never a verdict" in capsys.readouterr().out
    assert cli.main(["similarity", str(tmp_path / "nowhere")]) == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_report_renders_in_a_headless_browser(report, small_class, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1400,1800", (small_class / "similarity" / similarity.REPORT_HTML).as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 1800)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text and shaded cells, not a blank page


def test_processes_find_what_one_process_finds(small_class, report, tmp_path, monkeypatch):
    monkeypatch.setattr(similarity, "STUDENTS_PER_PROCESS", 2)  # a pool even for seven students
    pooled = similarity.similarity_report(small_class, out_dir=tmp_path)
    assert [(p.a, p.b, p.overall, p.units) for p in pooled.pairs] == \
        [(p.a, p.b, p.overall, p.units) for p in report.pairs]
    assert [s.problem for s in pooled.students] == [s.problem for s in report.students]


def test_an_enormous_cell_is_compared_in_part_with_a_note(tmp_path):
    padding = "".join(f"padding_{i} = {i}\n" for i in range(3000))  # about 50,000 characters
    code = solved("WordEmbedding", "out = self.W_embed[x]\n" + padding)
    path = tmp_path / "big.ipynb"
    write_submission(path, {**STUBS, "WordEmbedding": code})
    student = similarity.read_student("big", path, "")
    assert student.problem == ""
    assert len(student.units["WordEmbedding"].text) == similarity.MAX_COMPARED_CHARS
    assert any("WordEmbedding: only the first 20,000 characters" in note for note in student.notes)
