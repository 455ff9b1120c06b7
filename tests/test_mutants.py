"""Mutation analysis (mutants/): the mutants made, and the verdicts on hand-made mutants.

The expected mutants and verdicts are written here from the reference's code and from what
each change does to the hidden tests, never read off the tool's output.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT
from grading import TEST_SECRET, mutated
from mutants import operators, run
from solution import source as reference


def changes_of(unit: str) -> set[tuple[str, str]]:
    """(operator, the changed line as the mutant has it) of every mutant of unit."""
    return {(m.operator, m.after.strip()) for m in operators.unit_mutants(unit)}


@pytest.mark.parametrize("unit, operator, line", [
    ("rnn_step_forward", "transpose", "next_h = torch.tanh(x.mm(Wx.t()) + prev_h.mm(Wh) + b)"),
    ("rnn_step_forward", "activation", "next_h = torch.sigmoid(x.mm(Wx) + prev_h.mm(Wh) + b)"),
    ("rnn_step_forward", "dropped term", "next_h = torch.tanh(x.mm(Wx) + b)"),
    ("rnn_step_forward", "swapped order", "cache = (x, prev_h, Wh, Wx, next_h)"),
    ("rnn_step_backward", "transpose", "dx = da.mm(Wx)"),
    ("rnn_step_backward", "dimension", "db = da.sum(dim=1)"),
    ("rnn_step_backward", "number", "da = dnext_h * (2 - next_h * next_h)"),
    ("rnn_forward", "time index", "for t in range(T - 1):"),
    ("rnn_forward", "time index", "prev_h = torch.tanh(x_proj[:, t - 1] + prev_h.mm(Wh))"),
    ("rnn_backward", "time order", "for t in range(T):"),
    ("rnn_backward", "slice", "prev_states = torch.cat([h0.unsqueeze(1), h[:, :]], dim=1)  # (N, T, H)"),
    ("temporal_softmax_loss", "reduction", 'reduction="mean",'),
    ("temporal_softmax_loss", "condition", "ignore_index=-100,"),
    ("LSTM", "swapped order", "f, i, o = torch.sigmoid(ifo).chunk(3, dim=1)"),
    ("LSTM", "in place", "i, f, o = ifo.sigmoid_().chunk(3, dim=1)"),
    ("LSTM", "detached", "next_h, next_c = lstm_gates(a, prev_c).detach()"),
    ("dot_product_attention", "scale", "scores = torch.bmm(prev_h.unsqueeze(1), A_flat).squeeze(1) / H  # (N, 16)"),
    ("dot_product_attention", "activation", "weights = torch.log_softmax(scores, dim=1)"),
    ("dot_product_attention", "dimension", "weights = torch.softmax(scores, dim=0)"),
    ("CaptioningRNN", "mask", "loss = temporal_softmax_loss(scores, captions_out)"),
    ("CaptioningRNN", "mask", "captions[:, t] = words"),
    ("CaptioningRNN", "float32", "c = torch.zeros_like(h, dtype=torch.float32)"),
    ("CaptioningRNN", "dropped statement", "pass"),
    ("CaptioningRNN", "reduction", "words = self.output_projection(h).argmin(dim=1)"),
    ("LSTM", "wrong variable", "next_c = f * prev_c + i * prev_c"),
    ("AttentionLSTM", "wrong variable", "a = x_t + prev_h.mm(self.Wattn) + attn.mm(self.Wattn)"),
    ("rnn_step_backward", "swapped arguments", "da = dnext_h * (next_h * next_h - 1)"),
])
def test_the_mutants_include_the_bugs_students_make(unit, operator, line):
    assert (operator, line) in changes_of(unit)


def test_a_mutant_changes_one_place_of_the_solution_lines_and_still_parses():
    for unit in reference.graded_units():
        code = reference.unit_source(unit)
        lines = code.splitlines()
        solution = operators.solution_lines(code)
        for mutant in operators.unit_mutants(unit):
            ast.parse(mutant.code)
            assert mutant.code != code
            after = mutant.code.splitlines()
            # Everything before the changed line, and everything after the changed lines,
            # is the reference's (a change may split or join lines: count from the end).
            first = mutant.line - 1
            tail = len(lines) - first - len(mutant.before.splitlines())
            assert after[:first] == lines[:first], mutant.id
            assert after[len(after) - tail:] == lines[len(lines) - tail:], mutant.id
            assert mutant.line in solution, (mutant.id, mutant.change)


def test_mutant_ids_are_distinct_and_stable():
    first = operators.all_mutants()
    again = operators.all_mutants()
    assert [m.id for m in first] == [m.id for m in again]
    assert len({m.id for m in first}) == len({m.code for m in first}) == len(first)
    assert {m.unit for m in first} == set(reference.graded_units())


def test_a_wrong_variable_is_one_bound_before_the_statement():
    # rnn_forward's loop: x_proj, t, prev_h and Wh are bound before it; states is bound
    # before too, but not in the statement; the statement's own target is not a candidate.
    changed = {m.after.strip() for m in operators.unit_mutants("rnn_forward") if m.operator == "wrong variable"}
    line = "prev_h = torch.tanh(x_proj[:, t] + prev_h.mm(Wh))"
    assert "prev_h = torch.tanh(x_proj[:, t] + x_proj.mm(Wh))" in changed
    assert "prev_h = torch.tanh(x_proj[:, t] + prev_h.mm(prev_h))" in changed
    assert not [c for c in changed if c.startswith("prev_h = ") and "states" in c], line


def test_backward_units_get_no_detached_mutant():
    # Their outputs are gradients written by hand: no autograd runs through them.
    for unit in ("rnn_step_backward", "rnn_backward"):
        assert "detached" not in {m.operator for m in operators.unit_mutants(unit)}


def test_an_unknown_unit_is_refused_with_the_units_named():
    with pytest.raises(ValueError, match="no graded unit 'rnn_step'.*rnn_step_forward"):
        operators.all_mutants(["rnn_step"])


def test_an_equivalent_mark_without_a_reason_is_refused(tmp_path):
    marks = tmp_path / "equivalent.toml"
    marks.write_text('[mutants]\n"rnn_step_forward-0123456789" = " "\n')
    with pytest.raises(ValueError, match="needs its reason"):
        run.load_equivalent(marks)


# The hand-made mutants of rnn_step_forward, and what the hidden tests must make of them.
SIGMOID = ("torch.tanh(", "torch.sigmoid(")  # a different function: forward loses points
NO_BIAS = ("prev_h.mm(Wh) + b)", "prev_h.mm(Wh))")  # the bias dropped: killed, unless the hidden inputs' bias is zero
METHOD = ("torch.tanh(x.mm(Wx) + prev_h.mm(Wh) + b)", "(x.mm(Wx) + prev_h.mm(Wh) + b).tanh()")  # same op
# The weakened copy of the hidden tests: every bias drawn for the vanilla RNN step is zero,
# and rnn_step_forward's test compares next_h alone (not the gradients, db among them).
DRAWN_BIAS = "Wh=d.randn(H, H, scale=0.5), b=d.randn(H))\n    return {**inputs, \"dnext_h\": d.randn(N, H)}"
ZERO_BIAS = "Wh=d.randn(H, H, scale=0.5), b=torch.zeros(H, dtype=torch.float64))\n    return {**inputs, " \
            "\"dnext_h\": d.randn(N, H)}"
WITH_GRADIENTS = 'return _with_autograd({"next_h": next_h}, {"next_h": inputs["dnext_h"]}, leaves)'
WITHOUT = 'return {"next_h": next_h}'

VERDICTS = """
import json, sys
from pathlib import Path
from mutants import operators, run
from solution import source

def mutant(old, new):
    code = source.unit_source("rnn_step_forward")
    assert code.count(old) == 1
    return operators.Mutant("rnn_step_forward", "by hand", 0, old, new, code.replace(old, new))

made = [mutant(*pair) for pair in json.loads(sys.argv[2])]
equivalent = {made[2].id: "Tensor.tanh is torch.tanh"}
outcome = run.run_mutants(made, out=Path(sys.argv[1]), jobs=1, visible=False, equivalent=equivalent,
                          progress=False)
rows = run.unit_summary(outcome)
print(json.dumps({"reference": outcome.reference_score, "statuses": [v.status for v in outcome.verdicts],
                  "killed_by": [v.killed_by for v in outcome.verdicts], "score": rows[0]["score"]}))
"""


def repository_copy(where, edits: list[tuple[str, str, str]]):
    """The tracked files of the repository under where, with edits [(path, old, new)]
    applied, and the built data files linked in."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    for name in files.stdout.splitlines():
        if (REPO_ROOT / name).is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, where / name)
    for name in ("data/coco.pt", "data/encoder_features.pt"):  # the features' cache may not be built yet
        if (REPO_ROOT / name).exists():
            (where / name).symlink_to(REPO_ROOT / name)
    for name, old, new in edits:
        text = (where / name).read_text()
        assert text.count(old) == 1, (name, old)
        (where / name).write_text(text.replace(old, new))
    return where


def verdicts_in(repository, out) -> dict:
    environment = {**os.environ, "CAPTIONING_GRADER_SECRET": TEST_SECRET.decode()}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(VERDICTS), str(out),
                           json.dumps([SIGMOID, NO_BIAS, METHOD])],
                          cwd=repository, capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


@pytest.mark.slow
def test_hand_made_mutants_are_killed_survive_or_are_excluded_as_the_hidden_tests_decide(tmp_path):
    mutated("rnn_step_forward", *SIGMOID), mutated("rnn_step_forward", *NO_BIAS), mutated("rnn_step_forward", *METHOD)
    # With today's hidden tests the dropped bias is killed (the bias is drawn from randn).
    found, _ = verdicts_in(REPO_ROOT, tmp_path / "today")
    assert found["reference"] == 100
    assert found["statuses"] == ["killed", "killed", "equivalent"]
    assert found["killed_by"][:2] == [["rnn_step_forward.forward"]] * 2
    assert found["score"] == 1.0  # 2 killed of 3, less the equivalent one
    # A copy whose hidden inputs have no bias cannot see the dropped bias: it survives.
    tests = "autograder/graded_tests.py"
    weakened = repository_copy(tmp_path / "weakened",
                               [(tests, DRAWN_BIAS, ZERO_BIAS), (tests, WITH_GRADIENTS, WITHOUT)])
    found, _ = verdicts_in(weakened, tmp_path / "weakened-out")
    assert found["reference"] == 100
    assert found["statuses"] == ["killed", "survived", "equivalent"]
    assert found["score"] == 0.5
    # Graded again: the stored results are used, nothing is graded twice.
    found_again, log = verdicts_in(weakened, tmp_path / "weakened-out")
    assert found_again == found
    assert "0 to grade" in log


def test_the_report_shows_a_survivor_with_its_diff_and_scores_the_unit(tmp_path):
    from mutants import report

    mutants = operators.unit_mutants("rnn_step_forward")[:3]
    verdicts = [run.Verdict(mutants[0], run.SURVIVED, [], ["rnn_step_forward.forward"], [], visible_failed=[]),
                run.Verdict(mutants[1], run.KILLED, ["rnn_step_forward.forward"], [], [], visible_failed=["x"]),
                run.Verdict(mutants[2], run.EQUIVALENT, [], ["rnn_step_forward.forward"], [],
                            equivalent_reason="<same> values")]
    outcome = run.MutationRun(verdicts, 100, [], 1.0, 1.0, {})
    report.write_report(outcome, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert f"survived</span> <code>{mutants[0].id}</code>" in page
    assert "+    " + mutants[0].after.strip() in page.replace("&quot;", '"')  # the diff's added line
    assert "&lt;same&gt; values" in page and "<same>" not in page
    assert "50.0%" in page  # 1 killed of 3 mutants less 1 equivalent
    units = (tmp_path / "units.csv").read_text().splitlines()
    assert units[1].startswith("rnn_step_forward,3,1,0,0,1,1,0,50.0%")  # survived, cascade, timed out, killed, ...
