"""How long the similarity report takes for a class (issue 15): target, 300 in under a minute.

    python -m benchmarks.similarity [--size 300] [--copies 5] [--runs 3] [--keep DIR]

Builds a class of --size submissions (seeded): each unit of each student is the reference,
one of the correct variants of tests/catalogue/correct.py, or (one in ten) the released
stub, with its local names renamed, comments added and spacing changed at random. In
--copies pairs the second student hands in the first one's notebook, disguised again the
same way. Then times `python -m autograder similarity` end to end (interpreter start and
imports included), --runs times, and prints the median, every run, and where the copied
pairs rank.
"""

import argparse
import csv
import io
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tokenize
from pathlib import Path

from autograder import REPO_ROOT
from autograder.similarity import KEPT_NAMES, PAIRS_CSV
from solution import source as reference

sys.path.insert(0, str(REPO_ROOT / "tests"))
from catalogue import correct  # noqa: E402  (the catalogue lives with the tests)

SOURCE_NOTEBOOK = REPO_ROOT / "assignment" / "source" / "rnn_captioning" / "rnn_captioning.ipynb"
STUB_SHARE = 0.1


def unit_pools() -> dict[str, list[str]]:
    """unit -> the correct ways of writing it that the catalogue knows, the reference first."""
    pools = {unit: [reference.unit_source(unit)] for unit in reference.graded_units()}
    for variant in correct.VARIANTS:
        for unit, code in variant.cells.items():
            pools[unit].append(code)
    return pools


def renamed(code: str, rng: random.Random) -> str:
    """code with every local name (not an attribute, keyword, builtin or torch's) renamed."""
    tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    names, previous = {}, ""
    lines = code.splitlines(True)
    edits = []
    for tok in tokens:
        if tok.type == tokenize.NAME and previous != "." and tok.string not in KEPT_NAMES:
            new = names.setdefault(tok.string, f"{rng.choice('abcdefghkmnpqrstuvwxyz')}{rng.randrange(10**4)}")
            edits.append((tok.start, tok.end, new))
        previous = tok.string
    for (row, col), (_, end), new in reversed(edits):  # from the end: earlier columns stay valid
        line = lines[row - 1]
        lines[row - 1] = line[:col] + new + line[end:]
    return "".join(lines)


def disguised(code: str, rng: random.Random) -> str:
    """code renamed, with comment lines added (outside strings) and the spacing around '='
    and ',' changed; nbgrader's solution markers dropped, as the released notebook has none."""
    out, in_string = [], False
    for line in renamed(code, rng).splitlines():
        if "### BEGIN SOLUTION" in line or "### END SOLUTION" in line:
            continue
        in_string ^= line.count('"""') % 2 == 1
        if line.strip() and not in_string and '"""' not in line and rng.random() < 0.2:
            indent = line[:len(line) - len(line.lstrip())]
            out.append(f"{indent}# {rng.choice(['here', 'step', 'TODO done', 'the math'])} {rng.randrange(99)}")
        if "\"" not in line and "'" not in line:
            line = line.replace(" = ", rng.choice([" = ", "=", "  =  "])).replace(", ", rng.choice([", ", ","]))
        out.append(line)
    return "\n".join(out) + "\n" * rng.randrange(1, 3)


def notebook_with(cells: dict[str, str], template: dict) -> dict:
    """A copy of the instructor notebook (as JSON) with the units' solution cells replaced."""
    notebook = json.loads(json.dumps(template))
    for cell in notebook["cells"]:
        unit = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution") and unit in cells:
            cell["source"] = cells[unit]
    return notebook


def make_class(root: Path, size: int, copies: int, seed: int = 15) -> list[tuple[str, str]]:
    """Write root/submitted/<student>/rnn_captioning/rnn_captioning.ipynb for size students;
    returns the (original, copier) pairs."""
    rng = random.Random(seed)
    pools, template = unit_pools(), json.loads(SOURCE_NOTEBOOK.read_text())
    stubs = {unit: reference.strip_solutions(reference.unit_source(unit)) for unit in pools}
    students = [f"student{i:03d}" for i in range(size)]
    copied = list(zip(students[:copies], students[size - copies:]))
    written = {}
    for student in students[:size - copies]:
        written[student] = {unit: disguised(stubs[unit] if rng.random() < STUB_SHARE else rng.choice(pool), rng)
                            for unit, pool in pools.items()}
    for original, copier in copied:
        written[copier] = {unit: disguised(code, rng) for unit, code in written[original].items()}
    for student, cells in written.items():
        folder = root / "submitted" / student / "rnn_captioning"
        folder.mkdir(parents=True)
        (folder / "rnn_captioning.ipynb").write_text(json.dumps(notebook_with(cells, template)))
    return copied


def timed_report(course: Path, out: Path) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of all its processes) that `python -m autograder
    similarity` takes on course, end to end. The CPU time says how much work it was on a
    machine that others load too."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, "-m", "autograder", "similarity", str(course), "--out", str(out)],
                   check=True, capture_output=True, cwd=REPO_ROOT)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def copy_ranks(out: Path, copied: list[tuple[str, str]]) -> list[int]:
    """The rank of each copied pair in the report's CSV."""
    with open(out / PAIRS_CSV, newline="") as f:
        ranks = {frozenset((row["student_a"], row["student_b"])): int(row["rank"])
                 for row in csv.DictReader(f) if row["rank"]}
    return [ranks[frozenset(pair)] for pair in copied]


def main(argv=None) -> None:
    """Build the class, time the report --runs times, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the class here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        course = args.keep or Path(tmp) / "class"
        copied = make_class(course, args.size, args.copies)
        timings = [timed_report(course, course / "similarity") for _ in range(args.runs)]
        walls, cpus = [wall for wall, _ in timings], [cpu for _, cpu in timings]
        pairs = args.size * (args.size - 1) // 2
        print(f"similarity report, {args.size} submissions ({pairs} pairs), {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f}: median {statistics.median(walls):.1f} s wall clock, "
              f"{statistics.median(cpus):.1f} s CPU   (runs: {', '.join(f'{w:.1f}' for w in walls)} s; "
              f"target: under 60 s)")
        print(f"ranks of the {len(copied)} disguised copies: {sorted(copy_ranks(course / 'similarity', copied))}")


if __name__ == "__main__":
    main()
