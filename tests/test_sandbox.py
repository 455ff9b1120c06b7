"""The worker sandbox against adversarial workers: each is a small script run by run_worker.

Tests marked by the ``mode`` fixture run twice: under bwrap (skipped, with the reason, where
bwrap cannot isolate) and unsandboxed (always: the limits must hold there too).
"""

import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from autograder import sandbox
from autograder.sandbox import Limits, SandboxUnavailable, run_worker

from conftest import REPO_ROOT
BWRAP_OK, BWRAP_WHY = sandbox.sandbox_status()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"bwrap cannot isolate here: {BWRAP_WHY}")
FAST = Limits(wall_seconds=20, cpu_seconds=20, memory_bytes=2 << 30, max_processes=16,
              file_size_bytes=1 << 20, output_bytes=64 << 10)


@pytest.fixture(params=["bwrap", "unsandboxed"])
def mode(request, monkeypatch):
    """Which way run_worker runs; "unsandboxed" pretends bwrap is unavailable."""
    if request.param == "bwrap" and not BWRAP_OK:
        pytest.skip(f"bwrap cannot isolate here: {BWRAP_WHY}")
    if request.param == "unsandboxed":
        monkeypatch.setattr(sandbox, "sandbox_status", lambda: (False, "forced by the test"))
    return request.param


def run_script(tmp_path: Path, source: str, mode: str = "bwrap", limits: Limits = FAST, **kw):
    """Write ``source`` to a read-only code dir and run it with a fresh workdir."""
    code, work = tmp_path / "code", tmp_path / "work"
    code.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    (code / "worker.py").write_text(textwrap.dedent(source))
    return run_worker([str(code / "worker.py")], workdir=work, readonly_dirs=[code],
                      limits=limits, allow_unsandboxed=mode == "unsandboxed", **kw)


def leftover_cgroups() -> list[Path]:
    """Per-run cgroups of this process that were not removed."""
    pattern = f"autograder-sandbox-{os.getpid()}-*"
    parents = [sandbox._own_cgroup(controller) for controller in ("pids", "memory")]
    return [path for parent in parents if parent for path in parent.glob(pattern)]


# --- a normal worker, and what the sandbox costs ---------------------------------------------

@needs_bwrap
def test_normal_worker_imports_torch_and_writes_npz(tmp_path):
    result = run_script(tmp_path, """
        import numpy as np, torch
        x = torch.arange(6.0).reshape(2, 3)
        np.savez("result.npz", y=(x @ x.T).numpy())
        print("done")
    """, limits=Limits(wall_seconds=60, max_processes=16))
    assert (result.mode, result.returncode, result.stdout, result.killed_reason) == \
        ("bwrap", 0, "done\n", None), result.stderr
    assert any(d.startswith("bwrap") for d in result.defences)
    with np.load(tmp_path / "work" / "result.npz") as saved:
        np.testing.assert_array_equal(saved["y"], [[5.0, 14.0], [14.0, 50.0]])


@needs_bwrap
def test_torch_imports_in_the_sandbox(tmp_path):
    """``import torch`` both ways. The times are printed (pytest -s), not asserted: a busy
    machine changes them, and the sandbox's cost is a benchmark's figure (BENCHMARKS.md,
    `make bench-grading`), not a verdict."""
    timings = {}
    for code in ("pass", "import torch"):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
        plain = time.monotonic() - started
        result = run_worker(["-c", code], workdir=tmp_path, readonly_dirs=[])
        assert result.returncode == 0 and result.killed_reason is None, result.stderr
        timings[code] = f"plain {plain:.3f} s, sandboxed {result.wall_seconds:.3f} s"
    print(timings)


# --- what the worker can see and reach -------------------------------------------------------

@needs_bwrap
def test_hidden_files_and_grader_environment_are_invisible(tmp_path, monkeypatch):
    solution = REPO_ROOT / "solution" / "captioning.py"
    assert solution.is_file()  # otherwise the test below proves nothing
    monkeypatch.setenv("GRADER_SECRET", "s3cret")
    result = run_script(tmp_path, f"""
        import json, os
        found = {{}}
        for path in [{str(solution)!r}, "/proc/1/root{solution}", "/proc/self/root{solution}"]:
            try:
                open(path).read()
                found[path] = "readable"
            except OSError as exc:
                found[path] = type(exc).__name__
        listing = {{p: sorted(os.listdir(p)) if os.path.isdir(p) else []
                   for p in [{str(REPO_ROOT.parent)!r}, {str(REPO_ROOT)!r}, "/root", "/etc"]}}
        print(json.dumps([found, listing, dict(os.environ), os.getuid()]))
    """)
    assert result.returncode == 0, result.stderr
    found, listing, environ, uid = json.loads(result.stdout)
    # /proc/1/root: the sandbox's pid 1 is non-dumpable, so even its root is not entered.
    assert set(found.values()) <= {"FileNotFoundError", "PermissionError"}, found
    assert found[str(solution)] == "FileNotFoundError", found
    # Only the way to the Python installation shows (e.g. /work/main/.venv, /root/.pyenv).
    for path in (REPO_ROOT.parent, REPO_ROOT, Path("/root")):
        assert set(listing[str(path)]) <= on_the_way_to_python(path), listing
    assert set(listing["/etc"]) <= {"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime"}
    assert "GRADER_SECRET" not in environ and environ["HOME"] == "/tmp"
    assert uid == 65534


def on_the_way_to_python(directory: Path) -> set[str]:
    """Names in ``directory`` that lead to the Python installation, which the sandbox shows."""
    return {Path(prefix).relative_to(directory).parts[0]
            for prefix in (sys.prefix, sys.base_prefix) if Path(prefix).is_relative_to(directory)}


def bwrap_version() -> tuple[int, ...]:
    words = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.split()
    return tuple(int(part) for part in words[-1].split("."))


@needs_bwrap
def test_nested_user_namespaces_are_refused(tmp_path):
    """A user namespace inside would give the worker capabilities to attack the kernel with."""
    if bwrap_version() < (0, 8):
        pytest.skip("bwrap < 0.8 has no --disable-userns")
    result = run_script(tmp_path, """
        import ctypes
        print(ctypes.CDLL(None).unshare(0x10000000))  # CLONE_NEWUSER
    """)
    assert result.stdout == "-1\n", result.stderr


def _connect_script(port: int) -> str:
    """A worker that tries the grader's loopback listener and the outside world."""
    return f"""
        import json, socket
        outcome = {{}}
        for host, port in [("127.0.0.1", {port}), ("1.1.1.1", 53), ("example.com", 80)]:
            try:
                socket.create_connection((host, port), timeout=2).close()
                outcome[host] = "connected"
            except OSError as exc:
                outcome[host] = type(exc).__name__
        outcome["interfaces"] = [name for _, name in socket.if_nameindex()]
        print(json.dumps(outcome))
    """


@pytest.mark.parametrize("mode", ["bwrap", "unsandboxed"], indirect=True)
def test_network_is_unreachable_only_in_the_sandbox(tmp_path, mode):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        result = run_script(tmp_path, _connect_script(listener.getsockname()[1]), mode)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    if mode == "bwrap":
        assert outcome.pop("interfaces") == ["lo"]
        assert "connected" not in outcome.values(), outcome
    else:  # the same worker unsandboxed reaches the grader: the check above can fail
        assert outcome["127.0.0.1"] == "connected"


@needs_bwrap
def test_writes_outside_workdir_fail(tmp_path):
    result = run_script(tmp_path, f"""
        import json, sys
        outcome = {{}}
        for path in ["/x", "/usr/x", "/work/x", sys.prefix + "/x", "{tmp_path}/code/x",
                     "/tmp/x", "ok.txt"]:
            try:
                open(path, "w").write("x")
                outcome[path] = "written"
            except OSError as exc:
                outcome[path] = type(exc).__name__
        print(json.dumps(outcome))
    """)
    outcome = json.loads(result.stdout)
    assert outcome.pop("/tmp/x") == outcome.pop("ok.txt") == "written"  # private /tmp, workdir
    assert "written" not in outcome.values(), outcome
    assert (tmp_path / "work" / "ok.txt").read_text() == "x"
    assert not (tmp_path / "code" / "x").exists()


@needs_bwrap
def test_private_tmp_is_small(tmp_path):
    """/tmp and /dev/shm are tmpfs, i.e. memory: their size is capped."""
    result = run_script(tmp_path, """
        for path in ["/tmp/x", "/dev/shm/x"]:
            try:
                with open(path, "wb") as f:
                    f.write(b"x" * (4 << 20))
            except OSError as exc:
                print(exc.errno)
    """, limits=Limits(tmp_bytes=2 << 20, file_size_bytes=64 << 20))
    assert result.stdout == "28\n28\n", result.stderr  # ENOSPC


# --- limits: they hold with and without bwrap -------------------------------------------------

def test_infinite_loop_is_killed_by_the_wall_clock(tmp_path, mode):
    result = run_script(tmp_path, "print('started', flush=True)\nwhile True: pass\n", mode,
                        limits=Limits(wall_seconds=1.5))
    assert result.timed_out and result.killed_reason == "wall-clock limit"
    assert result.returncode == -9 and result.stdout == "started\n"
    assert 1.5 <= result.wall_seconds < 4


def test_descendants_die_with_the_run(tmp_path, mode):
    """A detached grandchild (its own session, so killpg misses it) must not survive."""
    result = run_script(tmp_path, """
        import os, time
        if os.fork() == 0:
            os.setsid()
            while True:
                with open("heartbeat", "a") as f:
                    f.write(".")
                time.sleep(0.02)
        time.sleep(0.2)
    """, mode)
    assert result.returncode == 0 and result.killed_reason is None, result.stderr
    assert result.wall_seconds < 1.2  # not held until the wall clock by the grandchild's pipe
    heartbeat = tmp_path / "work" / "heartbeat"
    size = heartbeat.stat().st_size
    time.sleep(0.3)
    assert size > 0 and heartbeat.stat().st_size == size


def test_cpu_time_limit(tmp_path, mode):
    result = run_script(tmp_path, "while True: pass\n", mode,
                        limits=Limits(wall_seconds=20, cpu_seconds=1))
    assert result.killed_reason == "cpu-time limit" and not result.timed_out
    assert result.wall_seconds < 5


def _require_fork_bomb_defence(result):
    if not any(d.startswith(("pids cgroup", "RLIMIT_NPROC")) for d in result.defences):
        pytest.skip(f"no fork-bomb defence here: {result.missing_defences}")


def test_process_count_is_capped(tmp_path, mode):
    result = run_script(tmp_path, """
        import os, time
        children = 0
        while children < 1000:
            try:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
            except OSError:
                break
            children += 1
        print(children)
    """, mode, limits=Limits(wall_seconds=20, max_processes=16))
    _require_fork_bomb_defence(result)
    assert result.returncode == 0, result.stderr
    assert 0 < int(result.stdout) < 16
    assert result.wall_seconds < 5  # the sleeping children were killed, not waited for


def processes_running(marker: str) -> list[str]:
    """Pids whose command line mentions ``marker`` (a test's tmp_path)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_text():
                found.append(cmdline.parent.name)
        except OSError:
            pass  # ended meanwhile
    return found


def test_fork_bomb_is_contained(tmp_path, mode):
    result = run_script(tmp_path, """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """, mode, limits=Limits(wall_seconds=2, max_processes=32))
    _require_fork_bomb_defence(result)
    assert result.timed_out and result.wall_seconds < 6
    assert processes_running(str(tmp_path)) == []  # nothing of the bomb is left
    assert leftover_cgroups() == []


def test_huge_allocations_fail_inside_the_worker(tmp_path, mode):
    result = run_script(tmp_path, """
        import torch
        for size in (4 << 30, 50 << 30):  # 4 GiB fits in this machine's RAM, not in the limit
            try:
                bytearray(size)
            except MemoryError:
                print("MemoryError")
        torch.empty(100 << 30, dtype=torch.uint8).fill_(1)
    """, mode, limits=Limits(wall_seconds=60, memory_bytes=2 << 30, max_processes=16))
    assert result.stdout == "MemoryError\nMemoryError\n"
    assert result.returncode == 1 and "can't allocate memory" in result.stderr


def test_shared_memory_that_escapes_rlimit_data_is_stopped_by_the_memory_cgroup(tmp_path, mode):
    """MAP_SHARED memory is not counted by RLIMIT_DATA; only the cgroup stops it. (The
    data limit also counts what the worker inherits from the zygote, about 0.8 GiB of torch
    and the worker's modules, hence 1.25 GiB: room for 0.4 GiB of allocations.)"""
    result = run_script(tmp_path, """
        import mmap
        block = mmap.mmap(-1, 3 << 30)
        for _ in range(3 << 30 >> 24):
            block.write(b"x" * (1 << 24))
        print("allocated 3 GiB")
    """, mode, limits=Limits(wall_seconds=20, memory_bytes=5 << 28))
    if not any(d.startswith("memory cgroup") for d in result.defences):
        pytest.skip(f"no memory cgroup here: {result.missing_defences}")
    assert result.killed_reason.startswith("memory") and result.returncode == -9
    assert result.stdout == ""


def test_huge_file_is_cut_by_rlimit_fsize(tmp_path, mode):
    result = run_script(tmp_path, """
        try:
            with open("big", "wb") as f:
                for _ in range(1024):
                    f.write(b"x" * (1 << 20))
        except OSError as exc:
            print(exc.errno)
    """, mode, limits=Limits(file_size_bytes=1 << 20))
    assert result.returncode == 0 and result.stdout == "27\n"  # EFBIG
    assert (tmp_path / "work" / "big").stat().st_size <= 1 << 20


def test_a_gigabyte_of_output_is_truncated_without_hanging(tmp_path, mode):
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run_script(tmp_path, """
        import sys
        chunk = b"x" * (1 << 20)
        for _ in range(1024):
            sys.stdout.buffer.write(chunk)
            sys.stderr.buffer.write(chunk)
    """, mode, limits=Limits(wall_seconds=30, output_bytes=1 << 20))
    assert result.killed_reason == "output limit" and result.output_truncated
    assert len(result.stdout) + len(result.stderr) == 1 << 20
    assert result.wall_seconds < 10
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before  # KiB
    assert growth < 64 << 10


def test_output_over_the_cap_is_truncated_and_the_run_goes_on(tmp_path, mode):
    result = run_script(tmp_path, """
        import sys
        sys.stdout.write("a" * 100_000)
        sys.stderr.write("b" * 100_000)
    """, mode, limits=Limits(output_bytes=150_000))
    assert result.returncode == 0 and result.killed_reason is None and result.output_truncated
    assert len(result.stdout) + len(result.stderr) == 150_000


STOPS_ITS_PARENT = """
    import os, signal, time
    worker = os.getpid()
    if os.fork() == 0:
        target = {target}
        os.kill(target, signal.SIGSTOP)
        time.sleep(30)
        os._exit(0)
    time.sleep(30)
"""


def test_a_worker_stopped_by_its_own_child_ends_the_run(tmp_path, mode):
    """A stopped worker enforces no limit: without the check the run lasts its wall clock."""
    result = run_script(tmp_path, STOPS_ITS_PARENT.replace("{target}", "worker"), mode,
                        limits=Limits(wall_seconds=15))
    assert result.killed_reason == sandbox.WORKER_STOPPED and not result.timed_out
    assert result.wall_seconds < 10


@needs_bwrap
def test_the_worker_cannot_name_its_keeper(tmp_path):
    """The keeper (the zygote's child that waits for the worker and reports its end) stays
    outside the sandbox's pid namespace: no process there can signal, stop or trace it."""
    result = run_script(tmp_path, """
        import os
        print(os.getppid(), sorted(int(p) for p in os.listdir("/proc") if p.isdigit()) == [1, os.getpid()])
    """)
    assert result.stdout == "0 True\n", (result.stdout, result.stderr)


def test_a_process_of_the_worker_may_stop_itself(tmp_path, mode):
    result = run_script(tmp_path, """
        import os, signal, time
        child = os.fork()
        if child == 0:
            os.kill(os.getpid(), signal.SIGSTOP)
            os._exit(0)
        time.sleep(1)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    """, mode)
    assert result.returncode == 0 and result.killed_reason is None, result.stderr


def _dumpable_holder() -> str:
    """The holder without its defence: it stays dumpable, like any program bwrap starts."""
    code = sandbox._HOLDER.replace("if libc.prctl(4, 0, 0, 0, 0) or libc.prctl(3, 0, 0, 0, 0):",
                                   "if libc.prctl(3, 0, 0, 0, 0) != 1:")
    assert code != sandbox._HOLDER
    return code


@needs_bwrap
@pytest.mark.parametrize("holder", ["defended", "undefended"])
def test_no_process_of_the_sandbox_traces_the_holder_or_opens_its_descriptors(tmp_path, monkeypatch, holder):
    """The holder (pid 1) outlives every unit of a run: traced, it would run a unit's code
    past the unit's end, which no kill of leftovers reaches. Undefended, it can be traced."""
    if holder == "undefended":
        monkeypatch.setattr(sandbox, "_HOLDER", _dumpable_holder())
    result = run_script(tmp_path, """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        me = os.getpid()
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]:
            fds = os.listdir(f"/proc/{pid}/fd") if os.access(f"/proc/{pid}/fd", os.R_OK) else ["0", "1", "2"]
            for fd in fds:
                try:
                    os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY)
                    print("opened", pid, fd)
                except OSError as exc:
                    print("refused", pid, fd, type(exc).__name__)
            if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
                print("traced", pid)
                os.waitpid(pid, 0)
                libc.ptrace(17, pid, 0, 0)  # PTRACE_DETACH
            else:
                print("untraceable", pid)
    """)
    assert result.returncode == 0, result.stderr
    if holder == "defended":
        assert "refused 1" in result.stdout and "untraceable 1" in result.stdout, result.stdout
        assert "opened" not in result.stdout and "traced" not in result.stdout.replace("untraceable", ""), result.stdout
    else:
        assert "traced 1" in result.stdout, result.stdout


@pytest.mark.parametrize("statement, returncode", [
    ("sys.exit(0)", 0), ("os._exit(0)", 0), ("sys.exit(3)", 3), ("sys.exit(137)", 137),
    ("raise ValueError", 1), ("os.kill(os.getpid(), 9)", -9), ("os.kill(os.getpid(), 15)", -15),
])
def test_returncode_is_reported_faithfully(tmp_path, mode, statement, returncode):
    result = run_script(tmp_path, f"import os, sys\n{statement}\n", mode)
    assert result.returncode == returncode and result.killed_reason is None
    assert not result.timed_out


# --- without bwrap ----------------------------------------------------------------------------

def test_unavailable_sandbox_raises_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "sandbox_status", lambda: (False, "bwrap missing (test)"))
    with pytest.raises(SandboxUnavailable, match="allow_unsandboxed=True"):
        run_script(tmp_path, "print('hi')\n")
    result = run_script(tmp_path, "print('hi')\n", "unsandboxed")
    assert (result.mode, result.returncode, result.stdout) == ("unsandboxed", 0, "hi\n")
    assert any("bwrap missing (test)" in m for m in result.missing_defences)


@pytest.mark.skipif(BWRAP_OK, reason="bwrap works here; the test above covers this with a fake")
def test_really_unavailable_sandbox_raises(tmp_path):
    with pytest.raises(SandboxUnavailable, match="allow_unsandboxed"):
        run_script(tmp_path, "print('hi')\n")


def test_missing_cgroups_are_reported_not_fatal(tmp_path, mode, monkeypatch):
    monkeypatch.setattr(sandbox, "CGROUP_ROOT", tmp_path / "no-cgroups")
    result = run_script(tmp_path, "print('hi')\n", mode)
    assert result.returncode == 0 and result.stdout == "hi\n"
    assert {m.split(":")[0] for m in result.missing_defences} >= {"pids cgroup", "memory cgroup"}
    assert not any(d.startswith(("pids cgroup", "memory cgroup")) for d in result.defences)
    if os.geteuid() == 0:  # root ignores RLIMIT_NPROC: nothing else stops a fork bomb
        assert any(m.startswith("fork-bomb defence") for m in result.missing_defences)


# --- descriptors passed to the worker ---------------------------------------------------------

def test_a_passed_pipe_reaches_the_worker_and_is_closed_here(tmp_path, mode):
    """The grader feeds jobs down pipes: the worker reads its end by number, and once the
    worker has ended a writer gets EPIPE (no copy of the read end is left open here, which
    would make a writer block forever on a full pipe)."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"job")
    result = run_script(tmp_path, f"""
        import os
        with open("got", "wb") as f:
            f.write(os.read({read_end}, 3))
    """, mode=mode, pass_fds=(read_end,))
    try:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "work" / "got").read_bytes() == b"job"
        with pytest.raises(OSError):
            os.fstat(read_end)  # closed by run_worker
        with pytest.raises(BrokenPipeError):
            os.write(write_end, b"x" * (1 << 20))
    finally:
        os.close(write_end)


@needs_bwrap
def test_no_process_in_the_sandbox_shows_the_graders_environment_or_paths(tmp_path, monkeypatch):
    """No process a worker can see (pid 1, itself) shows the grader's environment, bwrap's
    options or any path of this machine on its command line (issue 22: pid 1's command line
    showed the kit's venv and the worker's descriptor layout). Fails without the
    zygote's and the holder's process titles."""
    monkeypatch.setenv("CAPTIONING_GRADER_SECRET", "s3cret-in-the-environment")
    result = run_script(tmp_path, """
        import json, os
        seen = {"environ": [], "cmdline": []}
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            for name in seen:
                try:
                    with open(f"/proc/{pid}/{name}", "rb") as f:
                        seen[name].append(f.read().decode(errors="replace"))
                except OSError:
                    pass
        print(json.dumps(seen))
    """)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert len(seen["cmdline"]) == 2  # the holder's and the worker's: the probe could read them
    every = "\n".join(seen["environ"] + seen["cmdline"])
    assert "s3cret" not in every and "--ro-bind" not in every and "--setenv" not in every, every
    for cmdline in seen["cmdline"]:
        assert "/" not in cmdline and "--" not in cmdline, cmdline
        assert cmdline.rstrip("\0") in ("captioning-sandbox", "captioning-worker"), cmdline


@needs_bwrap
def test_without_a_workdir_nothing_of_the_host_is_writable(tmp_path):
    """The grader binds no host directory: a worker writes only to its private tmpfs."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "worker.py").write_text(textwrap.dedent(f"""
        import os
        print(os.getcwd())
        wrote = []
        for path in ["/tmp/x", "{tmp_path}/y", "{code}/z", "/var/tmp/w", os.path.expanduser("~/v")]:
            try:
                with open(path, "w") as f:
                    f.write("x")
                wrote.append(path)
            except OSError:
                pass
        print(wrote)
    """))
    result = run_worker([str(code / "worker.py")], readonly_files=[code / "worker.py"], limits=FAST)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "/tmp", result.stdout
    # What it wrote under these paths went to its private /tmp (they lie under /tmp here).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code"]
    assert sorted(p.name for p in code.iterdir()) == ["worker.py"]


def test_remove_tree_survives_a_deep_chain(tmp_path):
    """shutil.rmtree raises RecursionError on 5,000 levels; the sandbox's cleanup must not."""
    path = tmp_path / "top"
    path.mkdir()
    os.chdir(path)
    try:
        for _ in range(5000):
            os.mkdir("d")
            os.chdir("d")
    finally:
        os.chdir(tmp_path)
    sandbox.remove_tree(path)
    assert not path.exists()
