"""The warm grader: every run is forked from one zygote, and no run reaches another or it.

Each defence is shown to matter: the same probe, run where the defence is absent (two
halves of one run, which share one sandbox and one process; a process that did read the
reference), finds what it looks for.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autograder import sandbox
from autograder.sandbox import Limits, run_worker
from catalogue.isolation_attacks import _unique_solution_line
from conftest import REPO_ROOT
from grading import INSTRUCTOR_NOTEBOOK, TEST_SECRET, grade_notebook

pytestmark = pytest.mark.skipif(not sandbox.sandbox_status()[0],
                                reason=f"bwrap cannot isolate here: {sandbox.sandbox_status()[1]}")
LIMITS = Limits(wall_seconds=60, max_processes=16)


def run(source: str, **kw) -> sandbox.SandboxResult:
    return run_worker(["-c", textwrap.dedent(source)], limits=LIMITS, **kw)


# --- two runs of one zygote -------------------------------------------------------------------

LEAVE_TRACES = """
    import ctypes, os, socket, time
    open("/tmp/trace-of-a", "w").write("a")
    open("/dev/shm/trace-of-a", "w").write("a")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\\0trace-of-a")  # abstract: no file, the network namespace's
    listener.listen()
    libc = ctypes.CDLL(None, use_errno=True)
    segment = libc.shmget(0x5eed, 4096, 0o1666)  # IPC_CREAT | 0666: System V shared memory
    assert segment >= 0, ctypes.get_errno()
"""
LOOK_FOR_TRACES = """
    import ctypes, json, os, signal, socket
    me = os.getpid()
    seen = {"tmp": os.path.exists("/tmp/trace-of-a"), "shm": os.path.exists("/dev/shm/trace-of-a")}
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect("\\0trace-of-a")
        seen["socket"] = True
    except OSError:
        seen["socket"] = False
    seen["sysv"] = ctypes.CDLL(None).shmget(0x5eed, 0, 0) >= 0
    seen["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me))
    signalled = []
    for pid in range(2, 4096):
        if pid != me:
            try:
                os.kill(pid, 0)
                signalled.append(pid)
            except OSError:
                pass
    seen["signalled"] = signalled
    print(json.dumps(seen))
"""


def test_two_runs_forked_from_one_zygote_see_nothing_of_each_other():
    """A leaves a file in /tmp and /dev/shm, an abstract socket, a System V segment and its
    own live process; B, forked from the same zygote while A runs, finds none of them."""
    zygote = sandbox.start_zygote()
    ready_read, ready_write = os.pipe()
    first = {}

    def run_a():
        first["result"] = run(LEAVE_TRACES + f"""
    os.write({ready_write}, b"ready")
    time.sleep(20)
""", pass_fds=(ready_write,))

    import threading
    thread = threading.Thread(target=run_a)
    thread.start()
    try:
        assert os.read(ready_read, 5) == b"ready"
        second = run(LOOK_FOR_TRACES)
    finally:
        os.close(ready_read)
    assert zygote is sandbox.start_zygote() and zygote.healthy()  # both came from this one
    assert second.returncode == 0, second.stderr
    seen = json.loads(second.stdout)
    assert seen == {"tmp": False, "shm": False, "socket": False, "sysv": False, "processes": [],
                    "signalled": []}, seen
    thread.join(timeout=1)  # A is still asleep: its run ends with the test's process


def test_without_a_sandbox_of_its_own_a_run_finds_the_other_runs_traces():
    """The probe above works: B run in A's sandbox (a child of A's) finds every trace."""
    result = run(LEAVE_TRACES + """
    if os.fork() == 0:
        time.sleep(20)
        os._exit(0)
""" + LOOK_FOR_TRACES)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["tmp"] and seen["shm"] and seen["socket"] and seen["sysv"], seen
    assert seen["processes"] and seen["signalled"], seen


# --- what a run changes in Python and torch ---------------------------------------------------

TAMPER = """
    import builtins, os, random, sys, numpy, torch
    torch.allclose = lambda *args, **kwargs: True
    torch.Tensor.__eq__ = lambda self, other: True
    torch.set_default_dtype(torch.float16)
    torch.manual_seed(1234)
    random.seed(1234)
    numpy.random.seed(1234)
    torch.nn.modules.module.register_module_forward_hook(lambda module, args, output: output * 0)
    library = torch.library.Library("kitprobe", "DEF")
    library.define("leak(Tensor x) -> Tensor")
    sys.modules["kitprobe_marker"] = sys
    os.environ["KITPROBE"] = "1"
    builtins.kitprobe = True
    import forbidden
    forbidden.violations = lambda: []
"""
FINGERPRINT = """
    import builtins, json, os, random, sys, numpy, torch
    import forbidden
    fingerprint = {
        "allclose": torch.allclose(torch.zeros(1), torch.ones(1)),
        "eq": bool(torch.zeros(1) == torch.ones(1)),
        "dtype": str(torch.get_default_dtype()),
        "torch_rng": torch.rand(2).tolist(), "initial_seed": torch.initial_seed(),
        # Whether each generator was seeded with 1234 before (what TAMPER does).
        "python_rng": random.random() == (random.seed(1234), random.random())[1],
        "numpy_rng": float(numpy.random.rand()) == (numpy.random.seed(1234), float(numpy.random.rand()))[1],
        "hooks": len(torch.nn.modules.module._global_forward_hooks),
        "op": hasattr(torch.ops, "kitprobe") and hasattr(torch.ops.kitprobe, "leak"),
        "module": "kitprobe_marker" in sys.modules, "environ": "KITPROBE" in os.environ,
        "builtin": hasattr(builtins, "kitprobe"),
        "violations": forbidden.violations.__module__,
    }
    print(json.dumps(fingerprint))
"""


def fingerprint(*snippets: str) -> dict:
    result = run("".join(textwrap.dedent(s) for s in snippets))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_what_a_run_changes_in_torch_or_python_reaches_no_later_run():
    before = fingerprint(FINGERPRINT)
    tampered = fingerprint(TAMPER, FINGERPRINT)  # the same changes, seen in their own run
    after = fingerprint(FINGERPRINT)
    assert after == before, (before, after)
    assert all(tampered[key] != before[key] for key in before), (before, tampered)


# --- the zygote's memory ----------------------------------------------------------------------

def readable_memory(pid: int) -> bytes:
    """Every readable mapping of pid's memory (this test runs as root, or as its owner)."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r") or "[vvar" in line or "[vsyscall]" in line:
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except (OSError, ValueError, OverflowError):
                pass  # a guard page, or a mapping that went away
    return b"".join(chunks)


def markers() -> list[bytes]:
    return [_unique_solution_line(unit).encode() for unit in ("rnn_step_backward", "AttentionLSTM", "CaptioningRNN")]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="reading a non-dumpable process's memory needs root")


@needs_root
@pytest.mark.slow
def test_the_zygote_holds_no_reference_code_no_hidden_inputs_and_no_secret(tmp_path):
    """After grading a submission (whose workers held its job and served collaborators), the
    zygote's memory holds no line of the reference's solutions and not the secret."""
    result = grade_notebook(INSTRUCTOR_NOTEBOOK)
    assert result.score == 100, [t.reason for t in result.tests if t.score < t.max_score]
    memory = readable_memory(sandbox.start_zygote().proc.pid)
    assert len(memory) > 100 << 20  # torch's libraries at least: the scan read the process
    assert not [m for m in markers() if m in memory]
    assert TEST_SECRET not in memory


def test_the_scan_finds_the_reference_in_a_process_that_read_it(tmp_path):
    reader_code = "import sys, time; source = open(sys.argv[1]).read(); print('read', flush=True); time.sleep(60)"
    reader = subprocess.Popen([sys.executable, "-c", reader_code, str(REPO_ROOT / "solution" / "captioning.py")],
                              stdout=subprocess.PIPE)
    try:
        assert reader.stdout.readline() == b"read\n"
        memory = readable_memory(reader.pid)
    finally:
        reader.kill()
        reader.wait()
    assert all(m in memory for m in markers())


# --- a zygote that dies or stops --------------------------------------------------------------

def comparable(result) -> list:
    return [result.status, result.mode, [(t.unit, t.test, t.score, t.reason) for t in result.tests]]


@pytest.mark.slow
@pytest.mark.parametrize("harm", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_a_zygote_that_dies_or_stops_is_replaced_and_no_score_changes(harm):
    expected = comparable(grade_notebook(INSTRUCTOR_NOTEBOOK))
    zygote = sandbox.start_zygote()
    old_pid = zygote.proc.pid
    os.kill(old_pid, harm)
    time.sleep(0.2)
    again = comparable(grade_notebook(INSTRUCTOR_NOTEBOOK))
    assert again == expected
    assert zygote.proc.pid != old_pid and zygote.healthy()
    with pytest.raises(ProcessLookupError):  # the stopped one was killed, not left behind
        for _ in range(50):
            os.kill(old_pid, 0)
            time.sleep(0.1)


# --- what the zygote must not hand down -------------------------------------------------------

def test_the_zygote_forks_only_with_one_thread_and_no_cuda_context():
    """CUDA does not survive fork and a fork copies only the calling thread: the zygote
    refuses to fork otherwise (zygote.fork_ready), and a warm one is ready."""
    assert sandbox.start_zygote().start_problem() == ""
    code = textwrap.dedent("""
        import sys, threading, time
        sys.path.insert(0, sys.argv[1])
        import torch, zygote
        print(repr(zygote.fork_ready()))
        torch.cuda.is_initialized = lambda: True
        print(repr(zygote.fork_ready()))
        torch.cuda.is_initialized = lambda: False
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        print(repr(zygote.fork_ready()))
    """)
    env = sandbox._worker_env(Path(sys.executable), None, home="/tmp")  # as the zygote starts
    done = subprocess.run([sys.executable, "-c", code, str(REPO_ROOT / "autograder")], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.stdout.splitlines() == ["''", "'the zygote has initialised CUDA'", "'the zygote runs 2 threads'"], \
        done.stderr


def test_a_worker_has_no_capability_and_cannot_gain_one():
    """The keeper had every capability in the sandbox's user namespace once it joined it;
    it drops them all (zygote.drop_privileges; without it CapEff reads 1ffffffffff)."""
    result = run("""
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        import json
        fields = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")
        print(json.dumps({k: status[k].strip() for k in fields}))
    """)
    assert result.returncode == 0, result.stderr
    caps = json.loads(result.stdout)
    assert caps.pop("NoNewPrivs") == "1"
    assert set(caps.values()) == {"0000000000000000"}, caps


def test_the_worker_title_and_the_paths_it_is_given(tmp_path):
    """A worker's own command line names no path; it runs where the caller said."""
    work = tmp_path / "work"
    work.mkdir()
    result = run("""
        import os
        print(open("/proc/self/cmdline").read().rstrip("\\0"), os.getcwd())
    """, workdir=work)
    assert result.stdout.split() == ["captioning-worker", str(work)], result.stderr


@pytest.mark.slow
def test_a_submission_graded_twice_gets_identical_results():
    first, second = (comparable(grade_notebook(INSTRUCTOR_NOTEBOOK)) for _ in range(2))
    assert first == second


@needs_root
def test_the_zygote_starts_with_nothing_of_the_graders_environment(monkeypatch):
    monkeypatch.setenv("CAPTIONING_GRADER_SECRET", "s3cret-of-the-grader")
    zygote = sandbox.Zygote(Path(sys.executable).absolute())
    try:
        assert zygote.start_problem() == ""
        environ = Path(f"/proc/{zygote.proc.pid}/environ").read_bytes()
        assert b"s3cret" not in environ and b"CAPTIONING" not in environ
        assert b"s3cret-of-the-grader" not in readable_memory(zygote.proc.pid)
    finally:
        zygote.close()
