"""Word embedding against a one-hot product; the temporal softmax loss against cases
worked by hand with plain Python floats."""

import math

import pytest
import torch

from numeric import numeric_gradient, rel_error
from solution.captioning import WordEmbedding, temporal_softmax_loss


def test_embedding_equals_one_hot_times_matrix():
    layer = WordEmbedding(vocab_size=7, embed_size=3).double()
    x = torch.tensor([[0, 6, 2], [3, 3, 1]])
    one_hot = torch.nn.functional.one_hot(x, 7).double()
    out = layer(x)
    assert out.shape == (2, 3, 3)
    assert rel_error(out, one_hot @ layer.W_embed.detach()) < 1e-15


def test_embedding_gradient_accumulates_repeated_words():
    layer = WordEmbedding(vocab_size=4, embed_size=2).double()
    layer(torch.tensor([[1, 1, 3]])).sum().backward()
    expected = torch.tensor([[0.0, 0.0], [2.0, 2.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    assert torch.equal(layer.W_embed.grad, expected)


def cross_entropy_by_hand(scores, target):
    """-log softmax(scores)[target] with Python floats."""
    return -(scores[target] - math.log(sum(math.exp(s) for s in scores)))


# Two captions (N = 2) of three steps (T = 3) over a vocabulary of 3 words; word 0 is <NULL>.
SCORES = [
    [[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [3.0, -1.0, 2.0]],
    [[-2.0, 1.0, 1.0], [0.5, 0.25, -0.5], [1.5, 1.5, -3.0]],
]
TARGETS = [[2, 1, 0], [1, 0, 0]]


def test_loss_sums_over_time_and_averages_over_the_batch():
    expected = sum(
        cross_entropy_by_hand(SCORES[n][t], TARGETS[n][t]) for n in range(2) for t in range(3)
    ) / 2
    loss = temporal_softmax_loss(torch.tensor(SCORES, dtype=torch.float64), torch.tensor(TARGETS))
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(expected, rel=1e-14)


def test_loss_with_ignore_index_skips_those_timesteps_but_still_divides_by_n():
    kept = [(0, 0), (0, 1), (1, 0)]  # every (n, t) whose target is not 0
    expected = sum(cross_entropy_by_hand(SCORES[n][t], TARGETS[n][t]) for n, t in kept) / 2
    loss = temporal_softmax_loss(
        torch.tensor(SCORES, dtype=torch.float64), torch.tensor(TARGETS), ignore_index=0
    )
    assert loss.item() == pytest.approx(expected, rel=1e-14)


def test_uniform_scores_give_t_log_v():
    N, T, V = 5, 4, 10
    loss = temporal_softmax_loss(torch.zeros(N, T, V, dtype=torch.float64), torch.randint(V, (N, T)))
    assert loss.item() == pytest.approx(T * math.log(V), rel=1e-14)


def test_loss_gradient_matches_numeric():
    N, T, V = 3, 4, 5
    x = torch.randn(N, T, V, dtype=torch.float64)
    y = torch.randint(V, (N, T))
    y[0, 2:] = 0
    leaf = x.clone().requires_grad_(True)
    temporal_softmax_loss(leaf, y, ignore_index=0).backward()
    numeric = numeric_gradient(lambda: temporal_softmax_loss(x, y, ignore_index=0), x, torch.tensor(1.0))
    assert rel_error(leaf.grad, numeric) < 1e-7
    assert torch.all(leaf.grad[0, 2:] == 0)
