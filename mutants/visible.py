"""What the notebook's visible checks catch: each mutant's cells run through the checks a
student runs, to set what a student sees locally beside what the grader sees.

Which cells of the instructor's notebook run, in the notebook's order: the first code cell
(imports and set-up, IPython magics left out), the provided-code cells (nbgrader grade ids
``provided_*``), every unit cell (the mutant's code for its unit, the reference's for the
others) and the visible-check cells (``with visible_check(``) from the mutant's unit on; not
the data, encoder, training, figure or summary cells (minutes, and they check nothing), nor
the checks of earlier units (they run before the mutant's cell is defined, so it cannot
change them).

They run offline on the CPU, one thread, in a child forked per mutant from one warm process
(python -m mutants.visible: torch, torchvision and the helpers imported once), which is
killed past its time limit: a mutant may loop forever or crash the interpreter. Mutants are
the instructor's reference, changed: this runs them as the instructor's own code, outside
the grader's sandbox, with only a time limit.
"""

import dataclasses
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time

from autograder import REPO_ROOT, SOURCE_NOTEBOOK

CHECK_MARK = "with visible_check("
PROVIDED_PREFIX = "provided_"
SECONDS = 20  # per mutant: the reference's checks take about 0.3 s after the warm start
# What a child may map beyond the warm process (bytes): a mutant that allocates without
# bound fails with a MemoryError instead of exhausting the machine (the checks need ~300 MB).
MEMORY_HEADROOM = 2 << 30


@dataclasses.dataclass
class VisibleOutcome:
    checks: dict[str, bool]  # "<unit> <check name>" -> passed, as captioning_helpers records them
    error: str = ""  # the run did not finish: timed out, crashed, or a cell outside the checks raised

    @property
    def failed(self) -> list[str]:
        return [name for name, passed in self.checks.items() if not passed]


def notebook_cells(notebook=SOURCE_NOTEBOOK) -> list[tuple[str, str]]:
    """[(kind, source)] of the notebook's code cells that run: kind is "setup", "provided",
    a unit's name (its solution cell) or "check"."""
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    chosen = [("setup", _without_magics("".join(cells[0]["source"])))]
    for cell in cells[1:]:
        source, meta = "".join(cell["source"]), cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            chosen.append((meta["grade_id"], source))
        elif str(meta.get("grade_id", "")).startswith(PROVIDED_PREFIX):
            chosen.append(("provided", source))
        elif CHECK_MARK in source:
            chosen.append(("check", source))
    return chosen


def _without_magics(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def program(cells: dict[str, str], notebook_cells_: list[tuple[str, str]]) -> list[str]:
    """The sources to run for one mutant: cells maps the changed unit(s) to their code."""
    first_changed = min((i for i, (kind, _) in enumerate(notebook_cells_) if kind in cells), default=0)
    sources = []
    for i, (kind, source) in enumerate(notebook_cells_):
        if kind == "check" and i < first_changed:
            continue
        sources.append(cells.get(kind, source))
    return sources


def visible_check_results_many(cells_list: list[dict[str, str]], *, timeout: float = SECONDS,
                               jobs: int = 1) -> list[VisibleOutcome]:
    """The visible checks' verdicts for each mutant's cells, run by one warm process."""
    if not cells_list:
        return []
    layout = notebook_cells()
    request = json.dumps({"programs": [program(cells, layout) for cells in cells_list], "timeout": timeout,
                          "jobs": jobs})
    environment = {**os.environ, "CAPTIONING_PRETRAINED": "0", "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg",
                   "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "mutants.visible"], input=request, capture_output=True, text=True,
                          cwd=SOURCE_NOTEBOOK.parent, env=environment)
    if done.returncode != 0:
        raise RuntimeError(f"the visible checks' runner failed: {done.stderr[-2000:]}")
    return [VisibleOutcome(dict(checks), error) for checks, error in json.loads(done.stdout)]


def visible_check_results(cells: dict[str, str], *, timeout: float = SECONDS) -> VisibleOutcome:
    return visible_check_results_many([cells], timeout=timeout)[0]


# ---------------------------------------------------------------------------------------
# The runner (python -m mutants.visible, in the notebook's folder): requests on stdin
# ---------------------------------------------------------------------------------------


def _run_child(sources: list[str], write_fd: int) -> None:
    """In the forked child: run the sources, send [checks, error] as JSON, exit."""
    import captioning_helpers as helpers

    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + MEMORY_HEADROOM, mapped + MEMORY_HEADROOM))
    error = ""
    helpers._RESULTS.clear()
    namespace = {"__name__": "__main__"}
    try:
        for source in sources:
            exec(compile(source, "<notebook cell>", "exec"), namespace)
    except BaseException as exc:  # the mutant's own failure, outside a visible check
        error = f"{type(exc).__name__}: {exc}"[:300]
    checks = {}
    for group, name, passed, _ in helpers._RESULTS:
        checks[f"{group} {name}"] = bool(passed)
    os.write(write_fd, json.dumps([checks, error]).encode())
    os._exit(0)


def _start(sources: list[str]) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            _run_child(sources, write_fd)
        finally:
            os._exit(1)
    os.close(write_fd)
    return pid, read_fd


def _finish(pid: int, read_fd: int, deadline: float, timeout: float) -> tuple[dict, str]:
    """The child's [checks, error], or the reason it gave none (killed at the deadline)."""
    data = b""
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([read_fd], [], [], max(left, 0))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            return {}, f"timed out after {timeout:g} s"
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if not data:
        return {}, f"the run ended without results (exit status {os.waitstatus_to_exitcode(status)})"
    checks, error = json.loads(data)
    return checks, error


def serve(request: dict) -> list:
    """Run every program of the request, up to request["jobs"] children at a time."""
    timeout, jobs = request["timeout"], max(1, request["jobs"])
    programs = request["programs"]
    results, running, next_index = [None] * len(programs), {}, 0
    while next_index < len(programs) or running:
        while next_index < len(programs) and len(running) < jobs:
            pid, read_fd = _start(programs[next_index])
            running[next_index] = (pid, read_fd, time.monotonic() + timeout)
            next_index += 1
        # Collect the oldest child (simple, and fair with one or two jobs).
        index = min(running)
        pid, read_fd, deadline = running.pop(index)
        results[index] = _finish(pid, read_fd, deadline, timeout)
    return results


def main() -> None:
    request = json.loads(sys.stdin.read())
    sys.path.insert(0, os.getcwd())
    import torch
    import torchvision.models  # noqa: F401 (the provided ImageEncoder builds a RegNet: import it once)

    import captioning_helpers

    torch.set_num_threads(1)
    # The set-up cell asks for the machine's threads: children run side by side, one each.
    captioning_helpers.limit_threads = lambda most=1: 1
    print(json.dumps(serve(request)))


if __name__ == "__main__":
    main()
