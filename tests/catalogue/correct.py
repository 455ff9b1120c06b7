"""Correct submissions written differently from the reference: each must score 100.

A Variant is a whole submission (several units may be rewritten at once, to save gradings):
for each rewritten unit, the reference code with its solution regions (``### BEGIN
SOLUTION`` ... ``### END SOLUTION``, in order) replaced by the variant's own bodies, as a
student fills in the released stubs. Signatures, parameter names and provided code stay
as handed out. ``MISSED`` names the variants the grader currently does not score 100, with
why; the test marks them xfail(strict=True).
"""

import textwrap
from dataclasses import dataclass

from solution import source as reference

def solved(unit: str, *bodies: str) -> str:
    """The reference code of unit with its solution regions replaced by bodies, in order."""
    code = reference.unit_source(unit) + "\n"
    regions = list(reference.SOLUTION_REGION.finditer(code))
    if len(regions) != len(bodies):
        raise AssertionError(f"{unit} has {len(regions)} solution regions, {len(bodies)} bodies given")
    parts, end = [], 0
    for region, body in zip(regions, bodies):
        parts += [code[end:region.start()], textwrap.indent(textwrap.dedent(body).strip("\n"), region.group("indent"))]
        end = region.end()
    return "".join(parts) + code[end:]


@dataclass(frozen=True)
class Variant:
    id: str
    why: str  # how it differs from the reference
    cells: dict  # unit -> code


# ---------------------------------------------------------------------------------------
# Vanilla RNN
# ---------------------------------------------------------------------------------------

STEP_FORWARD_MATMUL_DICT_CACHE = solved("rnn_step_forward", """
    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)
    cache = {"x": x, "prev_h": prev_h, "Wx": Wx, "Wh": Wh, "next_h": next_h}
""")

STEP_BACKWARD_EINSUM = solved("rnn_step_backward", """
    da = dnext_h * (1 - cache["next_h"] ** 2)
    dx = torch.einsum("nh,dh->nd", da, cache["Wx"])
    dprev_h = torch.einsum("nh,kh->nk", da, cache["Wh"])
    dWx = torch.einsum("nd,nh->dh", cache["x"], da)
    dWh = torch.einsum("nk,nh->kh", cache["prev_h"], da)
    db = torch.einsum("nh->h", da)
""")

STEP_FORWARD_ADDMM_PREACTIVATION_CACHE = solved("rnn_step_forward", """
    a = torch.addmm(b, x, Wx) + torch.matmul(prev_h, Wh)
    next_h = a.tanh()
    cache = (a, x, prev_h, Wx, Wh)
""")

STEP_BACKWARD_FROM_PREACTIVATION = solved("rnn_step_backward", """
    a, x, prev_h, Wx, Wh = cache
    da = dnext_h / torch.cosh(a) ** 2
    dx = torch.matmul(da, Wx.T)
    dprev_h = torch.matmul(da, Wh.T)
    dWx = torch.matmul(x.T, da)
    dWh = torch.matmul(prev_h.T, da)
    db = da.sum(0)
""")

RNN_FORWARD_LOOPS_OVER_N_AND_T = solved("rnn_forward", """
    N, T, D = x.shape
    h = x.new_zeros(N, T, h0.shape[1])
    for n in range(N):
        prev = h0[n]
        for t in range(T):
            prev = torch.tanh(x[n, t] @ Wx + prev @ Wh + b)
            h[n, t] = prev
    cache = (x, h0, Wx, Wh, h)
""")

RNN_BACKWARD_ACCUMULATES_PER_STEP = solved("rnn_backward", """
    x, h0, Wx, Wh, h = cache
    N, T, D = x.shape
    dx = torch.zeros_like(x)
    dWx, dWh = torch.zeros_like(Wx), torch.zeros_like(Wh)
    db = dh.new_zeros(Wh.shape[0])
    dnext = torch.zeros_like(h0)
    for t in range(T - 1, -1, -1):
        prev_h = h0 if t == 0 else h[:, t - 1]
        da = (dh[:, t] + dnext) * (1 - h[:, t] ** 2)
        dx[:, t] = da @ Wx.T
        dWx += x[:, t].T @ da
        dWh += prev_h.T @ da
        db += da.sum(dim=0)
        dnext = da @ Wh.T
    dh0 = dnext
""")

# The CS231n way: the sequence functions call the step functions of the cells before.
RNN_FORWARD_CALLS_THE_STEP = solved("rnn_forward", """
    N, T, D = x.shape
    states, caches = [], []
    prev_h = h0
    for t in range(T):
        prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)
        states.append(prev_h)
        caches.append(step_cache)
    h = torch.stack(states, dim=1)
    cache = caches
""")

RNN_BACKWARD_CALLS_THE_STEP = solved("rnn_backward", """
    T = len(cache)
    dx_steps = [None] * T
    dprev_h = torch.zeros_like(dh[:, 0])
    dWx = dWh = db = 0
    for t in reversed(range(T)):
        dx_t, dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t] + dprev_h, cache[t])
        dx_steps[t] = dx_t
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    dx = torch.stack(dx_steps, dim=1)
    dh0 = dprev_h
""")

# ---------------------------------------------------------------------------------------
# Word embedding and loss
# ---------------------------------------------------------------------------------------

EMBEDDING_ONE_HOT = solved("WordEmbedding", """
    one_hot = F.one_hot(x, num_classes=self.W_embed.shape[0]).to(self.W_embed.dtype)
    out = one_hot @ self.W_embed
""")

EMBEDDING_INDEX_SELECT = solved("WordEmbedding", """
    out = torch.index_select(self.W_embed, 0, x.reshape(-1)).view(*x.shape, -1)
""")

LOSS_MANUAL_LOGSUMEXP_MASK = solved("temporal_softmax_loss", """
    N, T, V = x.shape
    top = x.max(dim=2, keepdim=True).values
    log_z = top.squeeze(2) + torch.log(torch.exp(x - top).sum(dim=2))
    nll = log_z - x.gather(2, y.unsqueeze(2)).squeeze(2)
    if ignore_index is not None:
        nll = nll * (y != ignore_index).to(x.dtype)
    loss = nll.sum() / N
""")

LOSS_GATHER_BOOLEAN_INDEX = solved("temporal_softmax_loss", """
    log_p = torch.log_softmax(x, dim=-1)
    nll = -torch.gather(log_p, 2, y[..., None])[..., 0]
    keep = torch.ones_like(y, dtype=torch.bool) if ignore_index is None else y != ignore_index
    loss = nll[keep].sum() / x.shape[0]
""")

LOSS_LOOP_OVER_TIME = solved("temporal_softmax_loss", """
    N, T, V = x.shape
    loss = 0
    for t in range(T):
        kept = torch.ones(N, dtype=torch.bool) if ignore_index is None else y[:, t] != ignore_index
        loss = loss + F.cross_entropy(x[kept, t], y[kept, t], reduction="sum")
    loss = loss / N
""")

# ---------------------------------------------------------------------------------------
# LSTM and attention
# ---------------------------------------------------------------------------------------

LSTM_PER_GATE_SLICES = solved(
    "LSTM",
    """
    H = prev_c.shape[1]
    i = torch.sigmoid(a[:, :H])
    f = torch.sigmoid(a[:, H:2 * H])
    o = torch.sigmoid(a[:, 2 * H:3 * H])
    g = torch.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    next_h = o * torch.tanh(next_c)
    """,
    """
    H = prev_h.shape[1]
    blocks = []
    for k in range(4):  # i, f, o, g, each with its own slice of the weights
        cols = slice(k * H, (k + 1) * H)
        blocks.append(x @ self.Wx[:, cols] + prev_h @ self.Wh[:, cols] + self.b[cols])
    next_h, next_c = lstm_gates(torch.cat(blocks, dim=1), prev_c)
    """,
    """
    h, c = h0, torch.zeros_like(h0)
    states = []
    for t in range(x.shape[1]):
        h, c = self.step_forward(x[:, t], h, c)
        states.append(h)
    hn = torch.stack(states, dim=1)
    """,
)

LSTM_CONCATENATED_WEIGHTS = solved(
    "LSTM",
    """
    i, f, o, g = a.chunk(4, dim=1)
    next_c = torch.sigmoid(f) * prev_c + torch.sigmoid(i) * torch.tanh(g)
    next_h = torch.sigmoid(o) * torch.tanh(next_c)
    """,
    """
    W = torch.cat([self.Wx, self.Wh], dim=0)
    next_h, next_c = lstm_gates(torch.cat([x, prev_h], dim=1) @ W + self.b, prev_c)
    """,
    """
    N, T, D = x.shape
    x_proj = torch.einsum("ntd,dk->ntk", x, self.Wx) + self.b
    hn = x.new_empty(N, T, h0.shape[1])
    h, c = h0, h0.new_zeros(h0.shape)
    for t in range(T):
        h, c = lstm_gates(x_proj[:, t] + h @ self.Wh, c)
        hn[:, t] = h
    """,
)

ATTENTION_BROADCAST_SUM = solved("dot_product_attention", """
    N, H, height, width = A.shape
    keys = A.flatten(2)  # (N, H, 16)
    scores = (prev_h[:, :, None] * keys).sum(dim=1) / H ** 0.5
    weights = scores.softmax(dim=-1)
    attn = (keys * weights[:, None, :]).sum(dim=2)
    attn_weights = weights.reshape(N, height, width)
""")

ATTENTION_EINSUM_MANUAL_SOFTMAX = solved("dot_product_attention", """
    H = A.shape[1]
    scores = torch.einsum("nh,nhij->nij", prev_h, A) / math.sqrt(H)
    flat = scores.flatten(1)
    e = torch.exp(flat - flat.max(dim=1, keepdim=True).values)
    attn_weights = (e / e.sum(dim=1, keepdim=True)).view_as(scores)
    attn = torch.einsum("nhij,nij->nh", A, attn_weights)
""")

ATTENTION_LSTM_CALLS_ITS_STEP = solved(
    "AttentionLSTM",
    """
    a = x @ self.Wx + prev_h @ self.Wh + attn @ self.Wattn + self.b
    next_h, next_c = lstm_gates(a, prev_c)
    """,
    """
    h = A.mean(dim=(2, 3))
    c = h.clone()
    states = []
    for t in range(x.shape[1]):
        attn, _ = dot_product_attention(h, A)
        h, c = self.step_forward(x[:, t], h, c, attn)
        states.append(h)
    hn = torch.stack(states, dim=1)
    """,
)

ATTENTION_LSTM_CONCATENATED = solved(
    "AttentionLSTM",
    """
    inputs = torch.cat([x, prev_h, attn], dim=1)
    weights = torch.cat([self.Wx, self.Wh, self.Wattn], dim=0)
    next_h, next_c = lstm_gates(torch.addmm(self.b, inputs, weights), prev_c)
    """,
    """
    x_proj = torch.matmul(x, self.Wx) + self.b
    h = c = A.flatten(2).mean(dim=-1)
    outputs = []
    for x_t in x_proj.unbind(1):
        attn, _ = dot_product_attention(h, A)
        h, c = lstm_gates(x_t + h @ self.Wh + attn @ self.Wattn, c)
        outputs.append(h)
    hn = torch.stack(outputs, dim=1)
    """,
)

# ---------------------------------------------------------------------------------------
# The captioner
# ---------------------------------------------------------------------------------------

CAPTIONER_STEP_LOOP_AND_LIST_SAMPLE = solved(
    "CaptioningRNN",
    """
    features = self.image_encoder(images)
    inputs, targets = captions[:, :-1], captions[:, 1:]
    words = self.word_embedding(inputs)
    if self.cell_type == "attn":
        A = self._project_grid(features)
        h = c = A.mean(dim=(2, 3))
    else:
        h = self.feature_projection(features.mean(dim=(2, 3)))
        c = torch.zeros_like(h)
    step_scores = []
    for t in range(inputs.shape[1]):
        if self.cell_type == "rnn":
            h = self.rnn.step_forward(words[:, t], h)
        elif self.cell_type == "lstm":
            h, c = self.rnn.step_forward(words[:, t], h, c)
        else:
            attn, _ = dot_product_attention(h, A)
            h, c = self.rnn.step_forward(words[:, t], h, c, attn)
        step_scores.append(self.output_projection(h))
    scores = torch.stack(step_scores, dim=1)
    loss = temporal_softmax_loss(scores, targets, ignore_index=self.ignore_index)
    """,
    """
    features = self.image_encoder(images)
    if self.cell_type == "attn":
        A = self._project_grid(features)
        h = A.mean(dim=(2, 3))
        c = h
    else:
        h = self.feature_projection(features.mean(dim=(2, 3)))
        c = torch.zeros_like(h)
    previous = [self._start] * N
    done = [False] * N
    for t in range(max_length):
        x = self.word_embedding(torch.tensor(previous, device=images.device))
        if self.cell_type == "rnn":
            h = self.rnn.step_forward(x, h)
        elif self.cell_type == "lstm":
            h, c = self.rnn.step_forward(x, h, c)
        else:
            attn, weights = dot_product_attention(h, A)
            h, c = self.rnn.step_forward(x, h, c, attn)
        previous = self.output_projection(h).argmax(dim=1).tolist()
        for n in range(N):
            if done[n]:
                continue  # already <NULL> and zero weights
            captions[n, t] = previous[n]
            if self.cell_type == "attn":
                attn_weights_all[n, t] = weights[n]
            done[n] = previous[n] == self._end
    """,
)

CAPTIONER_INLINE_LOSS_AND_WHERE = solved(
    "CaptioningRNN",
    """
    features = self.image_encoder(images)
    N, T = captions.shape
    if self.cell_type == "attn":
        hidden = self.rnn(self.word_embedding(captions[:, :T - 1]), self._project_grid(features))
    else:
        pooled = features.flatten(2).mean(dim=2)
        hidden = self.rnn(self.word_embedding(captions[:, :T - 1]), self.feature_projection(pooled))
    scores = hidden @ self.output_projection.weight.T + self.output_projection.bias
    targets = captions[:, 1:].reshape(-1)
    nll = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), targets, reduction="none")
    if self.ignore_index is not None:
        nll = nll.masked_fill(targets == self.ignore_index, 0.0)
    loss = nll.sum() / N
    """,
    """
    features = self.image_encoder(images)
    state = {}
    if self.cell_type == "attn":
        A = self._project_grid(features)
        state["h"] = state["c"] = A.flatten(2).mean(dim=2)
    else:
        state["h"] = self.feature_projection(features.flatten(2).mean(dim=2))
        state["c"] = torch.zeros_like(state["h"])
    word = torch.full((N,), self._start, dtype=torch.long, device=images.device)
    alive = torch.ones(N, dtype=torch.bool, device=images.device)
    for t in range(max_length):
        x = self.word_embedding(word)
        if self.cell_type == "rnn":
            state["h"] = self.rnn.step_forward(x, state["h"])
        elif self.cell_type == "lstm":
            state["h"], state["c"] = self.rnn.step_forward(x, state["h"], state["c"])
        else:
            attn, weights = dot_product_attention(state["h"], A)
            state["h"], state["c"] = self.rnn.step_forward(x, state["h"], state["c"], attn)
            attn_weights_all[:, t] = torch.where(alive[:, None, None], weights, torch.zeros_like(weights))
        word = self.output_projection(state["h"]).max(dim=1).indices
        captions[:, t] = torch.where(alive, word, torch.full_like(word, self._null))
        alive = alive & (word != self._end)
    """,
)

# ---------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------

VARIANTS = [
    Variant("loops_einsum_and_one_hot",
            "matmul/einsum, a dict cache, loops over N and T, per-step accumulation, one-hot "
            "embedding, manual log-sum-exp with a mask, per-gate weight slices, broadcast attention",
            {"rnn_step_forward": STEP_FORWARD_MATMUL_DICT_CACHE,
             "rnn_step_backward": STEP_BACKWARD_EINSUM,
             "rnn_forward": RNN_FORWARD_LOOPS_OVER_N_AND_T,
             "rnn_backward": RNN_BACKWARD_ACCUMULATES_PER_STEP,
             "WordEmbedding": EMBEDDING_ONE_HOT,
             "temporal_softmax_loss": LOSS_MANUAL_LOGSUMEXP_MASK,
             "LSTM": LSTM_PER_GATE_SLICES,
             "dot_product_attention": ATTENTION_BROADCAST_SUM,
             "AttentionLSTM": ATTENTION_LSTM_CALLS_ITS_STEP}),
    Variant("concatenated_weights_and_einsum_attention",
            "addmm, a cache of the pre-activation (1/cosh^2), index_select, gather with a boolean "
            "mask, concatenated [Wx; Wh] weights, einsum attention with a hand-written softmax",
            {"rnn_step_forward": STEP_FORWARD_ADDMM_PREACTIVATION_CACHE,
             "rnn_step_backward": STEP_BACKWARD_FROM_PREACTIVATION,
             "WordEmbedding": EMBEDDING_INDEX_SELECT,
             "temporal_softmax_loss": LOSS_GATHER_BOOLEAN_INDEX,
             "LSTM": LSTM_CONCATENATED_WEIGHTS,
             "dot_product_attention": ATTENTION_EINSUM_MANUAL_SOFTMAX,
             "AttentionLSTM": ATTENTION_LSTM_CONCATENATED}),
    Variant("captioner_step_loop_and_list_sample",
            "CaptioningRNN.forward calls the cells' step functions in a loop; sample keeps python lists",
            {"CaptioningRNN": CAPTIONER_STEP_LOOP_AND_LIST_SAMPLE}),
    Variant("captioner_inline_loss_and_where",
            "CaptioningRNN computes the loss inline with cross_entropy(reduction='none') and a mask; "
            "sample uses torch.where and an alive mask",
            {"CaptioningRNN": CAPTIONER_INLINE_LOSS_AND_WHERE}),
    Variant("loss_loop_over_time",
            "temporal_softmax_loss as a loop over time of cross_entropy on the kept rows",
            {"temporal_softmax_loss": LOSS_LOOP_OVER_TIME}),
    Variant("sequence_calls_the_step_functions",
            "rnn_forward / rnn_backward call rnn_step_forward / rnn_step_backward (the CS231n way), "
            "keeping the list of step caches",
            {"rnn_forward": RNN_FORWARD_CALLS_THE_STEP,
             "rnn_backward": RNN_BACKWARD_CALLS_THE_STEP}),
]

# Variants the grader does not score 100, id -> why (see the report).
MISSED: dict[str, str] = {}
