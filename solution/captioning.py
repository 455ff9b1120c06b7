"""Reference solution: every component of the recurrent image captioner.

This module is the single source of truth for the graded units. The student notebook's
stubs and the grader's reference are generated from it: the lines between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` are what a student writes; everything else
(signatures, docstrings, parameter creation, provided classes) is handed out as is.

Shapes use N for the batch, T for time, D for the input size, H for the hidden size,
V for the vocabulary and (4, 4) for the spatial grid of the image features.
No recurrent or attention module of PyTorch is used anywhere: the point is to write them.
"""

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

# Graded units, in the order the notebook teaches them, each with the top-level definitions
# of this file that make it up (one notebook solution cell per unit). The notebook builder
# and the grader read this; every other definition here is provided code.
GRADED_UNITS = {
    "rnn_step_forward": ("rnn_step_forward",),
    "rnn_step_backward": ("rnn_step_backward",),
    "rnn_forward": ("rnn_forward",),
    "rnn_backward": ("rnn_backward",),
    "WordEmbedding": ("WordEmbedding",),
    "temporal_softmax_loss": ("temporal_softmax_loss",),
    "CaptioningRNN": ("CaptioningRNN",),
    "LSTM": ("lstm_gates", "LSTM"),
    "dot_product_attention": ("dot_product_attention",),
    "AttentionLSTM": ("AttentionLSTM",),
}

CELL_TYPES = ("rnn", "lstm", "attn")


# ---------------------------------------------------------------------------------------
# Image encoder (provided)
# ---------------------------------------------------------------------------------------


class ImageEncoder(nn.Module):
    """Frozen RegNet-X 400MF trunk from torchvision, ImageNet-pretrained.

    A (N, 3, 112, 112) batch gives (N, 400, 4, 4) features. The encoder is never trained
    and stays in eval mode (its batch-norm statistics are ImageNet's).
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, pretrained: bool = True, verbose: bool = True):
        super().__init__()
        from torchvision.models import RegNet_X_400MF_Weights, regnet_x_400mf

        trunk = regnet_x_400mf(weights=None)
        if pretrained:
            trunk.load_state_dict(_pretrained_state_dict(RegNet_X_400MF_Weights.IMAGENET1K_V2, verbose))
        # The classifier head is dropped: the captioner needs the spatial feature map.
        self.cnn = nn.Sequential(trunk.stem, trunk.trunk_output)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    @property
    def out_channels(self) -> int:
        return 400

    def train(self, mode: bool = True) -> "ImageEncoder":
        # Frozen: model.train() on the captioner must not switch batch norm to batch stats.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: uint8 in [0, 255] or float in [0, 1], (N, 3, 112, 112).
        Returns features (N, 400, 4, 4) in the encoder's dtype.

        Features this encoder already computed, float (N, 400, 4, 4), pass through
        unchanged: the encoder is frozen, so a training loop may encode its images once.
        """
        dtype = self.mean.dtype
        if images.dim() == 4 and images.shape[1] == self.out_channels and images.is_floating_point():
            return images.to(dtype)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected images (N, 3, H, W) or features (N, {self.out_channels}, 4, 4), "
                f"got {tuple(images.shape)}"
            )
        x = images.to(dtype) / 255.0 if images.dtype == torch.uint8 else images.to(dtype)
        x = (x - self.mean) / self.std
        with torch.no_grad():
            return self.cnn(x)


def pretrained_weights_path() -> str:
    """Where torchvision caches the encoder's ImageNet weights ($TORCH_HOME/hub/checkpoints)."""
    from torchvision.models import RegNet_X_400MF_Weights

    url = RegNet_X_400MF_Weights.IMAGENET1K_V2.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _pretrained_state_dict(weights, verbose: bool) -> dict:
    """ImageNet weights through torchvision's weights API, with an actionable error offline."""
    expected = pretrained_weights_path()
    if verbose and not os.path.exists(expected):
        print(f"Downloading RegNet-X 400MF weights to {expected}")
    try:
        return weights.get_state_dict(progress=verbose, check_hash=True)
    except Exception as exc:  # URLError, socket errors, a truncated or corrupt file
        raise RuntimeError(
            f"Could not load the pretrained RegNet-X 400MF weights ({exc}).\n"
            "Without internet: set PRETRAINED_ENCODER = False at the top of the notebook's set-up "
            "cell (its first code cell), run that cell again, then go on from here. The encoder "
            "then has random weights: everything runs, but captions will not describe the images.\n"
            f"To use the ImageNet weights offline, put the file at {expected} (download it from "
            f"{weights.url} on a machine with internet, or set TORCH_HOME).\n"
            "Outside the notebook, ImageEncoder(pretrained=False) and "
            "CaptioningRNN(..., image_encoder_pretrained=False) give random weights."
        ) from exc


# ---------------------------------------------------------------------------------------
# Vanilla RNN
# ---------------------------------------------------------------------------------------


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One timestep of a vanilla RNN with tanh: next_h = tanh(x Wx + prev_h Wh + b).

    Inputs:
    - x: (N, D) input for this timestep
    - prev_h: (N, H) hidden state of the previous timestep
    - Wx: (D, H) input-to-hidden weights
    - Wh: (H, H) hidden-to-hidden weights
    - b: (H,) biases

    Returns a tuple of:
    - next_h: (N, H) next hidden state
    - cache: what rnn_step_backward needs. Laid out as (x, prev_h, Wx, Wh, next_h), as the
      grader's is, it lets the grader judge your rnn_step_backward on its own even while
      this function has a bug.
    """
    next_h, cache = None, None
    ### BEGIN SOLUTION
    next_h = torch.tanh(x.mm(Wx) + prev_h.mm(Wh) + b)
    cache = (x, prev_h, Wx, Wh, next_h)
    ### END SOLUTION
    return next_h, cache


def rnn_step_backward(dnext_h, cache):
    """Backward pass of one vanilla RNN timestep, written by hand (no autograd).

    Inputs:
    - dnext_h: (N, H) gradient of the loss with respect to next_h
    - cache: from rnn_step_forward

    Returns a tuple of:
    - dx: (N, D) gradient with respect to x
    - dprev_h: (N, H) gradient with respect to prev_h
    - dWx: (D, H), dWh: (H, H), db: (H,) gradients with respect to the parameters
    """
    dx, dprev_h, dWx, dWh, db = None, None, None, None, None
    ### BEGIN SOLUTION
    x, prev_h, Wx, Wh, next_h = cache
    # d tanh(a) / da = 1 - tanh(a)^2, and tanh(a) is next_h.
    da = dnext_h * (1 - next_h * next_h)
    dx = da.mm(Wx.t())
    dprev_h = da.mm(Wh.t())
    dWx = x.t().mm(da)
    dWh = prev_h.t().mm(da)
    db = da.sum(dim=0)
    ### END SOLUTION
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    """A vanilla RNN over a whole sequence.

    Inputs:
    - x: (N, T, D) input sequence
    - h0: (N, H) initial hidden state
    - Wx: (D, H), Wh: (H, H), b: (H,) parameters

    Returns a tuple of:
    - h: (N, T, H) hidden states of every timestep
    - cache: what rnn_backward needs (the grader's is (x, h0, Wx, Wh, h); a list of the
      step caches suits an rnn_backward that calls rnn_step_backward)
    """
    h, cache = None, None
    ### BEGIN SOLUTION
    N, T, _ = x.shape
    # The input projection does not depend on h, so one matmul serves every timestep.
    x_proj = (x.reshape(N * T, -1).mm(Wx) + b).view(N, T, -1)
    states = []
    prev_h = h0
    for t in range(T):
        prev_h = torch.tanh(x_proj[:, t] + prev_h.mm(Wh))
        states.append(prev_h)
    h = torch.stack(states, dim=1)
    cache = (x, h0, Wx, Wh, h)
    ### END SOLUTION
    return h, cache


def rnn_backward(dh, cache):
    """Backward pass of a vanilla RNN over a whole sequence, written by hand.

    Inputs:
    - dh: (N, T, H) upstream gradients of all hidden states (from the loss only;
      the gradient flowing back through time is yours to add)
    - cache: from rnn_forward

    Returns a tuple of:
    - dx: (N, T, D), dh0: (N, H), dWx: (D, H), dWh: (H, H), db: (H,)
    """
    dx, dh0, dWx, dWh, db = None, None, None, None, None
    ### BEGIN SOLUTION
    x, h0, Wx, Wh, h = cache
    N, T, D = x.shape
    prev_states = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)  # (N, T, H)
    da = torch.empty_like(h)
    dprev_h = torch.zeros_like(h0)
    for t in reversed(range(T)):
        da[:, t] = (dh[:, t] + dprev_h) * (1 - h[:, t] * h[:, t])
        dprev_h = da[:, t].mm(Wh.t())
    dh0 = dprev_h
    # Parameter gradients are sums over time: one matmul over all N*T rows.
    da_flat = da.reshape(N * T, -1)
    dx = da_flat.mm(Wx.t()).view(N, T, D)
    dWx = x.reshape(N * T, D).t().mm(da_flat)
    dWh = prev_states.reshape(N * T, -1).t().mm(da_flat)
    db = da_flat.sum(dim=0)
    ### END SOLUTION
    return dx, dh0, dWx, dWh, db


class RNN(nn.Module):
    """A vanilla RNN layer with parameters Wx (D, H), Wh (H, H), b (H,) (provided).

    Its forward pass uses rnn_forward; autograd differentiates it.
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(input_dim, hidden_dim).div(math.sqrt(input_dim)))
        self.Wh = nn.Parameter(torch.randn(hidden_dim, hidden_dim).div(math.sqrt(hidden_dim)))
        self.b = nn.Parameter(torch.zeros(hidden_dim))

    def forward(self, x, h0):
        """x: (N, T, D), h0: (N, H). Returns hidden states (N, T, H)."""
        hn, _ = rnn_forward(x, h0, self.Wx, self.Wh, self.b)
        return hn

    def step_forward(self, x, prev_h):
        """x: (N, D), prev_h: (N, H). Returns next_h (N, H)."""
        next_h, _ = rnn_step_forward(x, prev_h, self.Wx, self.Wh, self.b)
        return next_h


# ---------------------------------------------------------------------------------------
# Word embedding and loss
# ---------------------------------------------------------------------------------------


class WordEmbedding(nn.Module):
    """Maps word indices to vectors: a lookup in W_embed (V, D)."""

    def __init__(self, vocab_size: int, embed_size: int):
        super().__init__()
        self.W_embed = nn.Parameter(torch.randn(vocab_size, embed_size).div(math.sqrt(vocab_size)))

    def forward(self, x):
        """x: (N, T) int64 word indices in [0, V). Returns (N, T, D) word vectors."""
        out = None
        ### BEGIN SOLUTION
        out = self.W_embed[x]
        ### END SOLUTION
        return out


def temporal_softmax_loss(x, y, ignore_index=None):
    """Softmax cross-entropy over a sequence of scores: summed over time and over the
    timesteps kept, averaged over the batch.

    Inputs:
    - x: (N, T, V) scores over the vocabulary at every timestep
    - y: (N, T) int64 ground-truth indices, each in [0, V)
    - ignore_index: a target index whose timesteps add nothing to the loss (the
      <NULL> padding), or None to keep every timestep

    Returns:
    - loss: a scalar tensor
    """
    loss = None
    ### BEGIN SOLUTION
    N, T, V = x.shape
    # cross_entropy's ignore_index must be an int; -100 matches no valid target.
    loss = F.cross_entropy(
        x.reshape(N * T, V),
        y.reshape(N * T),
        ignore_index=-100 if ignore_index is None else ignore_index,
        reduction="sum",
    ) / N
    ### END SOLUTION
    return loss


# ---------------------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------------------


def lstm_gates(a, prev_c):
    """The gate non-linearities of one LSTM step, shared by LSTM and AttentionLSTM.

    Inputs:
    - a: (N, 4H) gate pre-activations, in the order i, f, o, g
    - prev_c: (N, H) previous cell state

    Returns a tuple of:
    - next_h: (N, H) next hidden state
    - next_c: (N, H) next cell state
    """
    next_h, next_c = None, None
    ### BEGIN SOLUTION
    H = prev_c.shape[1]
    # split/chunk rather than slicing: their backward is one concatenation, where each
    # slice's backward would allocate a zero tensor the size of a.
    ifo, g = a.split([3 * H, H], dim=1)
    i, f, o = torch.sigmoid(ifo).chunk(3, dim=1)
    g = torch.tanh(g)
    next_c = f * prev_c + i * g
    next_h = o * torch.tanh(next_c)
    ### END SOLUTION
    return next_h, next_c


class LSTM(nn.Module):
    """A long short-term memory layer.

    Parameters: Wx (D, 4H), Wh (H, 4H), b (4H,); the 4H columns are the input, forget,
    output and candidate gates, in that order (i, f, o, g).
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(input_dim, hidden_dim * 4).div(math.sqrt(input_dim)))
        self.Wh = nn.Parameter(torch.randn(hidden_dim, hidden_dim * 4).div(math.sqrt(hidden_dim)))
        self.b = nn.Parameter(torch.zeros(hidden_dim * 4))

    def step_forward(self, x, prev_h, prev_c):
        """One timestep.

        Inputs: x (N, D), prev_h (N, H), prev_c (N, H).
        Returns next_h (N, H), next_c (N, H).
        """
        next_h, next_c = None, None
        ### BEGIN SOLUTION
        a = x.mm(self.Wx) + prev_h.mm(self.Wh) + self.b
        next_h, next_c = lstm_gates(a, prev_c)
        ### END SOLUTION
        return next_h, next_c

    def forward(self, x, h0):
        """A whole sequence; the initial cell state is zero.

        Inputs: x (N, T, D), h0 (N, H).
        Returns hn: (N, T, H) hidden states of every timestep.
        """
        hn = None
        ### BEGIN SOLUTION
        N, T, D = x.shape
        # The input projection does not depend on h: one matmul for every timestep.
        x_proj = torch.addmm(self.b, x.reshape(N * T, D), self.Wx).view(N, T, -1)
        prev_h, prev_c = h0, torch.zeros_like(h0)
        states = []
        for x_t in x_proj.unbind(dim=1):
            a = torch.addmm(x_t, prev_h, self.Wh)
            prev_h, prev_c = lstm_gates(a, prev_c)
            states.append(prev_h)
        hn = torch.stack(states, dim=1)
        ### END SOLUTION
        return hn


# ---------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------


def dot_product_attention(prev_h, A):
    """Scaled dot-product attention of a hidden state over a grid of projected features.

    Inputs:
    - prev_h: (N, H) the query
    - A: (N, H, 4, 4) keys and values: one H-vector per grid cell

    Returns a tuple of:
    - attn: (N, H) the attention-weighted average of the grid's vectors
    - attn_weights: (N, 4, 4) softmax weights over the grid, scaled by 1/sqrt(H)
      before the softmax; they sum to 1 over the grid
    """
    attn, attn_weights = None, None
    ### BEGIN SOLUTION
    N, H, height, width = A.shape
    A_flat = A.reshape(N, H, height * width)
    scores = torch.bmm(prev_h.unsqueeze(1), A_flat).squeeze(1) / math.sqrt(H)  # (N, 16)
    weights = torch.softmax(scores, dim=1)
    attn = torch.bmm(A_flat, weights.unsqueeze(2)).squeeze(2)
    attn_weights = weights.view(N, height, width)
    ### END SOLUTION
    return attn, attn_weights


class AttentionLSTM(nn.Module):
    """An LSTM whose every step also reads an attention vector over the image grid.

    Parameters: Wx (D, 4H), Wh (H, 4H), Wattn (H, 4H), b (4H,); gates i, f, o, g, as in
    LSTM, so lstm_gates applies unchanged.
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(input_dim, hidden_dim * 4).div(math.sqrt(input_dim)))
        self.Wh = nn.Parameter(torch.randn(hidden_dim, hidden_dim * 4).div(math.sqrt(hidden_dim)))
        self.Wattn = nn.Parameter(torch.randn(hidden_dim, hidden_dim * 4).div(math.sqrt(hidden_dim)))
        self.b = nn.Parameter(torch.zeros(hidden_dim * 4))

    def step_forward(self, x, prev_h, prev_c, attn):
        """One timestep.

        Inputs: x (N, D), prev_h (N, H), prev_c (N, H), attn (N, H) the attention vector.
        Returns next_h (N, H), next_c (N, H).
        """
        next_h, next_c = None, None
        ### BEGIN SOLUTION
        a = x.mm(self.Wx) + prev_h.mm(self.Wh) + attn.mm(self.Wattn) + self.b
        next_h, next_c = lstm_gates(a, prev_c)
        ### END SOLUTION
        return next_h, next_c

    def forward(self, x, A):
        """A whole sequence; h0 = c0 = the mean of A over the grid.

        Inputs: x (N, T, D), A (N, H, 4, 4) projected image features.
        Returns hn: (N, T, H) hidden states of every timestep.
        """
        hn = None
        ### BEGIN SOLUTION
        N, T, D = x.shape
        x_proj = torch.addmm(self.b, x.reshape(N * T, D), self.Wx).view(N, T, -1)
        prev_h = A.mean(dim=(2, 3))
        prev_c = prev_h
        states = []
        for x_t in x_proj.unbind(dim=1):
            attn, _ = dot_product_attention(prev_h, A)
            a = x_t + prev_h.mm(self.Wh) + attn.mm(self.Wattn)
            prev_h, prev_c = lstm_gates(a, prev_c)
            states.append(prev_h)
        hn = torch.stack(states, dim=1)
        ### END SOLUTION
        return hn


# ---------------------------------------------------------------------------------------
# The captioning model
# ---------------------------------------------------------------------------------------


class CaptioningRNN(nn.Module):
    """An image captioner: a frozen CNN encoder, a projection of its features, word
    embeddings, a recurrent cell (rnn, lstm or attn) and a projection to vocabulary scores.

    Submodule and parameter names are fixed (the grader loads weights by state_dict):
    ``image_encoder``, ``feature_projection`` (Linear D -> H), ``word_embedding.W_embed``,
    ``rnn`` (the RNN, LSTM or AttentionLSTM) and ``output_projection`` (Linear H -> V).
    """

    def __init__(
        self,
        word_to_idx: dict,
        input_dim: int = 400,
        wordvec_dim: int = 128,
        hidden_dim: int = 128,
        cell_type: str = "rnn",
        image_encoder_pretrained: bool = True,
        ignore_index: int | None = None,
    ):
        super().__init__()
        if cell_type not in CELL_TYPES:
            raise ValueError(f'cell_type must be one of {CELL_TYPES}, got "{cell_type}"')
        self.cell_type = cell_type
        self.word_to_idx = word_to_idx
        self.idx_to_word = {i: w for w, i in word_to_idx.items()}
        self.ignore_index = ignore_index
        missing = [t for t in ("<NULL>", "<START>", "<END>") if t not in word_to_idx]
        if missing:
            raise ValueError(f"word_to_idx lacks the special tokens {missing}")
        self._null = word_to_idx["<NULL>"]
        self._start = word_to_idx["<START>"]
        self._end = word_to_idx["<END>"]
        vocab_size = len(word_to_idx)

        self.image_encoder = ImageEncoder(pretrained=image_encoder_pretrained)
        # rnn/lstm project the grid-averaged features to h0; attn projects every grid cell.
        self.feature_projection = nn.Linear(input_dim, hidden_dim)
        self.word_embedding = WordEmbedding(vocab_size, wordvec_dim)
        # Names looked up only for the chosen type: in the notebook, LSTM and AttentionLSTM
        # are defined after this class.
        if cell_type == "rnn":
            self.rnn = RNN(wordvec_dim, hidden_dim)
        elif cell_type == "lstm":
            self.rnn = LSTM(wordvec_dim, hidden_dim)
        else:
            self.rnn = AttentionLSTM(wordvec_dim, hidden_dim)
        self.output_projection = nn.Linear(hidden_dim, vocab_size)

    def forward(self, images, captions):
        """Training loss with teacher forcing.

        Inputs:
        - images: (N, 3, 112, 112) uint8 or float images
        - captions: (N, T) int64 ground-truth captions starting with <START>; the model
          reads captions[:, :-1] and predicts captions[:, 1:]

        Returns:
        - loss: a scalar tensor (temporal softmax loss with self.ignore_index)
        """
        loss = 0.0
        ### BEGIN SOLUTION
        captions_in, captions_out = captions[:, :-1], captions[:, 1:]
        features = self.image_encoder(images)
        words = self.word_embedding(captions_in)
        if self.cell_type == "attn":
            A = self._project_grid(features)
            hidden = self.rnn(words, A)
        else:
            h0 = self.feature_projection(features.mean(dim=(2, 3)))
            hidden = self.rnn(words, h0)
        scores = self.output_projection(hidden)
        loss = temporal_softmax_loss(scores, captions_out, ignore_index=self.ignore_index)
        ### END SOLUTION
        return loss

    def _project_grid(self, features):
        """features: (N, D, 4, 4) -> A: (N, H, 4, 4), feature_projection on every cell."""
        return self.feature_projection(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    @torch.no_grad()
    def sample(self, images, max_length: int = 15):
        """Greedy decoding: start from <START>, feed back the highest-scoring word.

        Inputs:
        - images: (N, 3, 112, 112) uint8 or float images
        - max_length: number of words to generate

        Returns:
        - captions: (N, max_length) int64; once a caption has produced <END>, its later
          positions are <NULL>
        - for cell_type "attn" also attn_weights_all: (N, max_length, 4, 4), the
          attention weights of each generated word (zero after <END>)
        """
        N = images.shape[0]
        captions = images.new_full((N, max_length), self._null, dtype=torch.long)
        if self.cell_type == "attn":
            dtype = self.output_projection.weight.dtype
            attn_weights_all = images.new_zeros(N, max_length, 4, 4, dtype=dtype)
        ### BEGIN SOLUTION
        features = self.image_encoder(images)
        if self.cell_type == "attn":
            A = self._project_grid(features)
            h = c = A.mean(dim=(2, 3))
        else:
            h = self.feature_projection(features.mean(dim=(2, 3)))
            c = torch.zeros_like(h)
        words = images.new_full((N,), self._start, dtype=torch.long)
        finished = torch.zeros(N, dtype=torch.bool, device=images.device)
        for t in range(max_length):
            x = self.word_embedding(words)
            if self.cell_type == "rnn":
                h = self.rnn.step_forward(x, h)
            elif self.cell_type == "lstm":
                h, c = self.rnn.step_forward(x, h, c)
            else:
                attn, weights = dot_product_attention(h, A)
                h, c = self.rnn.step_forward(x, h, c, attn)
                attn_weights_all[:, t] = weights.masked_fill(finished.view(N, 1, 1), 0)
            words = self.output_projection(h).argmax(dim=1)
            captions[:, t] = words.masked_fill(finished, self._null)
            finished |= words == self._end
        ### END SOLUTION
        if self.cell_type == "attn":
            return captions, attn_weights_all
        return captions
