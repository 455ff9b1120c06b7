"""`python -m autograder grade` when something is wrong: a path that does not exist, a broken
data file, points that do not total 100, a NOT GRADED result; and which notebook of a
submission folder is graded. None of these grades a notebook for real.

Checked against the kit before the fix, by running the same commands: a missing path gave a
0 results.json and exit 0 ("note: cannot read typo.ipynb"); a truncated coco.pt ended in a
torch traceback (exit 1; an unreadable one was reported as "cannot write results.json");
points totalling 101 ended in a traceback (exit 1); the command line ignored a result's
status (exit 0, a score table); a folder was graded as a notebook ("not a readable
notebook", 0) and find_notebook did not exist.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from autograder import __main__ as cli
from autograder import batch, checks, grade
from autograder.submission import find_notebook
from conftest import COCO_PT, REPO_ROOT
from grading import write_submission

pytestmark = pytest.mark.slow  # gradings, batches or the command line: not in make test-fast


def grade_cli(*args, cwd=REPO_ROOT):
    env = {**os.environ, "CAPTIONING_GRADER_SECRET": "cli tests"}
    return subprocess.run([sys.executable, "-m", "autograder", "grade", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


def test_a_path_that_does_not_exist_is_an_error_not_a_zero(tmp_path):
    done = grade_cli(tmp_path / "typo.ipynb", "--results", tmp_path / "r.json")
    assert done.returncode == 2
    assert "typo.ipynb does not exist" in done.stderr
    assert not (tmp_path / "r.json").exists()


def test_an_unreadable_data_file_is_named_with_what_is_wrong(tmp_path):
    notebook = write_submission(tmp_path / "s.ipynb")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(COCO_PT.read_bytes()[:4096])  # a truncated copy
    done = grade_cli(notebook, "--data", corrupt, "--results", tmp_path / "r.json")
    assert done.returncode == 2, done.stderr
    assert f"the data file {corrupt} cannot be loaded" in done.stderr and "make data" in done.stderr
    assert "cannot write" not in done.stderr and not (tmp_path / "r.json").exists()

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    done = grade_cli(notebook, "--data", other, "--results", tmp_path / "r.json")
    assert done.returncode == 2 and "is not the captioning data set (no vocab" in done.stderr


@pytest.mark.parametrize("change, message", [
    (("forward = 4", "forward = 5"), "sums to 101, not 100"),
    (("[LSTM]\n", "[LSTM]\nbackward = 0\n"), "no @graded_test for LSTM.backward"),  # graded_tests.py
])
def test_points_the_grader_refuses_are_an_error_with_a_message(tmp_path, monkeypatch, capsys, change, message):
    points = tmp_path / "points.toml"
    points.write_text(checks.POINTS_FILE.read_text().replace(*change, 1))
    monkeypatch.setattr(checks, "POINTS_FILE", points)
    monkeypatch.setenv("CAPTIONING_GRADER_SECRET", "cli tests")
    code = cli.main(["grade", str(write_submission(tmp_path / "s.ipynb")),
                     "--results", str(tmp_path / "r.json"), "--data", str(COCO_PT)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_not_graded_exits_3_and_says_so(tmp_path, monkeypatch, capsys):
    def not_graded(notebook, **kwargs):
        return batch.not_graded("the units sandbox failed twice with no unit to blame",
                                {"sandbox": "a test's stand-in"})

    monkeypatch.setattr(grade, "grade", not_graded)
    monkeypatch.setenv("CAPTIONING_GRADER_SECRET", "cli tests")
    results = tmp_path / "r.json"
    code = cli.main(["grade", str(write_submission(tmp_path / "s.ipynb")), "--results", str(results),
                     "--data", str(COCO_PT)])
    out = capsys.readouterr()
    assert code == cli.NOT_GRADED_EXIT == 3
    assert out.out.startswith("NOT GRADED: the units sandbox failed twice")
    assert "NOT GRADED" in out.err and "results written" not in out.out
    assert json.loads(results.read_text())["tests"]  # written, for its diagnostics


def test_a_folder_without_a_notebook_to_grade_gets_a_zero_saying_what_was_found(tmp_path):
    submission = tmp_path / "submission"
    write_submission(submission / "draft.ipynb")
    write_submission(submission / "final.ipynb")
    done = grade_cli(submission, "--results", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["score"] == 0
    assert "2 other notebooks (draft.ipynb, final.ipynb)" in results["output"]


def test_which_notebook_of_a_submission_is_graded(tmp_path):
    def touch(*names):
        for name in names:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text("{}")

    touch(".ipynb_checkpoints/rnn_captioning-checkpoint.ipynb", ".ipynb_checkpoints/rnn_captioning.ipynb",
          "work/my_work.ipynb")
    path, note = find_notebook(tmp_path)
    assert path == tmp_path / "work" / "my_work.ipynb" and "graded work/my_work.ipynb" in note
    touch("deep/er/rnn_captioning.ipynb", "other.ipynb")
    assert find_notebook(tmp_path)[0] == tmp_path / "deep" / "er" / "rnn_captioning.ipynb"
    touch("rnn_captioning.ipynb")
    path, note = find_notebook(tmp_path)
    assert path == tmp_path / "rnn_captioning.ipynb" and note.startswith("graded rnn_captioning.ipynb (not graded: ")
    os.remove(tmp_path / "rnn_captioning.ipynb")
    os.remove(tmp_path / "deep" / "er" / "rnn_captioning.ipynb")
    os.symlink(tmp_path / "other.ipynb", tmp_path / "rnn_captioning.ipynb")  # never followed
    path, note = find_notebook(tmp_path)
    assert path is None and "2 other notebooks" in note
    empty = tmp_path / "empty"
    (empty / ".ipynb_checkpoints").mkdir(parents=True)
    (empty / ".ipynb_checkpoints" / "x-checkpoint.ipynb").write_text("{}")
    path, note = find_notebook(empty)
    assert path is None and "no notebook" in note and "x-checkpoint.ipynb" in note
