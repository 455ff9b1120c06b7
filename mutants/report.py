"""The mutation report: OUT/report.html for reading, OUT/mutants.csv and OUT/units.csv for sorting.

The HTML page leads with a table per unit (mutants, each status, the score, what the visible
checks caught), then, unit by unit, what needs a person: survivors (the diff and the tests
that passed it), cascades, timed-out mutants; then every killed mutant with the tests that
killed it, and the equivalent ones with their reviewed reason.
"""

import html
from pathlib import Path

from autograder import write_atomically, write_csv
from mutants import run as mutation
from mutants.run import CASCADE, EQUIVALENT, KILLED, NOT_GRADED, STATUSES, SURVIVED, TIMED_OUT, MutationRun

MUTANT_COLUMNS = ("mutant", "unit", "operator", "line", "before", "after", "status", "killed by", "tests passed",
                  "other units lost", "visible checks", "visible checks failed", "equivalent because", "reason")
UNIT_COLUMNS = ("unit", "mutants", *STATUSES, "score", "visible caught", "visible checked")


def percent(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def visible_text(verdict) -> str:
    caught = verdict.visible_caught
    return "not run" if caught is None else ("caught" if caught else "missed")


def mutant_rows(run: MutationRun) -> list[list]:
    return [[v.mutant.id, v.mutant.unit, v.mutant.operator, v.mutant.line, v.mutant.before.strip(),
             v.mutant.after.strip(), v.status, " ".join(v.killed_by), " ".join(v.passed), " ".join(v.others_lost),
             visible_text(v), " ".join(v.visible_failed or ()) + (f" ({v.visible_error})" if v.visible_error else ""),
             v.equivalent_reason, v.reason] for v in run.verdicts]


def unit_rows(run: MutationRun) -> list[list]:
    rows = [[row[c] for c in UNIT_COLUMNS[:-3]] + [percent(row["score"]), row["visible caught"],
                                                      row["visible checked"]] for row in mutation.unit_summary(run)]
    total = {status: sum(v.status == status for v in run.verdicts) for status in STATUSES}
    checked = [v for v in run.verdicts if v.visible_caught is not None and v.status != EQUIVALENT]
    rows.append(["all units", len(run.verdicts), *total.values(), percent(mutation.overall_score(run)),
                 sum(bool(v.visible_caught) for v in checked) if checked else "", len(checked)])
    return rows


def summary_text(run: MutationRun) -> str:
    """The per-unit table as text, for the terminal."""
    header = f"{'unit':<24}{'mutants':>8}{'killed':>8}{'timeout':>8}{'survived':>9}{'cascade':>8}" \
             f"{'equiv':>6}{'n.g.':>5}{'score':>8}{'visible':>11}"
    lines = [header]
    for row in unit_rows(run):
        unit, mutants, survived, cascade, timed_out, killed, equivalent, not_graded, score, caught, checked = row
        seen = f"{caught}/{checked}" if checked else "-"
        lines.append(f"{unit:<24}{mutants:>8}{killed:>8}{timed_out:>8}{survived:>9}{cascade:>8}{equivalent:>6}"
                     f"{not_graded:>5}{score:>8}{seen:>11}")
    lines.append(f"graded in {run.seconds_grading:.0f} s, visible checks in {run.seconds_visible:.0f} s; "
                 f"the reference scored {run.reference_score}")
    return "\n".join(lines)


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 78em; color: #1d1d1f; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { margin-bottom: .3em; }
table { border-collapse: collapse; margin: .5em 0 1em; } td, th { padding: .25em .6em; text-align: left; }
th { background: #f0f0f3; } tr:nth-child(even) td { background: #fafafa; } td.n { text-align: right; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; margin: .3em 0 .8em; }
.survived { color: #b00020; font-weight: 600; } .cascade { color: #a05a00; font-weight: 600; }
.killed, .timedout { color: #1b7f3b; } .equivalent, .notgraded { color: #666; }
.low td { background: #fde7e9 !important; } .note { color: #555; } code { font-size: 95%; }
.ins { color: #1b7f3b; } .del { color: #b00020; } td:first-child code { white-space: nowrap; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        kind = "ins" if line.startswith("+") and not line.startswith("+++") else \
            "del" if line.startswith("-") and not line.startswith("---") else ""
        lines.append(f'<span class="{kind}">{_e(line)}</span>' if kind else _e(line))
    return "<pre>" + "\n".join(lines) + "</pre>"


def _summary_table(run: MutationRun) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in ("unit", "mutants", "killed", "timed out", "survived", "cascade",
                                                   "equivalent", "not graded", "score", "visible checks caught"))
    body = []
    for row in mutation.unit_summary(run) + [None]:
        if row is None:
            total = {s: sum(v.status == s for v in run.verdicts) for s in STATUSES}
            row = {"unit": "all units", "mutants": len(run.verdicts), **total, "score": mutation.overall_score(run),
                   "visible caught": None, "visible checked": 0}
            checked = [v for v in run.verdicts if v.visible_caught is not None and v.status != EQUIVALENT]
            if checked:
                row["visible caught"] = sum(bool(v.visible_caught) for v in checked)
                row["visible checked"] = len(checked)
        low = row["score"] is not None and row["score"] < TARGET
        seen = f"{row['visible caught']} of {row['visible checked']}" if row["visible checked"] else "not run"
        cells = [f"<td>{_e(row['unit'])}</td>"] + [f'<td class="n">{row[k]}</td>' for k in (
            "mutants", KILLED, TIMED_OUT, SURVIVED, CASCADE, EQUIVALENT, NOT_GRADED)]
        cells += [f'<td class="n">{percent(row["score"])}</td>', f'<td class="n">{seen}</td>']
        body.append(f"<tr{' class=low' if low else ''}>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


TARGET = 0.98  # the score a unit's hidden tests are held to (a row below it is marked)


def _needs_review(verdicts) -> str:
    parts = []
    for v in verdicts:
        title = f'<span class="{v.status.replace(" ", "")}">{_e(v.status)}</span> <code>{_e(v.mutant.id)}</code> ' \
                f"({_e(v.mutant.operator)}, line {v.mutant.line})"
        facts = []
        if v.passed:
            facts.append(f"passed: {_e(', '.join(v.passed))}")
        if v.others_lost:
            facts.append(f"lost elsewhere: {_e(', '.join(v.others_lost))}")
        if v.reason:
            facts.append(f"reason: {_e(v.reason[:300])}")
        facts.append(f"visible checks: {_e(visible_text(v))}")
        parts.append(f"<h3>{title}</h3><div class=note>{'; '.join(facts)}</div>{_diff_html(v.mutant.diff())}")
    return "".join(parts)


def _listing(verdicts, header: str, what) -> str:
    rows = "".join(f"<tr><td><code>{_e(v.mutant.id)}</code></td><td>{_e(v.mutant.operator)}</td>"
                   f"<td><code>{_e(v.mutant.after.strip())}</code></td><td>{_e(what(v))}</td>"
                   f"<td>{_e(visible_text(v))}</td></tr>" for v in verdicts)
    return f"<table><tr><th>mutant</th><th>operator</th><th>the changed line</th><th>{_e(header)}</th>" \
           f"<th>visible checks</th></tr>{rows}</table>" if verdicts else ""


def render_html(run: MutationRun) -> str:
    units = list(dict.fromkeys(v.mutant.unit for v in run.verdicts))
    sections = []
    for unit in units:
        mine = [v for v in run.verdicts if v.mutant.unit == unit]
        review = [v for v in mine if v.status in (SURVIVED, CASCADE, TIMED_OUT, NOT_GRADED)]
        killed = [v for v in mine if v.status == KILLED]
        equivalent = [v for v in mine if v.status == EQUIVALENT]
        marked_but_killed = [v for v in mine if v.equivalent_reason and v.status != EQUIVALENT]
        section = [f"<h2 id='{_e(unit)}'>{_e(unit)}</h2>"]
        if review:
            section.append(_needs_review(review))
        if marked_but_killed:
            section.append("<p class=survived>Marked equivalent in mutants/equivalent.toml, yet they lose points: "
                           f"remove the mark: {_e(', '.join(v.mutant.id for v in marked_but_killed))}</p>")
        if killed:
            section.append(f"<h3>killed ({len(killed)})</h3>"
                           + _listing(killed, "killed by", lambda v: " ".join(v.killed_by)))
        if equivalent:
            section.append(f"<h3>equivalent ({len(equivalent)})</h3>"
                           + _listing(equivalent, "why it is equivalent", lambda v: v.equivalent_reason))
        sections.append("".join(section))
    stale = "".join(f"<li><code>{_e(m)}</code>: {_e(r)}</li>" for m, r in run.stale_equivalents.items())
    reference = "" if run.reference_score == 100 else \
        f"<p class=survived>The reference scored {run.reference_score}, not 100: no verdict below holds.</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Mutation report</title>
<style>{STYLE}</style></head><body>
<h1>How good are the hidden tests? Mutation report</h1>
<p>Each mutant is the reference with one plausible bug in one graded unit, graded by the real grader (sandbox,
hidden inputs, round two). <b>Killed</b>: its own unit lost points (timed out: stopped at the unit's time limit).
<b>Survived</b>: every test passed it; a student with this bug would score full points. <b>Cascade</b>: only other
units lost points, which the rules forbid. <b>Equivalent</b>: reviewed in <code>mutants/equivalent.toml</code> as
computing what the reference computes. Score = (killed + timed out) / (mutants &minus; equivalent); units below
{percent(TARGET)} are marked. The visible checks are the notebook's own, as a student runs them.</p>
{reference}
{_summary_table(run)}
<p class=note>Graded in {run.seconds_grading:.0f} s; visible checks in {run.seconds_visible:.0f} s.</p>
{f"<p>Marks in equivalent.toml whose mutant no longer exists (its unit changed):</p><ul>{stale}</ul>" if stale else ""}
{"".join(sections)}
</body></html>
"""


def write_report(run: MutationRun, out: Path) -> None:
    write_csv(out / "mutants.csv", MUTANT_COLUMNS, mutant_rows(run))
    write_csv(out / "units.csv", UNIT_COLUMNS, unit_rows(run))
    with write_atomically(out / "report.html", encoding="utf-8") as f:
        f.write(render_html(run))
