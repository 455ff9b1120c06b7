"""The served collaborators: the wire format, and the grader's reference service.

A sandbox that grades AttentionLSTM or CaptioningRNN calls the other units through
stand-ins (autograder/served.py) answered by the grader (autograder/reference_service.py).
Expected values come from calling the reference directly, here, and from autograd.
"""

import os
import sys
import threading

import numpy as np
import pytest
import torch

from autograder import reference_service, wire
from conftest import REPO_ROOT
from solution import captioning as reference

sys.path.insert(0, str(REPO_ROOT / "autograder"))  # as in the sandbox: served.py imports wire
import served  # noqa: E402


def test_pack_and_unpack_keep_structure_dtypes_and_zero_dim_arrays():
    value = {"args": (np.float64(2.5) * np.ones(()), [np.arange(6).reshape(2, 3), None, 3, "s"]),
             "kwargs": {"flag": True, "ignore_index": 0}}
    tree, payload = wire.pack(value)
    back = wire.unpack(tree, payload, 100)
    assert back["args"][0].shape == () and back["args"][0] == 2.5
    assert back["args"][1][0].dtype == np.int64 and back["args"][1][0].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back["args"][1][1:] == [None, 3, "s"] and back["kwargs"] == {"flag": True, "ignore_index": 0}
    assert isinstance(back["args"], tuple) and isinstance(back["args"][1], list)


@pytest.mark.parametrize("tree, payload, why", [
    ({"array": 0, "dtype": "object", "shape": [1]}, b"x" * 8, "malformed array"),
    ({"array": 0, "dtype": "float64", "shape": [-1]}, b"", "malformed array"),
    ({"array": 0, "dtype": "float64", "shape": [1000]}, b"", "over the bounds"),
    ({"array": 0, "dtype": "float64", "shape": [50, 50]}, b"x" * 20000, "larger than"),
    # Empty, yet its other sizes would shape what the reference computes from it.
    ({"array": 0, "dtype": "float64", "shape": [1, 2 ** 40, 0]}, b"", "over the bounds"),
    ({"array": 0, "dtype": "float64", "shape": [99, 0]}, b"", None),
    ({"array": 0, "dtype": "float64", "shape": [2]}, b"x" * 8, "missing"),
    ({"array": 0, "dtype": "float64", "shape": [1]}, b"x" * 16, "longer"),
    ({"pickle": "cos\nsystem"}, b"", "malformed value"),
])
def test_unpack_refuses_what_pack_would_not_make(tree, payload, why):
    if why is None:  # within the bounds: accepted
        assert wire.unpack(tree, payload, 100).shape == tuple(tree["shape"])
        return
    with pytest.raises(wire.WireError, match=why):
        wire.unpack(tree, payload, 100)


def test_a_frame_over_its_bounds_is_refused_before_it_is_read():
    read_end, write_end = os.pipe()
    wire.write_frame(write_end, {"x": 1}, b"y" * 100)
    os.close(write_end)
    with pytest.raises(wire.WireError):
        wire.read_frame(read_end, max_payload=99)
    os.close(read_end)


@pytest.fixture
def connected():
    """served.py connected to a ReferenceService on a thread, as in a sandbox of CaptioningRNN."""
    definitions = reference_service.served_definitions(["LSTM", "dot_product_attention", "WordEmbedding",
                                                        "temporal_softmax_loss"])
    service = reference_service.ReferenceService(reference_service.callable_names(definitions))
    request_read, request_write = os.pipe()
    reply_read, reply_write = os.pipe()
    thread = threading.Thread(target=service.serve, args=(request_read, reply_write), daemon=True)
    thread.start()
    served.connect(request_write, reply_read)
    namespace = {"torch": torch, "nn": torch.nn, "math": __import__("math")}
    served.install(namespace, definitions)
    yield namespace, service
    served._connection.clear()
    os.close(request_write)
    thread.join(timeout=10)
    os.close(reply_read)


def test_stand_ins_hold_no_solution_line(connected):
    namespace, _ = connected
    import inspect
    from solution import source
    text = "".join(inspect.getsource(served)) + str(reference_service.served_definitions(
        ["LSTM", "dot_product_attention", "WordEmbedding", "temporal_softmax_loss"]))
    lines = [line for line in source.solution_lines(source.read_source()) if len(line) > 12]
    assert lines and not [line for line in lines if line in text]


def test_served_functions_and_methods_give_the_references_values_and_gradients(connected):
    namespace, service = connected
    g = torch.Generator().manual_seed(0)
    prev_h = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    A = torch.randn(3, 5, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    attn, weights = namespace["dot_product_attention"](prev_h, A)
    upstream = (torch.randn(3, 5, generator=g, dtype=torch.float64),
                torch.randn(3, 4, 4, generator=g, dtype=torch.float64))
    ((attn * upstream[0]).sum() + (weights * upstream[1]).sum()).backward()
    leaves = prev_h.detach().clone().requires_grad_(), A.detach().clone().requires_grad_()
    want_attn, want_weights = reference.dot_product_attention(*leaves)
    ((want_attn * upstream[0]).sum() + (want_weights * upstream[1]).sum()).backward()
    assert torch.allclose(attn, want_attn) and torch.allclose(weights, want_weights)
    assert torch.allclose(prev_h.grad, leaves[0].grad) and torch.allclose(A.grad, leaves[1].grad)

    lstm = namespace["LSTM"](4, 5).double()  # the stub's __init__: the student's parameters
    x, h0 = torch.randn(2, 3, 4, generator=g, dtype=torch.float64), torch.randn(2, 5, generator=g, dtype=torch.float64)
    hn = lstm(x, h0)
    hn.sum().backward()
    mirror = reference.LSTM(4, 5).double()
    mirror.load_state_dict(lstm.state_dict())
    mirror(x, h0).sum().backward()
    assert torch.allclose(hn, mirror(x, h0)) and torch.allclose(lstm.Wh.grad, mirror.Wh.grad)

    scores, y = torch.randn(2, 3, 7, generator=g, dtype=torch.float64), torch.tensor([[1, 2, 0], [3, 0, 0]])
    loss = namespace["temporal_softmax_loss"](scores, y, ignore_index=0)
    assert loss.shape == () and torch.allclose(loss, reference.temporal_softmax_loss(scores, y, ignore_index=0))
    assert service.calls >= 4


def test_the_service_answers_only_its_names_and_within_its_budget(connected, monkeypatch):
    namespace, service = connected
    with pytest.raises(RuntimeError, match="not provided here"):
        served.function("rnn_step_forward")(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(2, 2),
                                             torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="too large"):
        namespace["dot_product_attention"](torch.zeros(1, 1 << 17), torch.zeros(1, 1 << 17, 4, 4))
    monkeypatch.setattr(reference_service, "MAX_CALLS", service.calls + 1)
    namespace["dot_product_attention"](torch.zeros(1, 2), torch.zeros(1, 2, 4, 4))
    with pytest.raises(RuntimeError, match="too many calls"):
        namespace["dot_product_attention"](torch.zeros(1, 2), torch.zeros(1, 2, 4, 4))


def test_a_forward_only_service_refuses_gradients():
    """Round two's service (a unit judged again): rnn_step_forward's gradients would be
    rnn_step_backward's answer, so only forward passes are answered."""
    definitions = reference_service.served_definitions(["rnn_step_forward"])
    service = reference_service.ReferenceService(reference_service.callable_names(definitions), gradients=False)
    args = tuple(torch.ones(s, dtype=torch.float64) for s in [(1, 2), (1, 3), (2, 3), (3, 3), (3,)])
    forward = {"args": args, "kwargs": {}, "params": {}}
    tree, payload = wire.pack(forward, lambda t: t.numpy())
    header, data = service._answer({"op": "forward", "name": "rnn_step_forward", "value": tree}, payload)
    assert "value" in header
    backward = {**forward, "grads": [torch.ones(1, 3)] + [torch.zeros(0)] * 5}
    tree, payload = wire.pack(backward, lambda t: t.numpy())
    with pytest.raises(reference_service._Refused, match="its gradients are not provided here"):
        service._answer({"op": "backward", "name": "rnn_step_forward", "value": tree}, payload)
