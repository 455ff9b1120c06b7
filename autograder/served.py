"""Other units' behaviour inside the sandbox, served by the grader (no reference code here).

AttentionLSTM and CaptioningRNN are graded with correct collaborators (the LSTM gates,
attention, the RNN, the word embedding, the loss), so that a bug elsewhere costs nothing
twice. The reference code of those collaborators never enters the sandbox: each one is a
stand-in here, with the same name and signature, whose every call is sent to the grader
(reference_service.py), which runs the reference on the arguments and sends back the
result or, in a backward pass, the gradients. Student code can learn what a collaborator
returns on inputs of its choice, which it could compute from the assignment's equations.

Imported by worker.py in the sandbox: torch, numpy and its neighbour wire.py only.
"""

import numpy as np
import torch

import wire

MAX_REPLY_BYTES = 256 << 20
_connection = {}  # "request", "reply": the pipe ends to the grader, once connected


def connect(request_fd: int, reply_fd: int) -> None:
    _connection.update(request=request_fd, reply=reply_fd)


def _to_array(value):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"cannot send a {type(value).__name__} to a provided function")
    return torch.Tensor.numpy(value.detach().cpu().as_subclass(torch.Tensor))


def _ask(op: str, name: str, value) -> object:
    """One request to the grader and its reply (a value tree of CPU tensors)."""
    if not _connection:
        raise RuntimeError(f"{name} is provided by the grader, which is not reachable here")
    tree, payload = wire.pack(value, _to_array)
    if len(payload) > 8 * wire.MAX_CALL_ELEMENTS or any(
            n > wire.MAX_CALL_DIM for t in _tensors(value) for n in t.shape):
        raise ValueError(f"arguments too large for the provided {name}: {len(payload)} bytes "
                         f"(at most {wire.MAX_CALL_ELEMENTS} numbers, sizes up to {wire.MAX_CALL_DIM})")
    try:
        wire.write_frame(_connection["request"], {"op": op, "name": name, "value": tree}, payload)
        reply = wire.read_frame(_connection["reply"], MAX_REPLY_BYTES)
    except (OSError, EOFError, wire.WireError):
        reply = None
    if reply is None:
        raise RuntimeError(f"the grader stopped answering calls of {name}")
    header, data = reply
    if "error" in header:
        raise RuntimeError(f"the provided {name} failed: {header['error']}")
    return wire.unpack(header["value"], data, 1 << 40, lambda a: torch.from_numpy(np.array(a)))


def _tensors(value) -> list:
    return wire.leaves(value, torch.Tensor)


def _replace_tensors(value, tensors):
    """value with its tensors replaced, in order, by those of the iterator tensors."""
    if isinstance(value, torch.Tensor):
        return next(tensors)
    if isinstance(value, tuple):
        return tuple(_replace_tensors(v, tensors) for v in value)
    if isinstance(value, list):
        return [_replace_tensors(v, tensors) for v in value]
    if isinstance(value, dict):
        return {k: _replace_tensors(v, tensors) for k, v in value.items()}
    return value


class _Call(torch.autograd.Function):
    """A served call that autograd can differentiate: the grader computes both passes."""

    @staticmethod
    def forward(ctx, name, request, device, skeleton, *leaves):
        """leaves: the floating-point tensors of request, which autograd tracks; skeleton
        (a dict) receives the result's structure, to be refilled with the outputs."""
        result = _ask("forward", name, request)
        outputs = [t.to(device) for t in _tensors(result)]
        ctx.name, ctx.request, ctx.device = name, request, device
        ctx.float_outputs = [t.is_floating_point() for t in outputs]
        ctx.mark_non_differentiable(*[t for t in outputs if not t.is_floating_point()])
        skeleton["result"] = result
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        upstream = [torch.zeros(0) if g is None else g for g, f in zip(grads, ctx.float_outputs) if f]
        gradients = _ask("backward", ctx.name, {**ctx.request, "grads": upstream})
        return (None, None, None, None, *[None if g is None else g.to(ctx.device) for g in gradients])


def _call(name: str, args: tuple, kwargs: dict, params: dict):
    request = {"args": args, "kwargs": kwargs, "params": params}
    tensors = _tensors(request)
    device = tensors[0].device if tensors else torch.device("cpu")
    leaves = [t for t in tensors if t.is_floating_point()]
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in leaves)):
        result = _ask("forward", name, request)
        return _replace_tensors(result, iter([t.to(device) for t in _tensors(result)]))
    skeleton = {}
    outputs = _Call.apply(name, request, device, skeleton, *leaves)
    return _replace_tensors(skeleton["result"], iter(outputs))


def function(name: str):
    """A stand-in for the graded function name, computed by the grader."""
    def served(*args, **kwargs):
        return _call(name, args, kwargs, {})
    served.__name__ = served.__qualname__ = name
    served.__doc__ = f"{name}, provided by the grader (its code is not shown)."
    return served


def method(class_name: str, method_name: str):
    """A stand-in for a graded class's method: the module's own parameters go with the call."""
    name = f"{class_name}.{method_name}"

    def served(self, *args, **kwargs):
        params = dict(self.named_parameters(recurse=False))
        return _call(name, args, kwargs, params)
    served.__name__, served.__qualname__ = method_name, name
    return served


def install(namespace: dict, entry: dict) -> None:
    """Put a served unit's definitions into namespace: functions, and classes made from
    their handed-out stubs (signature, parameters) whose graded methods are served."""
    for name in entry["functions"]:
        namespace[name] = function(name)
    for cls in entry["classes"]:
        exec(compile(cls["stub"], f"<provided {cls['name']}>", "exec"), namespace)
        for method_name in cls["methods"]:
            setattr(namespace[cls["name"]], method_name, method(cls["name"], method_name))
