"""The grader's side of served.py: the reference collaborators of a unit, run here on request.

A sandbox that grades AttentionLSTM or CaptioningRNN, or a unit judged again with correct
collaborators, gets stand-ins for other units (served.py). Each call of a stand-in arrives
here as a frame (wire.py): the name of a function or method that this sandbox may call,
and its arguments as plain arrays. The reference runs on them in this process (student
code never does) and the result goes back, or the gradients of a backward pass where the
group may have them (never to a unit judged again: the gradients of rnn_step_forward are
rnn_step_backward's answer). Nothing else is answered: no source, no hidden input, no
expected value.

What a hostile sandbox can make this process do is bounded and deterministic: at most
MAX_CALLS calls of at most wire.MAX_CALL_ELEMENTS array elements each (every legitimate
call is far below both), and CPU_SECONDS of this thread's CPU time in all, for each served
unit each time it runs. A frame over its bounds ends the service for that unit (served.py
never sends one).
"""

import os
import time

import torch

from autograder import wire
from solution import captioning as reference
from solution import source as reference_source

MAX_CALLS = 20_000
CPU_SECONDS = 20.0


def served_definitions(units) -> dict:
    """What a sandbox needs to stand in for units: {"functions": [...], "classes": [...]}.

    A class is sent as its handed-out stub (signature, docstrings, parameter creation:
    what the student's own notebook shows) with the names of its graded methods, which
    become stand-ins; no solution line is sent.
    """
    functions, classes = [], []
    _, definitions = reference_source.split_definitions()
    for unit in units:
        for name in reference_source.graded_units()[unit]:
            if isinstance(getattr(reference, name), type):
                classes.append({"name": name, "stub": reference_source.strip_solutions(definitions[name]),
                                "methods": reference_source.graded_methods(name)})
            else:
                functions.append(name)
    return {"functions": functions, "classes": classes}


def callable_names(definitions: dict) -> set[str]:
    """The names a sandbox with these served definitions may call."""
    return set(definitions["functions"]) | {f"{c['name']}.{m}" for c in definitions["classes"]
                                            for m in c["methods"]}


class ReferenceService:
    """Answers one sandbox's calls until it closes its end (run on a thread of its own)."""

    def __init__(self, names: set[str], gradients: bool = True):
        self.names = names
        self.ops = ("forward", "backward") if gradients else ("forward",)
        self.calls = 0
        self.cpu_seconds = 0.0

    def serve(self, request_fd: int, reply_fd: int) -> None:
        try:
            while True:
                try:
                    frame = wire.read_frame(request_fd, wire.MAX_CALL_BYTES)
                except (wire.WireError, EOFError, OSError):
                    return  # a broken stream: the sandbox's calls fail from now on
                if frame is None:
                    return
                header, payload = frame
                started = time.thread_time()
                try:
                    reply = self._answer(header, payload)
                except _Refused as exc:
                    reply = ({"error": str(exc)}, b"")
                except Exception as exc:  # the reference failed on these arguments
                    reply = ({"error": f"{type(exc).__name__}: {str(exc)[:200]}"}, b"")
                self.cpu_seconds += time.thread_time() - started
                try:
                    wire.write_frame(reply_fd, *reply)
                except OSError:
                    return  # the sandbox has ended
        finally:
            for fd in (request_fd, reply_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _answer(self, header: dict, payload: bytes) -> tuple[dict, bytes]:
        self.calls += 1
        if self.calls > MAX_CALLS or self.cpu_seconds > CPU_SECONDS:
            raise _Refused(f"too many calls of the provided functions (at most {MAX_CALLS} calls "
                           f"and {CPU_SECONDS:.0f} s of the grader's computing for this unit)")
        name, op = header.get("name"), header.get("op")
        if name not in self.names or op not in self.ops:
            what = "its gradients are" if name in self.names and op == "backward" else f"{str(name)[:60]} is"
            raise _Refused(f"{what} not provided here")
        try:
            value = wire.unpack(header.get("value"), payload, wire.MAX_CALL_ELEMENTS, torch.from_numpy,
                                max_dim=wire.MAX_CALL_DIM, max_dims=4)
        except wire.WireError as exc:
            raise _Refused(f"arguments the grader cannot take: {exc}") from None
        if not isinstance(value, dict) or not isinstance(value.get("args"), (list, tuple)) \
                or not isinstance(value.get("kwargs"), dict) or not isinstance(value.get("params"), dict):
            raise _Refused("malformed call")
        if op == "forward":
            with torch.no_grad():
                result = _invoke(name, value)
        else:
            result = _gradients(name, value)
        tree, data = wire.pack(result, lambda t: t.detach().cpu().numpy() if isinstance(t, torch.Tensor)
                               else _not_a_tensor(t))
        return {"value": tree}, data


class _Refused(Exception):
    """A call this service does not answer; the message goes back to the sandbox."""


def _not_a_tensor(value):
    raise TypeError(f"the reference returned a {type(value).__name__}")


def _invoke(name: str, value: dict):
    """Run the reference function or method name on the call's arguments."""
    if "." not in name:
        return getattr(reference, name)(*value["args"], **value["kwargs"])
    class_name, method_name = name.split(".")
    cls = getattr(reference, class_name)
    module = cls.__new__(cls)
    torch.nn.Module.__init__(module)
    for param_name, tensor in value["params"].items():
        if not isinstance(tensor, torch.Tensor):
            raise _Refused(f"parameter {param_name[:40]} is not a tensor")
        object.__setattr__(module, param_name, tensor)  # a plain attribute, tracked or not
    return getattr(module, method_name)(*value["args"], **value["kwargs"])


def _tensors(value) -> list:
    return wire.leaves(value, torch.Tensor)


def _gradients(name: str, value: dict) -> list:
    """Gradients of sum(output * grad) over the call's floating-point inputs, in the order
    served.py lists them; None where an input does not matter."""
    grads = value.pop("grads", None)
    leaves = [t.requires_grad_(True) for t in _tensors(value) if t.is_floating_point()]
    with torch.enable_grad():
        outputs = [t for t in _tensors(_invoke(name, value)) if t.is_floating_point()]
    if not isinstance(grads, list) or len(grads) != len(outputs) or not all(
            isinstance(g, torch.Tensor) for g in grads):
        raise _Refused("malformed backward call")
    pairs = [(o, g if g.numel() else torch.zeros_like(o)) for o, g in zip(outputs, grads)
             if o.requires_grad]
    if not pairs or not leaves:
        return [None] * len(leaves)
    for o, g in pairs:
        if o.shape != g.shape:
            raise _Refused(f"gradient of shape {tuple(g.shape)} for an output of shape {tuple(o.shape)}")
    found = torch.autograd.grad([o for o, _ in pairs], leaves, [g.to(o.dtype) for o, g in pairs],
                                allow_unused=True)
    return list(found)

