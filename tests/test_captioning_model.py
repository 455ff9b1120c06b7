"""CaptioningRNN: the loss against an independent recomputation for each cell type, greedy
sampling against hand-set weights whose output is known, the state_dict contract, and the
image encoder."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, devices
from numeric import rel_error
from solution.captioning import CELL_TYPES, CaptioningRNN, ImageEncoder
from test_lstm_and_attention import naive_attention_lstm, torch_lstm_with_weights_of
from test_rnn import naive_rnn

VOCAB = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "a": 4, "cat": 5}


def small_model(cell_type, ignore_index=0, vocab=VOCAB, **sizes):
    torch.manual_seed(0)
    sizes = {"wordvec_dim": 6, "hidden_dim": 5, **sizes}
    return CaptioningRNN(vocab, cell_type=cell_type, image_encoder_pretrained=False,
                         ignore_index=ignore_index, **sizes).double()


@torch.no_grad()
def independent_loss(model, images, captions, ignore_index):
    """The model's loss recomputed from its weights with independent layer code."""
    p = {k: v.detach() for k, v in model.state_dict().items()}
    features = model.image_encoder(images)  # tested on its own below
    words = p["word_embedding.W_embed"][captions[:, :-1]]
    def project(v):
        return v @ p["feature_projection.weight"].t() + p["feature_projection.bias"]
    if model.cell_type == "rnn":
        h = naive_rnn(words, project(features.mean(dim=(2, 3))), p["rnn.Wx"], p["rnn.Wh"], p["rnn.b"])
    elif model.cell_type == "lstm":
        h0 = project(features.mean(dim=(2, 3)))
        h, _ = torch_lstm_with_weights_of(model.rnn)(words, (h0[None], torch.zeros_like(h0)[None]))
    else:
        A = project(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        h = naive_attention_lstm(model.rnn, words, A)
    scores = h @ p["output_projection.weight"].t() + p["output_projection.bias"]
    log_probs = torch.log_softmax(scores, dim=2).gather(2, captions[:, 1:, None]).squeeze(2)
    keep = captions[:, 1:] != ignore_index if ignore_index is not None else torch.ones_like(log_probs, dtype=bool)
    return -(log_probs * keep).sum() / captions.shape[0]


CAPTIONS = torch.tensor([[1, 4, 5, 2, 0, 0], [1, 5, 2, 0, 0, 0], [1, 4, 4, 4, 5, 2]])


@pytest.mark.parametrize("ignore_index", [0, None])
@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_loss_matches_independent_computation(cell_type, ignore_index):
    model = small_model(cell_type, ignore_index)
    images = torch.randint(0, 256, (3, 3, 112, 112), dtype=torch.uint8)
    with torch.no_grad():
        loss = model(images, CAPTIONS)
        expected = independent_loss(model, images, CAPTIONS, ignore_index)
    assert loss.dim() == 0
    assert rel_error(loss, expected) < 1e-12


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_loss_on_real_coco_images_and_gradients_reach_every_trained_parameter(coco, cell_type):
    vocab = coco["vocab"]["token_to_idx"]
    model = small_model(cell_type, ignore_index=0, vocab=vocab, wordvec_dim=16, hidden_dim=12)
    captions = coco["train_captions"][:4]
    images = coco["train_images"][coco["train_image_idxs"][:4]]
    loss = model(images, captions)
    loss.backward()
    assert rel_error(loss.detach(), independent_loss(model, images, captions, 0)) < 1e-12
    for name, parameter in model.named_parameters():
        if name.startswith("image_encoder."):
            assert parameter.grad is None, f"{name}: the encoder must stay frozen"
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_state_dict_names_are_the_kits_contract():
    expected_rnn = {"Wx", "Wh", "b"}
    for cell_type, cell_names in [("rnn", expected_rnn), ("lstm", expected_rnn),
                                  ("attn", expected_rnn | {"Wattn"})]:
        names = {k for k in small_model(cell_type).state_dict() if not k.startswith("image_encoder.")}
        assert names == {"feature_projection.weight", "feature_projection.bias", "word_embedding.W_embed",
                         "output_projection.weight", "output_projection.bias",
                         *(f"rnn.{n}" for n in cell_names)}, cell_type


def test_unknown_cell_type_is_refused_clearly():
    with pytest.raises(ValueError, match="cell_type must be one of"):
        small_model("gru")


# --- greedy sampling --------------------------------------------------------------------


def chain_model():
    """An rnn captioner whose next word depends only on the word fed in:
    <START> -> a -> cat -> <END> -> a. Any image gives the same caption."""
    V = len(VOCAB)
    model = small_model("rnn", wordvec_dim=V, hidden_dim=V)
    successor = {1: 4, 4: 5, 5: 2, 2: 4, 0: 4, 3: 4}
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.zero_()
        model.word_embedding.W_embed.copy_(3 * torch.eye(V))
        model.rnn.Wx.copy_(torch.eye(V))
        for word, nxt in successor.items():
            model.output_projection.weight[nxt, word] = 1.0
    return model


def test_sample_feeds_back_its_own_words_and_pads_after_end():
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    captions = chain_model().sample(images, max_length=6)
    # Without the <NULL> padding the chain would go on: a cat <END> a cat <END>.
    expected = torch.tensor([[4, 5, 2, 0, 0, 0]] * 2)
    assert captions.dtype == torch.int64
    assert torch.equal(captions, expected)


def test_sample_without_end_fills_max_length():
    captions = chain_model().sample(torch.zeros(1, 3, 112, 112, dtype=torch.uint8), max_length=2)
    assert torch.equal(captions, torch.tensor([[4, 5]]))


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_sample_agrees_with_teacher_forcing_and_is_deterministic(cell_type):
    """Feeding the sampled words back through the sequence forward pass must make each
    sampled word the argmax at its step (up to the first <END>)."""
    model = small_model(cell_type)
    with torch.no_grad():
        model.output_projection.bias.normal_(std=0.2)  # break ties, vary the words
    images = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8)
    out = model.sample(images, max_length=7)
    again = model.sample(images, max_length=7)
    captions = out[0] if cell_type == "attn" else out
    assert captions.shape == (4, 7)
    assert torch.equal(captions, again[0] if cell_type == "attn" else again)

    with torch.no_grad():
        features = model.image_encoder(images)
        words_in = torch.cat([torch.full((4, 1), VOCAB["<START>"]), captions[:, :-1]], dim=1)
        x = model.word_embedding(words_in)
        if cell_type == "attn":
            h = model.rnn(x, model._project_grid(features))
        else:
            h = model.rnn(x, model.feature_projection(features.mean(dim=(2, 3))))
        greedy = model.output_projection(h).argmax(dim=2)
    for n in range(4):
        ends = (captions[n] == VOCAB["<END>"]).nonzero()
        length = ends[0].item() + 1 if len(ends) else 7
        assert torch.equal(captions[n, :length], greedy[n, :length]), n
        assert torch.all(captions[n, length:] == VOCAB["<NULL>"]), n

    # A batch samples the same captions as its images one at a time.
    one_by_one = [model.sample(images[n : n + 1], max_length=7) for n in range(4)]
    if cell_type == "attn":
        weights = out[1]
        assert weights.shape == (4, 7, 4, 4)
        for n in range(4):
            length = int((captions[n] != VOCAB["<NULL>"]).sum())
            assert torch.allclose(weights[n, :length].sum(dim=(1, 2)), torch.ones(length, dtype=weights.dtype))
            assert torch.all(weights[n, length:] == 0)
            assert rel_error(one_by_one[n][1][0], weights[n]) < 1e-12
        one_by_one = [o[0] for o in one_by_one]
    assert torch.equal(torch.cat(one_by_one), captions)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_model_runs_in_float32_with_one_image_of_one_word(device, cell_type):
    torch.manual_seed(0)
    model = CaptioningRNN(VOCAB, wordvec_dim=4, hidden_dim=3, cell_type=cell_type,
                          image_encoder_pretrained=False).to(device)
    images = torch.randint(0, 256, (1, 3, 112, 112), dtype=torch.uint8, device=device)
    loss = model(images, torch.tensor([[1, 4]], device=device))  # T = 1 after the shift
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    out = model.sample(images, max_length=1)
    captions = out[0] if cell_type == "attn" else out
    assert captions.shape == (1, 1) and captions.device.type == device


# --- image encoder ----------------------------------------------------------------------


def test_encoder_maps_112px_images_to_a_400x4x4_grid_for_uint8_and_float():
    torch.manual_seed(0)
    encoder = ImageEncoder(pretrained=False)
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    features = encoder(images)
    assert features.shape == (2, 400, 4, 4) and features.dtype == torch.float32
    assert rel_error(encoder(images.float() / 255), features) < 1e-6
    # Normalisation is ImageNet's: a mid-grey image equals normalised input fed to the trunk.
    grey = torch.full((1, 3, 112, 112), 0.5)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert rel_error(encoder(grey), encoder.cnn((grey - mean) / std)) < 1e-7


def test_encoder_is_frozen_and_stays_in_eval_mode():
    model = small_model("rnn")
    model.train()
    assert model.training and model.rnn.training
    encoder = model.image_encoder
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())


def test_pretrained_encoder_offline_names_the_expected_file(tmp_path):
    """No cached weights and no network (a proxy on a closed port): a clear message."""
    env = {**os.environ, "TORCH_HOME": str(tmp_path), "https_proxy": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    result = subprocess.run(
        [sys.executable, "-c", "from solution.captioning import ImageEncoder; ImageEncoder(pretrained=True)"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    expected_file = tmp_path / "hub" / "checkpoints" / "regnet_x_400mf-62229a5f.pth"
    assert str(expected_file) in result.stderr
    assert "pretrained=False" in result.stderr
    # A student is told to flip the notebook's switch, not to edit provided code.
    assert "set PRETRAINED_ENCODER = False at the top of the notebook's set-up cell" in result.stderr


def test_features_computed_once_pass_through_the_encoder_unchanged():
    model = small_model("lstm")
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    with torch.no_grad():
        features = model.image_encoder(images)
        assert torch.equal(model.image_encoder(features), features)
        assert model(features, CAPTIONS[:2]).item() == model(images, CAPTIONS[:2]).item()
    with pytest.raises(ValueError, match=r"expected images \(N, 3, H, W\)"):
        model.image_encoder(torch.zeros(2, 5, 112, 112))
