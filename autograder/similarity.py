"""Which submissions look alike: a similarity report for a class, for a person to review.

    python -m autograder similarity COURSE_DIR [--reference-corpus DIR] [--out DIR]

Every student folder of COURSE_DIR/submitted/ is found as the batch finds it
(``batch.find_submissions``), and only the graded cells are read, by the grader's own rule
(``submission.read_solution_cells``). Each unit's code is normalised (tokenised with Python's
``tokenize``; comments, whitespace and bare strings such as docstrings dropped; local names
replaced by one placeholder while keywords, builtins, attributes, module names and the
assignment's own names stay; runs of independent simple statements put in a canonical
order), the handed-out scaffold (``source.strip_solutions`` of the reference: signatures,
docstrings, provided lines, stubs) is subtracted, and every pair of students is compared
per unit and overall. Writes COURSE_DIR/similarity/ (or --out): ``similarity.html``
(self-contained; pairs ranked, side by side with the shared regions marked) and
``similarity.csv`` (a row per pair of students, most similar first; a row per submission
that could not be read). With --reference-corpus, ``similarity_reference.csv`` too: each
student against each known public solution (.py or .ipynb) of DIR.

Library: copydetect 0.5.0 (PyPI, MIT), chosen over Dolos (npm) after reading both: its
robust winnowing (MOSS's algorithm, Schleimer et al. 2003) and its copied-slice builder are
small, readable numpy code that runs in this process, while Dolos is a Node program with its
own tree-sitter parser and report server, a second runtime to pin for the same algorithm.
Only those two functions are used (``copydetect.utils.winnow``, ``get_copied_slices``):
copydetect's Pygments tokeniser turns every name into "V", torch's API included, which makes
honest solutions look alike; its k-gram hashes use Python's hash(), salted per process, so
scores would change from run to run; and its boilerplate removal (``np.intersect1d(...,
assume_unique=True)`` on hashes that repeat) also drops hashes that are not boilerplate. So
tokens, hashes and the scaffold's subtraction are done here.

Similarity is evidence for a person to review, never a verdict: this changes no grade.
Submitted code is never imported or run, only tokenised and parsed; everything shown in
the report is HTML-escaped.
"""

import ast
import bisect
import builtins
import dataclasses
import functools
import hashlib
import heapq
import html
import io
import itertools
import keyword
import multiprocessing
import os
import re
import statistics
import tokenize
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from autograder import write_csv
from autograder.submission import SubmissionError, cell_grade_id, cell_source, read_notebook, read_solution_cells
from solution import source as reference

UNITS = tuple(reference.graded_units())
OUT_DIR = "similarity"  # under the course directory, beside grader_results/
REPORT_HTML = "similarity.html"
PAIRS_CSV = "similarity.csv"
REFERENCE_CSV = "similarity_reference.csv"
# A fingerprint is K tokens long (shorter common idioms, "torch.zeros_like(x)", are noise);
# winnowing keeps one of every WINDOW, so any shared run of K + WINDOW - 1 = 16 tokens (about
# one line of code) is always found.
K = 12
WINDOW = 5
DETAILED_PAIRS = 15  # pairs shown side by side in the report; the CSV has every pair
PAIRS_PER_UNIT = 5
PLACEHOLDER = "V"
STRING = "S"
# The assignment's modules and the names a student is given: renaming them is not a disguise.
ASSIGNMENT_NAMES = {"torch", "nn", "F", "math", "np", "self", "cls"}


# ---------------------------------------------------------------------------------------
# Normalisation: one character per token, in canonical order
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Code:
    """One unit of one submission: the code as written, and its normalised tokens."""

    text: str
    symbols: str = ""  # one character per normalised token, in canonical order
    spans: list = dataclasses.field(default_factory=list)  # (start, end) in text of each token
    positions: dict = dataclasses.field(default_factory=dict)  # own fingerprint -> token positions
    masks: dict = dataclasses.field(default_factory=dict)  # own fingerprint -> its own tokens (window_mask)
    handed_out: int = 0  # the tokens inside a k-gram of the scaffold (window_mask)
    covered: int = 0  # tokens that its own fingerprints (the scaffold's taken out) cover


def reference_names() -> set[str]:
    """Every name the reference defines or imports at any depth (functions, classes,
    methods, modules): a student calls and defines these as handed out."""
    tree = ast.parse(reference.read_source())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


# Soft keywords (match, case, _) are left out: they are most often variables (``attn, _ = ...``).
KEPT_NAMES = (set(keyword.kwlist) | set(dir(builtins)) | ASSIGNMENT_NAMES | reference_names()) - {"_"}
_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
_FALLBACK_TOKEN = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|'[^'\n]*'?|\"[^\"\n]*\"?|\*\*|//|->|[^\s\w]")
_SIMPLE_STATEMENTS = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)
MUTATING_METHODS = {"append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "add",
                    "discard", "setdefault", "sort", "reverse", "backward", "register_buffer",
                    "register_parameter", "add_module"}
HASH_BASE = 0x9E3779B97F4A7C15  # odd, with well-mixed bits (2**64 / the golden ratio)
SYMBOLS_FROM, SYMBOLS = 0x10000, 0x100000  # code points above the surrogates: all characters
STUDENTS_PER_PROCESS = 40  # fewer students are read and compared in this process (a pool costs more)
# The longest reference unit is 5,600 characters; a cell far longer (pasted data, generated
# code) would cost time and memory (a bit mask per fingerprint) for no evidence.
MAX_COMPARED_CHARS = 20_000
MAX_CORPUS_CHARS = 100_000  # a public solution may be a whole file: it is compared whole
MAX_REORDERED_RUN = 64  # statements put in canonical order at once (the order costs n^2)


def normalised(kind: int, string: str, after_dot: bool) -> str:
    """What a token becomes: a local name the placeholder, a string one symbol, the rest as
    written (attributes, keywords, builtins, torch and the assignment's names, numbers,
    operators)."""
    if kind == tokenize.NAME:
        return string if after_dot or string in KEPT_NAMES else PLACEHOLDER
    return STRING if kind == tokenize.STRING else string


def raw_tokens(text: str) -> list[tuple[int, str, int, int, int]]:
    """(type, string, start, end, line) of each token that counts, start and end being
    offsets in text. Code that does not tokenise (a syntax error) is split by a regular
    expression instead, so that it is still compared."""
    line_starts = list(itertools.accumulate((len(line) for line in text.splitlines(True)), initial=0))
    tokens = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type not in _SKIPPED and tok.string.strip():
                start = line_starts[tok.start[0] - 1] + tok.start[1]
                end = line_starts[tok.end[0] - 1] + tok.end[1]
                tokens.append((tok.type, tok.string, start, end, tok.start[0]))
        return tokens
    except (tokenize.TokenError, SyntaxError, IndexError):
        return [(_fallback_type(m.group()), m.group(), m.start(), m.end(), text.count("\n", 0, m.start()) + 1)
                for m in _FALLBACK_TOKEN.finditer(text)]


def _fallback_type(string: str) -> int:
    """The tokenize type of a token found by the regular expression."""
    if string[0].isalpha() or string[0] == "_":
        return tokenize.NAME
    if string[0] in "'\"":
        return tokenize.STRING
    return tokenize.NUMBER if string[0].isdigit() else tokenize.OP


def parsed(text: str) -> ast.Module | None:
    """The syntax tree of text, or None (a syntax error, or nesting too deep to parse)."""
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def blocks(tree: ast.Module):
    """Every block (list of statements) of the tree, outermost first: only statements hold
    blocks, so this visits far fewer nodes than ast.walk."""
    pending = [tree.body]
    while pending:
        block = pending.pop()
        yield block
        for stmt in block:
            for name in ("body", "orelse", "finalbody"):
                inner = getattr(stmt, name, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    pending.append(inner)
            pending += [part.body for part in getattr(stmt, "handlers", []) + getattr(stmt, "cases", [])]


def bare_string_lines(tree: ast.Module) -> set[int]:
    """Lines of the strings that are whole statements (docstrings, strings used as
    comments): they say nothing about the code and are most of the scaffold."""
    lines = set()
    for block in blocks(tree):
        for stmt in block:
            if isinstance(stmt, ast.Expr) and isinstance(getattr(stmt.value, "value", None), str):
                lines.update(range(stmt.lineno, stmt.end_lineno + 1))
    return lines


def normalise(text: str) -> Code:
    """text as a Code: tokens normalised, bare strings dropped, independent statements in
    canonical order, one character per token."""
    tree = parsed(text)
    skipped_lines = bare_string_lines(tree) if tree else set()
    tokens, previous = [], ""
    for kind, string, start, end, line in raw_tokens(text):
        if not (kind == tokenize.STRING and line in skipped_lines):
            tokens.append((normalised(kind, string, previous == "."), start, end, line))
        previous = string
    if tree:
        tokens = in_canonical_order(tokens, tree)
    return Code(text, "".join(symbol(t[0]) for t in tokens), [(t[1], t[2]) for t in tokens])


# ---------------------------------------------------------------------------------------
# Canonical order: independent lines swapped by a student read the same
# ---------------------------------------------------------------------------------------


def statement_runs(tree: ast.Module) -> list[list[ast.stmt]]:
    """Runs of two or more consecutive simple statements (assignments, calls) of every
    block, each statement on lines of its own, at most MAX_REORDERED_RUN long."""
    runs = [run for block in blocks(tree) for run in _simple_runs(block)]
    return [run[i:i + MAX_REORDERED_RUN] for run in runs for i in range(0, len(run), MAX_REORDERED_RUN)]


def _simple_runs(block: list[ast.stmt]) -> list[list[ast.stmt]]:
    """The maximal runs of simple statements of one block that share no line with another
    statement (``a = 1; b = 2`` stays as written: its tokens cannot be told apart by line)."""
    runs, current = [], []
    for i, stmt in enumerate(block):
        alone = ((i == 0 or block[i - 1].end_lineno < stmt.lineno)
                 and (i + 1 == len(block) or block[i + 1].lineno > stmt.end_lineno))
        if isinstance(stmt, _SIMPLE_STATEMENTS) and alone:
            current.append(stmt)
        else:
            runs.append(current)
            current = []
    return [run for run in runs + [current] if len(run) > 1]


def _base_name(node: ast.AST) -> str | None:
    """The variable at the root of x.a[i].b(...), or None."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def changes_its_object(method: str) -> bool:
    """Whether obj.method(...) may change obj: torch's in-place methods (``add_``), the
    containers' (``append``) and ``backward``; ``x.sum(0)``, ``x.view(...)`` do not."""
    return method.endswith("_") or method in MUTATING_METHODS


def reads_and_writes(stmt: ast.stmt) -> tuple[set[str], set[str]]:
    """The names a statement reads and those it may change: assigned, item- or
    attribute-assigned, or the object of a method call (``states.append(h)``)."""
    reads, writes = set(), set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name):
            (reads if isinstance(node.ctx, ast.Load) else writes).add(node.id)
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and not isinstance(node.ctx, ast.Load):
            writes.add(_base_name(node))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and changes_its_object(node.func.attr)):
            writes.add(_base_name(node.func))
    if isinstance(stmt, ast.AugAssign):
        reads |= writes
    return reads, writes - {None}


def canonical_order(effects: list[tuple[set, set]], keys: list[str]) -> list[int]:
    """The statements' order with every dependency kept (a statement stays after one whose
    names it reads or writes, or that reads what it writes) and the rest decided by the
    normalised text, so any reordering of independent statements gives the same order."""
    after = [{j for j in range(i) if effects[j][1] & (effects[i][0] | effects[i][1])
              or effects[j][0] & effects[i][1]} for i in range(len(effects))]
    order, placed = [], set()
    while len(order) < len(effects):
        ready = [i for i in range(len(effects)) if i not in placed and after[i] <= placed]
        chosen = min(ready, key=lambda i: (keys[i], i))
        order.append(chosen)
        placed.add(chosen)
    return order


def in_canonical_order(tokens: list, tree: ast.Module) -> list:
    """tokens with every run of simple statements rearranged in canonical order."""
    lines = [t[3] for t in tokens]
    for run in statement_runs(tree):
        ranges = [(bisect.bisect_left(lines, s.lineno), bisect.bisect_right(lines, s.end_lineno)) for s in run]
        pieces = [tokens[lo:hi] for lo, hi in ranges]
        keys = [" ".join(t[0] for t in piece) for piece in pieces]
        order = canonical_order([reads_and_writes(s) for s in run], keys)
        tokens[ranges[0][0]:ranges[-1][1]] = [t for i in order for t in pieces[i]]
    return tokens


@functools.lru_cache(maxsize=1 << 16)
def symbol(token: str) -> str:
    """The character that stands for a normalised token, so that copydetect's character
    k-grams are k-grams of tokens. Chosen by a stable hash, the same in every process and
    run (the class is read by several processes); two tokens of a million-character space
    that share a character make a few false matches at worst."""
    return chr(SYMBOLS_FROM + stable_hash(token) % SYMBOLS)


# ---------------------------------------------------------------------------------------
# Fingerprints (copydetect) with the scaffold taken out
# ---------------------------------------------------------------------------------------


def stable_hash(text: str) -> int:
    """A 64-bit hash of text, the same in every process and run."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little", signed=True)


def kgram_hashes(symbols: str):
    """The hash of every K-token k-gram of a normalised document, in order (numpy int64): a
    polynomial hash of the tokens' characters modulo 2**64, the same in every run (copydetect
    hashes with Python's hash(), salted per process: its fingerprints, and so its scores,
    would change from one run to the next), computed for all k-grams at once."""
    import numpy as np

    codes = np.frombuffer(symbols.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    count = len(codes) - K + 1
    hashes = np.zeros(max(count, 0), dtype=np.uint64)
    for offset in range(K if count > 0 else 0):
        hashes = hashes * np.uint64(HASH_BASE) + codes[offset:offset + count]  # wraps modulo 2**64
    return hashes.view(np.int64)


def covered_tokens(code: "Code", starts) -> int:
    """How many of code's own tokens (not handed out) the k-grams starting at these
    positions cover together."""
    return (window_mask(starts) & ~code.handed_out).bit_count()


def window_mask(starts) -> int:
    """The tokens that the k-grams starting at these positions cover, as the bits of an int
    (pairs are compared by OR-ing these: a class of 300 has 45,000 pairs)."""
    mask = 0
    for start in starts:
        mask |= ((1 << K) - 1) << start
    return mask


def fingerprinted(code: Code, scaffold: set) -> Code:
    """code with its fingerprints (copydetect's robust winnowing of its k-gram hashes), those
    of the scaffold taken out, and the tokens of its own that they cover: a token inside any
    k-gram of the scaffold was handed out, even where a fingerprint also covers it."""
    from copydetect.utils import winnow

    hashes = kgram_hashes(code.symbols)
    code.handed_out = window_mask(i for i, value in enumerate(hashes.tolist()) if value in scaffold)
    selected, starts = winnow(hashes, WINDOW, remove_duplicates=False)
    positions: dict[int, list[int]] = {}
    for value, start in zip(selected.tolist(), starts.tolist()):
        if value not in scaffold:
            positions.setdefault(value, []).append(start)
    code.positions = positions
    code.masks = {value: window_mask(found) & ~code.handed_out for value, found in positions.items()}
    code.covered = covered_tokens(code, [start for found in positions.values() for start in found])
    return code


def shared_starts(a: "Code", b: "Code") -> tuple[list[int], list[int]]:
    """Where the fingerprints that a and b share start, in a and in b (token positions)."""
    shared = a.positions.keys() & b.positions.keys()
    return ([i for value in shared for i in a.positions[value]],
            [i for value in shared for i in b.positions[value]])


def shared_tokens(a: "Code", b: "Code") -> tuple[int, int]:
    """How many of a's tokens, and of b's, the fingerprints they share cover."""
    if a.symbols == b.symbols:  # the same code once normalised: all of it is shared
        return a.covered, b.covered
    mask_a = mask_b = 0
    for value in a.masks.keys() & b.masks.keys():
        mask_a |= a.masks[value]
        mask_b |= b.masks[value]
    return mask_a.bit_count(), mask_b.bit_count()


def shared_regions(code: "Code", starts: list[int]) -> list[tuple[int, int]]:
    """The (start, end) offsets in code.text of the tokens that the shared fingerprints
    cover (copydetect's slices, mapped back through the canonical order; handed-out tokens
    left unmarked), merged where only whitespace separates them."""
    from copydetect.utils import get_copied_slices

    import numpy as np

    slices = get_copied_slices(np.array(sorted(starts), dtype=np.int64), K)
    spans = sorted(code.spans[i] for first, last in zip(*slices.tolist()) for i in range(int(first), int(last))
                   if not code.handed_out >> i & 1)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and not code.text[merged[-1][1]:start].strip():
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


@dataclasses.dataclass
class Student:
    """A submission as compared: its graded units, normalised, or why it could not be read."""

    name: str
    units: dict  # unit -> Code
    problem: str = ""  # not empty: nothing of this submission was compared, and why
    notes: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Pair:
    """Two students' similarity: per unit and overall, each 0..1 (shared tokens over own)."""

    a: str
    b: str
    overall: float
    units: dict  # unit -> similarity


@functools.cache
def scaffolds() -> dict[str, set]:
    """unit -> every fingerprint of what was handed out for it (the released stub: its
    signature, docstring, provided lines and ``raise NotImplementedError()``)."""
    return {unit: set(kgram_hashes(normalise(reference.strip_solutions(reference.unit_source(unit))).symbols).tolist())
            for unit in UNITS}


@functools.lru_cache(maxsize=4096)
def unit_code(unit: str, text: str) -> Code:
    """A unit's code normalised and fingerprinted, the unit's scaffold taken out; the same
    cell handed in twice (most often an untouched stub) is done once."""
    return fingerprinted(normalise(text), scaffolds()[unit])


def read_student(name: str, notebook: Path | None, note: str) -> Student:
    """One submission's graded cells (the grader's rule), normalised and fingerprinted; a
    submission that cannot be read is a Student with the reason, never an exception."""
    if notebook is None:
        return Student(name, {}, note or "nothing submitted")
    try:
        cells, notes = read_solution_cells(notebook, UNITS)
        notes += [f"{unit}: only the first {MAX_COMPARED_CHARS:,} characters were compared"
                  for unit, code in cells.items() if len(code) > MAX_COMPARED_CHARS]
        units = {unit: unit_code(unit, code[:MAX_COMPARED_CHARS]) for unit, code in cells.items()}
    except SubmissionError as exc:
        return Student(name, {}, f"could not be read: {exc}")
    except Exception as exc:  # hostile or broken input that got past the reader: this row only
        return Student(name, {}, f"could not be read ({type(exc).__name__})")
    return Student(name, units, "", [note, *notes] if note else notes)


def compare(a: Student, b: Student, units=UNITS) -> Pair:
    """The pair's similarity per unit ((shared a + shared b) / (own a + own b), own being the
    tokens each one's fingerprints cover) and overall (the same sums over every unit, so a
    long unit counts more than a one-liner)."""
    scores, total_shared, total_own = {}, 0, 0
    for unit in units:
        code_a, code_b = a.units.get(unit), b.units.get(unit)
        own = (code_a.covered if code_a else 0) + (code_b.covered if code_b else 0)
        overlap = (0, 0)
        if code_a and code_b and code_a.covered and code_b.covered:
            overlap = shared_tokens(code_a, code_b)
        scores[unit] = sum(overlap) / own if own else 0.0
        total_shared += sum(overlap)
        total_own += own
    return Pair(a.name, b.name, total_shared / total_own if total_own else 0.0, scores)


def all_pairs(students: list[Student]) -> list[Pair]:
    """Every pair of readable students, most similar first (then by names); compared by as
    many processes as there are cores for a class of hundreds."""
    readable = [s for s in students if not s.problem]
    processes = min(os.cpu_count() or 1, len(readable) // STUDENTS_PER_PROCESS)
    if processes < 2 or "fork" not in multiprocessing.get_all_start_methods():
        pairs = [pair for first in range(len(readable)) for pair in _pairs_of(readable, first)]
    else:
        _compare_state["students"] = readable  # inherited by the forked processes, not pickled
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            rows = pool.map(_pairs_in_process, range(len(readable)), chunksize=8)
            pairs = [pair for row in rows for pair in row]
    return sorted(pairs, key=lambda p: (-p.overall, p.a, p.b))


_compare_state: dict = {}


def _pairs_of(students: list[Student], first: int) -> list[Pair]:
    """The pairs of students[first] with every student after it."""
    return [compare(students[first], other) for other in students[first + 1:]]


def _pairs_in_process(first: int) -> list[Pair]:
    """_pairs_of in a process of all_pairs's pool."""
    return _pairs_of(_compare_state["students"], first)


# ---------------------------------------------------------------------------------------
# A known public solution (--reference-corpus)
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Match:
    """How much of a student's code is in a known public solution: per unit and overall,
    the share of the student's own tokens that the file also has."""

    student: str
    source: str  # the corpus file, relative to the corpus folder
    overall: float
    units: dict


def corpus_files(folder: Path) -> list[Path]:
    """The .py and .ipynb files under folder, hidden ones and links left out, by path."""
    found = [path for path in Path(folder).rglob("*") if path.suffix in (".py", ".ipynb")
             and path.is_file() and not path.is_symlink()
             and not any(part.startswith(".") for part in path.relative_to(folder).parts)]
    return sorted(found)


def corpus_text(path: Path) -> tuple[dict[str, str], str]:
    """(unit -> code where the file has cells with the units' grade_ids, the whole code):
    notebooks are read by the grader's reader; IPython lines (%, !) are dropped."""
    if path.suffix != ".ipynb":
        return {}, path.read_text(encoding="utf-8", errors="replace")
    notebook = read_notebook(path)
    if any(cell_grade_id(cell) in UNITS for cell in notebook.get("cells", [])):
        return read_solution_cells(path, UNITS)[0], ""
    code = [cell_source(cell) or "" for cell in notebook.get("cells", [])
            if isinstance(cell, dict) and cell.get("cell_type") == "code"]
    lines = "\n\n".join(code).splitlines()
    return {}, "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def corpus_units(path: Path) -> dict[str, str]:
    """unit -> the code of a public solution for it: the cell with its grade_id, else the
    file's definitions of the unit's names, else the whole file (so that a solution laid out
    differently is still compared)."""
    cells, whole = corpus_text(path)
    if cells:
        return cells
    try:
        _, definitions = reference.split_definitions(whole)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        definitions = {}
    units = {}
    for unit, names in reference.graded_units().items():
        found = [definitions[name] for name in names if name in definitions]
        units[unit] = "\n\n\n".join(found) if found else whole
    return units


def read_corpus(folder: Path) -> tuple[list[Student], list[str]]:
    """Each corpus file as a Student named by its path; and the files that could not be read."""
    sources, problems = [], []
    for path in corpus_files(folder):
        name = path.relative_to(folder).as_posix()
        try:
            units = corpus_units(path)
            sources.append(Student(name, {unit: unit_code(unit, code[:MAX_CORPUS_CHARS])
                                          for unit, code in units.items()}))
        except (SubmissionError, OSError, UnicodeError, ValueError) as exc:
            problems.append(f"{name}: could not be read ({str(exc)[:200] or type(exc).__name__})")
    return sources, problems


def match(student: Student, source: Student) -> Match:
    """The share of the student's own tokens (per unit and overall) found in source."""
    scores, total_shared, total_own = {}, 0, 0
    for unit in UNITS:
        code, known = student.units.get(unit), source.units.get(unit)
        own = code.covered if code else 0
        shared = shared_tokens(code, known)[0] if own and known and known.covered else 0
        scores[unit] = shared / own if own else 0.0
        total_shared += shared
        total_own += own
    return Match(student.name, source.name, total_shared / total_own if total_own else 0.0, scores)


def all_matches(students: list[Student], sources: list[Student]) -> list[Match]:
    """Every readable student against every corpus file, closest first."""
    found = [match(student, source) for student in students if not student.problem for source in sources]
    return sorted(found, key=lambda m: (-m.overall, m.student, m.source))


# ---------------------------------------------------------------------------------------
# The class, the CSV files
# ---------------------------------------------------------------------------------------


def read_class(course_dir: Path) -> list[Student]:
    """Every student folder of submitted/, with the notebook the grader would grade, read
    by as many processes as there are cores (tokenising is most of the time)."""
    from autograder.batch import find_submissions  # the grader's rule for which file counts

    jobs = [(sub.student, sub.notebook, sub.note) for sub in find_submissions(course_dir)]
    processes = min(os.cpu_count() or 1, len(jobs) // STUDENTS_PER_PROCESS)
    if processes < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [read_student(*job) for job in jobs]
    scaffolds()  # computed once, here: the forked processes inherit it
    # fork: the children have the modules loaded already (spawn would import them again,
    # matplotlib with copydetect, for a second or more each).
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(read_student, *zip(*jobs), chunksize=max(1, STUDENTS_PER_PROCESS // 4)))


def write_pairs_csv(path: Path, pairs: list[Pair], students: list[Student]) -> None:
    """A row per pair of students, most similar first (similarities 0..1), then a row per
    submission that was not compared, saying why."""
    rows = [[rank, p.a, p.b, f"{p.overall:.3f}", *(f"{p.units[u]:.3f}" for u in UNITS), ""]
            for rank, p in enumerate(pairs, 1)]
    rows += [["", s.name, "", "", *[""] * len(UNITS), s.problem] for s in students if s.problem]
    write_csv(path, ["rank", "student_a", "student_b", "similarity", *UNITS, "note"], rows)


def write_matches_csv(path: Path, matches: list[Match], problems: list[str]) -> None:
    """A row per (student, corpus file), closest first, then the corpus files not read."""
    rows = [[m.student, m.source, f"{m.overall:.3f}", *(f"{m.units[u]:.3f}" for u in UNITS), ""]
            for m in matches]
    rows += [["", "", "", *[""] * len(UNITS), problem] for problem in problems]
    write_csv(path, ["student", "public_solution", "share_found", *UNITS, "note"], rows)


# ---------------------------------------------------------------------------------------
# The HTML report: self-contained, everything escaped, no script
# ---------------------------------------------------------------------------------------

# No script runs and nothing is fetched, whatever a submission holds (defence in depth
# beside the escaping).
CSP = "default-src 'none'; style-src 'unsafe-inline'"
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1d1d1f; max-width: 1500px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px; }
h3 { font-size: 15px; margin: 22px 0 6px; } h4 { font-size: 14px; margin: 14px 0 4px; }
.notice { background: #fff8e1; border: 1px solid #f0c36d; padding: 10px 14px; border-radius: 6px; }
.notice p { margin: 4px 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d0d0d0; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.score { text-align: right; font-variant-numeric: tabular-nums; }
td.name { min-width: 90px; max-width: 240px; overflow-wrap: break-word; }
th.unit { font-size: 11px; font-weight: 600; max-width: 90px; }
.wide { overflow-x: auto; max-width: 100%; }
.units { display: flex; flex-wrap: wrap; gap: 16px; } .units table { margin: 0; }
.pair { border-top: 2px solid #888; margin-top: 28px; }
.side { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
.side > div { min-width: 0; }
.who { font-weight: 600; margin-bottom: 2px; overflow-wrap: anywhere; }
pre { background: #fafafa; border: 1px solid #ddd; padding: 8px; margin: 0; font-size: 12px;
      white-space: pre-wrap; overflow-wrap: anywhere; max-height: 520px; overflow: auto; }
mark { background: #ffd54f; color: inherit; }
.ctl { background: #c62828; color: #fff; font-size: 10px; padding: 0 2px; }
.muted { color: #666; }
"""
CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
MAX_SHOWN_CHARS = 20_000
RANKED_PAIRS = 50
REPORT_MATCHES = 20


def esc(text) -> str:
    """text escaped for HTML, with invisible and direction-changing characters shown as
    their code points (a line that reads one way and runs another is visible)."""
    return CONTROL_CHARS.sub(lambda m: f'<span class="ctl">U+{ord(m.group()):04X}</span>',
                             html.escape(str(text), quote=True))


def unit_header(unit: str) -> str:
    """A unit's column header, which may break after its underscores (ten columns fit)."""
    return f'<th class="unit">{esc(unit).replace("_", "_<wbr>")}</th>'


def score_cell(score: float) -> str:
    """A table cell with the score in percent, shaded from white (0) to red (1)."""
    colour = "#fff" if score > 0.6 else "#1d1d1f"
    return (f'<td class="score" style="background: rgba(198, 40, 40, {min(score, 1.0) * 0.9:.2f}); '
            f'color: {colour}">{score * 100:.0f}%</td>')


def marked(text: str, regions: list[tuple[int, int]]) -> str:
    """text escaped, the regions (offsets) in <mark>; cut at MAX_SHOWN_CHARS with a note."""
    shown, parts, at = text[:MAX_SHOWN_CHARS], [], 0
    for start, end in regions:
        if start >= len(shown):
            break
        parts += [esc(shown[at:start]), "<mark>", esc(shown[start:min(end, len(shown))]), "</mark>"]
        at = min(end, len(shown))
    parts.append(esc(shown[at:]))
    if len(text) > len(shown):
        parts.append(f'\n<span class="muted">[{len(text) - len(shown)} more characters not shown]</span>')
    return "".join(parts)


def notice(compared: int) -> str:
    """What the report is and is not, and how to read it."""
    return f"""<div class="notice">
<p><b>Similarity is evidence for a person to review, never a verdict.</b> This report changes
no grade. Two honest students can write alike (short units, the obvious one-line solution,
the same tutorial); a student who copied can rewrite enough to hide it.</p>
<p>How to read it: for each graded unit, the score is the share of the two students' own code
(the handed-out scaffold taken out) that the other also has, after variable names, comments,
whitespace and the order of independent lines were made irrelevant. Compare a pair's score
with the class's typical pair below: short units are alike in most pairs. Highlighted code is
what the two share. {compared} submissions compared; the CSV beside this file lists every pair.</p>
<p>What it cannot see: code that works the same but is written differently (other functions,
another loop structure), code shared through a common source nobody listed, anything outside
the graded cells, and who copied from whom.</p></div>"""


def unit_columns(pairs: list[Pair]) -> dict[str, list[float]]:
    """unit -> every pair's score in it, in the pairs' order (and "overall")."""
    columns = {unit: [pair.units[unit] for pair in pairs] for unit in UNITS}
    columns["overall"] = [pair.overall for pair in pairs]
    return columns


def summary(students: list[Student], pairs: list[Pair], columns: dict) -> str:
    """Counts, and the class's typical pair (median, 90th percentile) overall and per unit."""
    def typical(values: list[float]) -> str:
        """The median and 90th percentile of scores, in words."""
        if not values:
            return "no pairs"
        tenth = sorted(values)[int(0.9 * (len(values) - 1))]
        return f"median {statistics.median(values) * 100:.0f}%, 90th percentile {tenth * 100:.0f}%"

    compared = sum(1 for s in students if not s.problem)
    rows = "".join(f"<tr><td>{esc(unit)}</td><td>{typical(columns[unit])}</td></tr>" for unit in UNITS)
    return (f"<h2>Summary</h2><p>{len(students)} student folders, {compared} compared, "
            f"{len(students) - compared} not compared; {len(pairs)} pairs. A fingerprint is {K} "
            f"tokens; any shared run of {K + WINDOW - 1} tokens or more is found.</p>"
            f"<table><tr><th>unit</th><th>the class's pairs</th></tr>"
            f"<tr><td><b>overall</b></td><td>{typical(columns['overall'])}</td></tr>{rows}</table>")


def not_compared(students: list[Student], corpus_problems: list[str]) -> str:
    """The submissions (and corpus files) that could not be read, and those read in part."""
    rows = "".join(f'<tr><td class="name">{esc(s.name)}</td><td>{esc(s.problem)}</td></tr>'
                   for s in students if s.problem)
    rows += "".join(f'<tr><td class="name">{esc(s.name)}</td><td>compared in part: {esc("; ".join(s.notes))}</td></tr>'
                    for s in students if not s.problem and s.notes)
    rows += "".join(f"<tr><td>(public solutions)</td><td>{esc(p)}</td></tr>" for p in corpus_problems)
    if not rows:
        return "<h2>Not compared</h2><p>Every submission was read.</p>"
    return f"<h2>Not compared</h2><table><tr><th>student</th><th>why</th></tr>{rows}</table>"


def ranked_pairs(pairs: list[Pair]) -> str:
    """The most similar pairs overall, with every unit's score; the first ones link to their
    side-by-side view."""
    header = "".join(unit_header(unit) for unit in UNITS)
    rows = []
    for rank, pair in enumerate(pairs[:RANKED_PAIRS], 1):
        link = f'<a href="#pair-{rank}">{rank}</a>' if rank <= DETAILED_PAIRS else str(rank)
        rows.append(f'<tr><td>{link}</td><td class="name">{esc(pair.a)}</td><td class="name">{esc(pair.b)}</td>'
                    f'{score_cell(pair.overall)}{"".join(score_cell(pair.units[u]) for u in UNITS)}</tr>')
    shown = f"The first {RANKED_PAIRS} of {len(pairs)}" if len(pairs) > RANKED_PAIRS else f"All {len(pairs)}"
    return (f"<h2>Pairs, most similar first</h2><p>{shown} pairs (every pair is in the CSV).</p>"
            f"<div class=\"wide\"><table><tr><th>#</th>"
            f"<th>student</th><th>student</th><th>overall</th>{header}</tr>{''.join(rows)}</table></div>")


def unit_tables(pairs: list[Pair], columns: dict) -> str:
    """For each unit, the pairs most similar in that unit alone."""
    tables = []
    for unit in UNITS:
        best = [pairs[i] for i in heapq.nlargest(PAIRS_PER_UNIT, range(len(pairs)), key=columns[unit].__getitem__)]
        rows = "".join(f'<tr><td class="name">{esc(p.a)}</td><td class="name">{esc(p.b)}</td>'
                       f"{score_cell(p.units[unit])}</tr>" for p in best if p.units[unit] > 0)
        tables.append(f"<div><h4>{esc(unit)}</h4><table><tr><th>student</th><th>student</th><th>score</th></tr>"
                      f"{rows or '<tr><td colspan=3>no shared code</td></tr>'}</table></div>")
    return f"<h2>Per unit</h2><div class=\"units\">{''.join(tables)}</div>"


def column(name: str, code: Code, starts: list[int]) -> str:
    """One side of a side-by-side view: whose code, and the code with what is shared marked."""
    return (f'<div><div class="who">{esc(name)}</div>'
            f"<pre>{marked(code.text, shared_regions(code, starts))}</pre></div>")


def side_by_side(anchor: str, title: str, a: Student, b: Student, scores: dict) -> str:
    """Two submissions' units with shared code, most similar first, side by side."""
    parts = [f'<section class="pair" id="{anchor}"><h3>{title}</h3>']
    for unit in sorted(UNITS, key=lambda u: -scores[u]):
        if scores[unit] <= 0 or unit not in a.units or unit not in b.units:
            continue
        starts_a, starts_b = shared_starts(a.units[unit], b.units[unit])
        parts.append(f'<h4>{esc(unit)}: {scores[unit] * 100:.0f}%</h4><div class="side">'
                     f"{column(a.name, a.units[unit], starts_a)}{column(b.name, b.units[unit], starts_b)}</div>")
    unshared = [unit for unit in UNITS if scores[unit] <= 0]
    if unshared:
        parts.append(f'<p class="muted">Nothing shared beyond the scaffold in: {esc(", ".join(unshared))}.</p>')
    return "".join(parts) + "</section>"


def pair_details(pairs: list[Pair], by_name: dict[str, Student]) -> str:
    """Side-by-side views of the most similar pairs."""
    shown = [p for p in pairs[:DETAILED_PAIRS] if p.overall > 0]
    views = [side_by_side(f"pair-{rank}", f"#{rank}: {esc(p.a)} and {esc(p.b)}, {p.overall * 100:.0f}% overall",
                          by_name[p.a], by_name[p.b], p.units) for rank, p in enumerate(shown, 1)]
    return f"<h2>Side by side</h2>{''.join(views) or '<p>No pair shares code beyond the scaffold.</p>'}"


def corpus_section(matches: list[Match], by_name: dict[str, Student], sources: dict[str, Student]) -> str:
    """The students closest to a known public solution, and the closest ones side by side."""
    header = "".join(unit_header(unit) for unit in UNITS)
    best = [m for m in matches if m.overall > 0][:REPORT_MATCHES]
    rows = "".join(f'<tr><td class="name">{esc(m.student)}</td><td class="name">{esc(m.source)}</td>'
                   f'{score_cell(m.overall)}{"".join(score_cell(m.units[u]) for u in UNITS)}</tr>' for m in best)
    views = [side_by_side(f"public-{rank}", f"{esc(m.student)} and the public solution {esc(m.source)}: "
                          f"{m.overall * 100:.0f}% of the student's code found", by_name[m.student],
                          sources[m.source], m.units) for rank, m in enumerate(best[:5], 1)]
    table = (f'<div class="wide"><table><tr><th>student</th><th>public solution</th><th>share found</th>'
             f"{header}</tr>{rows}</table></div>"
             if rows else "<p>No submission shares code with the public solutions given.</p>")
    return (f"<h2>Close to a known public solution</h2><p>The share of each student's own code that "
            f"a file of the reference corpus also has.</p>{table}{''.join(views)}")


def report_html(students: list[Student], pairs: list[Pair], matches: list[Match] | None,
                sources: list[Student], corpus_problems: list[str], title: str) -> str:
    """The whole report, one self-contained HTML page."""
    by_name, columns = {s.name: s for s in students}, unit_columns(pairs)
    corpus = corpus_section(matches, by_name, {s.name: s for s in sources}) if matches is not None else ""
    body = (f"<h1>{esc(title)}</h1>{notice(sum(1 for s in students if not s.problem))}"
            f"{summary(students, pairs, columns)}{not_compared(students, corpus_problems)}{corpus}"
            f"{ranked_pairs(pairs)}{unit_tables(pairs, columns)}{pair_details(pairs, by_name)}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n")


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    """What a run wrote, and what it found (for the command line and the tests)."""

    students: list
    pairs: list
    matches: list | None
    files: list


def similarity_report(course_dir: Path, corpus: Path | None = None, out_dir: Path | None = None) -> Report:
    """Compare every pair of a course directory's submissions (and each with the corpus);
    write the HTML report and the CSV files into out_dir (COURSE_DIR/similarity/)."""
    from autograder.batch import ASSIGNMENT

    course_dir = Path(course_dir)
    students = read_class(course_dir)
    pairs = all_pairs(students)
    sources, corpus_problems = read_corpus(corpus) if corpus else ([], [])
    matches = all_matches(students, sources) if corpus else None
    out_dir = Path(out_dir) if out_dir else course_dir / OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / PAIRS_CSV, out_dir / REPORT_HTML]
    write_pairs_csv(files[0], pairs, students)
    if matches is not None:
        files.append(out_dir / REFERENCE_CSV)
        write_matches_csv(files[-1], matches, corpus_problems)
    page = report_html(students, pairs, matches, sources, corpus_problems, f"Similarity report: {ASSIGNMENT}")
    tmp = files[1].with_name(f".{REPORT_HTML}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, files[1])
    return Report(students, pairs, matches, files)
