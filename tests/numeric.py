"""Independent numeric tools for the tests: centred finite differences and relative error."""

import torch


def rel_error(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-10) -> float:
    """max|x - y| / max(|x| + |y|), the course's relative error (0 for identical tensors)."""
    x, y = x.double(), y.double()
    return ((x - y).abs().max() / (x.abs() + y.abs()).max().clamp(min=eps)).item()


def numeric_gradient(f, x: torch.Tensor, dout: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Centred-difference gradient of sum(f() * dout) with respect to x, which f reads.

    f takes no arguments and must read x by reference; x is perturbed in place and restored.
    """
    grad = torch.zeros_like(x)
    flat_x, flat_grad = x.view(-1), grad.view(-1)
    for i in range(flat_x.numel()):
        old = flat_x[i].item()
        flat_x[i] = old + h
        plus = (f() * dout).sum().item()
        flat_x[i] = old - h
        minus = (f() * dout).sum().item()
        flat_x[i] = old
        flat_grad[i] = (plus - minus) / (2 * h)
    return grad


def autograd_gradients(f, inputs: list[torch.Tensor], dout: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of sum(f(*inputs) * dout) by autograd, on detached copies of inputs."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = f(*leaves)
    return list(torch.autograd.grad(out, leaves, grad_outputs=dout))
