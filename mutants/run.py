"""How good are the hidden tests? Every mutant of the reference, graded by the real grader.

    python -m autograder mutants [--unit NAME ...] [--jobs N] [--out DIR] [--no-visible]

Steps: make the mutants (mutants/operators.py); write each as a notebook submission, the
instructor's notebook with that one unit's cell changed, into OUT/course/submitted/<id>/;
grade them all as a class (autograder/batch.py: the sandbox, hidden inputs, round two;
parallel, and resumable: a mutant already graded by the same grader is not graded again);
run the notebook's visible checks on each (mutants/visible.py); classify; report
(OUT/report.html, OUT/mutants.csv, OUT/units.csv).

A mutant is
* killed when its own unit loses points (timed out: the unit was stopped at its time
  limit; it loses its points, so it counts as killed);
* a cascade when only other units lose points: the rules promise that a bug costs points
  only in its own unit, so a cascade is a fault of the grader, and not a kill;
* equivalent when mutants/equivalent.toml says it computes what the reference does (a
  person's review, with the reason); an equivalent mutant that loses points is reported;
* survived otherwise: the hidden tests pass a plausible bug.
The mutation score of a unit is (killed + timed out) / (mutants - equivalent); a mutant the
grader could not grade (NOT GRADED: not the mutant's doing) counts nowhere and makes the
run exit 3, to be run again.

OUT holds the reference's code in every mutant: keep it where the solution is kept (the
default, mutants/out/, is git-ignored).
"""

import dataclasses
import hashlib
import json
import sys
import time
import tomllib
from pathlib import Path

from autograder import ASSIGNMENT, DATA_FILE, NOTEBOOK_NAME, SOURCE_NOTEBOOK, batch, write_atomically
from mutants import EQUIVALENT_FILE, OUT_DIR
from autograder.submission import write_submission
from mutants.operators import Mutant, all_mutants

# The reference itself is graded beside its mutants: unless it scores 100, no verdict holds.
REFERENCE_ID = "reference"
KILLED, TIMED_OUT, CASCADE, SURVIVED, EQUIVALENT, NOT_GRADED = (
    "killed", "timed out", "cascade", "survived", "equivalent", "not graded")
STATUSES = (SURVIVED, CASCADE, TIMED_OUT, KILLED, EQUIVALENT, NOT_GRADED)
TIME_LIMIT_WORDS = "time limit"  # how scoring.py says a unit was stopped at its limit


@dataclasses.dataclass
class Verdict:
    """What the hidden tests (and the visible checks) made of one mutant."""

    mutant: Mutant
    status: str
    killed_by: list[str]  # the mutant's own unit's tests that lost points
    passed: list[str]  # its own unit's tests that gave every point
    others_lost: list[str]  # other units' tests that lost points (a cascade)
    reason: str = ""  # the grader's first reason, for the report
    equivalent_reason: str = ""
    visible_failed: list[str] | None = None  # None: the visible checks were not run
    visible_error: str = ""

    @property
    def visible_caught(self) -> bool | None:
        if self.visible_failed is None:
            return None
        return bool(self.visible_failed or self.visible_error)


@dataclasses.dataclass
class MutationRun:
    verdicts: list[Verdict]
    reference_score: int
    reference_reasons: list[str]
    seconds_grading: float
    seconds_visible: float
    stale_equivalents: dict[str, str]  # marks whose mutant no longer exists (its unit changed)

    @property
    def not_graded(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == NOT_GRADED]


def load_equivalent(path: Path = EQUIVALENT_FILE) -> dict[str, str]:
    """{mutant id: why it computes what the reference does}, as reviewed in path."""
    if not path.exists():
        return {}
    marks = tomllib.loads(path.read_text()).get("mutants", {})
    empty = [mutant for mutant, reason in marks.items() if not str(reason).strip()]
    if empty:
        raise ValueError(f"{path}: every equivalent mutant needs its reason; none for {', '.join(empty)}")
    return {str(mutant): str(reason) for mutant, reason in marks.items()}


def classify(mutant: Mutant, result, equivalent: dict[str, str]) -> Verdict:
    """The verdict of one graded mutant (result: its grade.GradeResult)."""
    own = [t for t in result.tests if t.unit == mutant.unit]
    lost = [t for t in own if t.score < t.max_score]
    others = [f"{t.unit}.{t.test}" for t in result.tests if t.unit != mutant.unit and t.score < t.max_score]
    verdict = Verdict(mutant, SURVIVED, [f"{t.unit}.{t.test}" for t in lost],
                      [f"{t.unit}.{t.test}" for t in own if t.score == t.max_score], others,
                      equivalent_reason=equivalent.get(mutant.id, ""))
    if batch.is_not_graded(result):
        verdict.status, verdict.reason = NOT_GRADED, batch.not_graded_reason(result)
    elif lost:
        timed_out = any(TIME_LIMIT_WORDS in t.reason for t in lost)
        verdict.status, verdict.reason = (TIMED_OUT if timed_out else KILLED), lost[0].reason
    elif others:
        verdict.status = CASCADE
        verdict.reason = next(t.reason for t in result.tests if t.unit != mutant.unit and t.score < t.max_score)
    elif mutant.id in equivalent:
        verdict.status = EQUIVALENT
    return verdict


def write_course(course: Path, mutants: list[Mutant]) -> None:
    """course/submitted/<id>/ holds exactly the reference's notebook and these mutants'."""
    submitted = course / "submitted"
    wanted = {REFERENCE_ID: {}, **{m.id: {m.unit: m.code} for m in mutants}}
    if submitted.exists():
        for folder in submitted.iterdir():
            if folder.name not in wanted:  # its stored result stays in grader_results/
                for path in sorted(folder.rglob("*"), reverse=True):
                    path.unlink() if path.is_file() else path.rmdir()
                folder.rmdir()
    for name, cells in wanted.items():
        notebook = submitted / name / ASSIGNMENT / NOTEBOOK_NAME
        if not notebook.exists():
            write_submission(notebook, cells)


def visible_outcomes(mutants: list[Mutant], out: Path, jobs: int) -> dict[str, tuple[list[str], str]]:
    """{mutant id: (failing visible checks, error)}, cached in out/visible.json by id and notebook."""
    from mutants import visible

    cache_path = out / "visible.json"
    # The verdicts change with the notebook's checks and with how they are run.
    notebook = hashlib.sha256(SOURCE_NOTEBOOK.read_bytes() + Path(visible.__file__).read_bytes()).hexdigest()
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    if cache.get("notebook") != notebook:
        cache = {"notebook": notebook, "mutants": {}}
    todo = [m for m in mutants if m.id not in cache["mutants"]]
    if todo:
        print(f"visible checks: {len(todo)} mutants to run", file=sys.stderr)
        for mutant, outcome in zip(todo, visible.visible_check_results_many([{m.unit: m.code} for m in todo],
                                                                             jobs=jobs)):
            cache["mutants"][mutant.id] = [list(outcome.failed), outcome.error]
        with write_atomically(cache_path) as f:
            json.dump(cache, f, indent=1)
    return {m.id: tuple(cache["mutants"][m.id]) for m in mutants}


def run_mutants(mutants: list[Mutant], *, out: Path = OUT_DIR, jobs: int = 2, data: Path = DATA_FILE,
                device: str = "cpu", visible: bool = True, equivalent: dict[str, str] | None = None,
                progress: bool = True) -> MutationRun:
    """Grade every mutant (and the reference) as a class in out/course/, then classify."""
    equivalent = load_equivalent() if equivalent is None else equivalent
    course = out / "course"
    write_course(course, mutants)
    started = time.monotonic()
    outcomes = batch.grade_class(course, jobs=jobs, data=data, device=device, progress=progress)
    seconds_grading = time.monotonic() - started
    reference = outcomes[REFERENCE_ID]
    verdicts = [classify(m, outcomes[m.id], equivalent) for m in mutants]
    started = time.monotonic()
    if visible:
        seen = visible_outcomes(mutants, out, jobs)
        for verdict in verdicts:
            verdict.visible_failed, verdict.visible_error = seen[verdict.mutant.id]
    known = {m.id for m in all_mutants()}
    return MutationRun(verdicts, reference.score, [t.reason for t in reference.tests if t.reason],
                       seconds_grading, time.monotonic() - started,
                       {mutant: why for mutant, why in equivalent.items() if mutant not in known})


def unit_summary(run: MutationRun) -> list[dict]:
    """A row per unit: how many mutants of each status, the score, what the visible checks caught."""
    rows = []
    for unit in dict.fromkeys(v.mutant.unit for v in run.verdicts):
        mine = [v for v in run.verdicts if v.mutant.unit == unit]
        counts = {status: sum(v.status == status for v in mine) for status in STATUSES}
        counted = len(mine) - counts[EQUIVALENT] - counts[NOT_GRADED]
        killed = counts[KILLED] + counts[TIMED_OUT]
        checked = [v for v in mine if v.visible_caught is not None and v.status != EQUIVALENT]
        rows.append({"unit": unit, "mutants": len(mine), **counts,
                     "score": killed / counted if counted else None,
                     "visible caught": sum(bool(v.visible_caught) for v in checked) if checked else None,
                     "visible checked": len(checked)})
    return rows


def overall_score(run: MutationRun) -> float | None:
    counted = [v for v in run.verdicts if v.status not in (EQUIVALENT, NOT_GRADED)]
    return sum(v.status in (KILLED, TIMED_OUT) for v in counted) / len(counted) if counted else None


def main(args) -> int:
    """The `mutants` command: grade, write the report, print the summary; exit 3 if any
    mutant (or the reference) could not be graded."""
    from mutants import report

    mutants = all_mutants(args.unit)
    if args.list:
        for mutant in mutants:
            print(f"{mutant.id:<36} {mutant.operator:<20} {mutant.change}")
        return 0
    out = args.out or OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    run = run_mutants(mutants, out=out, jobs=args.jobs, data=args.data, device=args.device,
                      visible=not args.no_visible)
    report.write_report(run, out)
    print(report.summary_text(run))
    print(f"report: {out / 'report.html'}, {out / 'mutants.csv'}, {out / 'units.csv'}")
    if run.reference_score != 100:
        print(f"error: the reference scored {run.reference_score}, not 100: no verdict holds "
              f"({'; '.join(run.reference_reasons)[:300]})", file=sys.stderr)
        return 3
    return 3 if run.not_graded else 0
