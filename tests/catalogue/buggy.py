"""A catalogue of realistic buggy submissions and the points each must lose.

Each Bug is one plausible student mistake in one graded unit: the reference code of the unit
with text replacements applied (``edits``, each ``(old, new)`` or ``(old, new, count)``), or,
where a replacement cannot express the mistake, the whole code of the unit (``code``).
``loses`` is the exact set of (unit, test) that must lose points: the unit's own tests it
breaks, and nothing else (a unit that relies on a failing one is judged again with the
grader's in its place: autograder/collaborators.py).

``MISSED`` names the bugs the grader currently does not grade as ``loses`` says it should
(found by running this catalogue), with why; the test marks them xfail(strict=True).
"""

from dataclasses import dataclass

from grading import all_tests_of, mutated

RNN_CAPTIONER_LOSSES = {("CaptioningRNN", "loss_rnn"), ("CaptioningRNN", "loss_lstm")}
ALL_LOSSES = {("CaptioningRNN", t) for t in ("loss_rnn", "loss_lstm", "loss_attn")}
ALL_SAMPLES = {("CaptioningRNN", t) for t in ("sample_rnn", "sample_lstm", "sample_attn")}


@dataclass(frozen=True)
class Bug:
    id: str
    unit: str
    loses: frozenset  # of (unit, test)
    why: str  # what the student misunderstood
    edits: tuple = ()  # ((old, new) or (old, new, count), ...) applied to the reference unit
    code: str | None = None  # the unit's whole code, when edits cannot express the mistake

    def unit_code(self) -> str:
        if self.code is not None:
            return self.code
        code = None
        for old, new, *count in self.edits:
            code = _replace(self.unit, code, old, new, *count)
        return code

    def submission(self) -> dict[str, str]:
        """The cells to write: the reference everywhere except this bug's unit."""
        return {self.unit: self.unit_code()}


def _replace(unit, code, old, new, count=1):
    if code is None:
        return mutated(unit, old, new, count)
    found = code.count(old)
    if found != count:
        raise AssertionError(f"{old!r} occurs {found} times in the edited {unit}, expected {count}")
    return code.replace(old, new)


def bug(id, unit, old, new, loses, why, count=1):
    """A bug made by one text replacement in the reference unit."""
    return Bug(id, unit, frozenset(loses), why, edits=((old, new, count),))


def tests(*pairs) -> set:
    return set(pairs)


# ---------------------------------------------------------------------------------------
# Whole-unit codes (mistakes that a single replacement does not express)
# ---------------------------------------------------------------------------------------

RNN_BACKWARD_DWH_OVERWRITTEN = '''
def rnn_backward(dh, cache):
    x, h0, Wx, Wh, h = cache
    N, T, D = x.shape
    dx = torch.zeros_like(x)
    dWx, dWh, db = torch.zeros_like(Wx), torch.zeros_like(Wh), torch.zeros_like(Wh[0])
    dprev_h = torch.zeros_like(h0)
    for t in reversed(range(T)):
        prev_h = h[:, t - 1] if t > 0 else h0
        da = (dh[:, t] + dprev_h) * (1 - h[:, t] ** 2)
        dx[:, t] = da @ Wx.T
        dWx += x[:, t].T @ da
        dWh = prev_h.T @ da  # overwritten at every step instead of accumulated
        db += da.sum(dim=0)
        dprev_h = da @ Wh.T
    dh0 = dprev_h
    return dx, dh0, dWx, dWh, db
'''

LOSS_LOG_OF_SCORES = '''
def temporal_softmax_loss(x, y, ignore_index=None):
    N, T, V = x.shape
    log_probs = torch.log(x)  # log of the raw scores, not log_softmax
    picked = log_probs.gather(2, y.unsqueeze(2)).squeeze(2)
    mask = torch.ones_like(picked) if ignore_index is None else (y != ignore_index).to(x.dtype)
    return -(picked * mask).sum() / N
'''

LOSS_SOFTMAX_OVER_TIME = '''
def temporal_softmax_loss(x, y, ignore_index=None):
    N, T, V = x.shape
    log_probs = torch.log_softmax(x, dim=1)  # normalised over time, not over the vocabulary
    picked = log_probs.gather(2, y.unsqueeze(2)).squeeze(2)
    mask = torch.ones_like(picked) if ignore_index is None else (y != ignore_index).to(x.dtype)
    return -(picked * mask).sum() / N
'''

LSTM_GATES_I_F_G_O = '''
def lstm_gates(a, prev_c):
    i, f, g, o = a.chunk(4, dim=1)  # the order is i, f, o, g
    i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
    next_c = f * prev_c + i * g
    next_h = o * torch.tanh(next_c)
    return next_h, next_c
'''


def _with_lstm_gates(code: str) -> str:
    """The reference LSTM unit with lstm_gates replaced by code."""
    from solution import source as reference

    _, definitions = reference.split_definitions()
    return code.strip() + "\n\n\n" + definitions["LSTM"]


# ---------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------

STEP_FWD, STEP_BWD = ("rnn_step_forward", "forward"), ("rnn_step_backward", "gradients")
SEQ_FWD, SEQ_BWD = ("rnn_forward", "forward"), ("rnn_backward", "gradients")
EMB_FWD, EMB_GRAD = ("WordEmbedding", "forward"), ("WordEmbedding", "gradient")
LOSS, LOSS_IGNORE, LOSS_GRAD = (("temporal_softmax_loss", t) for t in ("loss", "ignore_index", "gradient"))
LSTM_STEP, LSTM_FWD, LSTM_GRAD = (("LSTM", t) for t in ("step_forward", "forward", "gradients"))
ATT_FWD, ATT_GRAD = ("dot_product_attention", "forward"), ("dot_product_attention", "gradients")
ALSTM_STEP, ALSTM_FWD, ALSTM_GRAD = (("AttentionLSTM", t) for t in ("step_forward", "forward", "gradients"))
SAMPLE_RNN, SAMPLE_LSTM, SAMPLE_ATTN = (("CaptioningRNN", t) for t in ("sample_rnn", "sample_lstm", "sample_attn"))

BUGS = [
    # --- vanilla RNN, one step ---------------------------------------------------------
    bug("step_forward_no_bias", "rnn_step_forward",
        "prev_h.mm(Wh) + b)", "prev_h.mm(Wh))",
        tests(STEP_FWD),  # the backward, fed this cache, is judged again with the grader's forward
        "forgot the bias in the affine part of the step"),
    bug("step_forward_caches_preactivation", "rnn_step_forward",
        "next_h = torch.tanh(x.mm(Wx) + prev_h.mm(Wh) + b)\n    cache = (x, prev_h, Wx, Wh, next_h)",
        "a = x.mm(Wx) + prev_h.mm(Wh) + b\n    next_h = torch.tanh(a)\n    cache = (x, prev_h, Wx, Wh, a)",
        tests(STEP_FWD),  # next_h is right, but the backward does better with the grader's cache
        "cached the pre-activation where the backward pass expects tanh's output"),
    bug("step_backward_tanh_derivative", "rnn_step_backward",
        "(1 - next_h * next_h)", "(1 - next_h)",
        tests(STEP_BWD),
        "took 1 - tanh(a) as the derivative of tanh instead of 1 - tanh(a)^2"),
    bug("step_backward_db_not_summed", "rnn_step_backward",
        "db = da.sum(dim=0)", "db = da",
        tests(STEP_BWD),
        "returned db per example, shape (N, H): forgot that b is shared by the batch"),
    bug("step_backward_dprev_h_untransposed", "rnn_step_backward",
        "dprev_h = da.mm(Wh.t())", "dprev_h = da.mm(Wh)",
        tests(STEP_BWD),
        "multiplied by Wh instead of its transpose (Wh is square, so the shape looks right)"),

    # --- vanilla RNN, a sequence -------------------------------------------------------
    bug("rnn_forward_no_feedback", "rnn_forward",
        "prev_h = torch.tanh(x_proj[:, t] + prev_h.mm(Wh))", "prev_h = torch.tanh(x_proj[:, t] + h0.mm(Wh))",
        tests(SEQ_FWD),
        "fed h0 to every step instead of the previous step's hidden state"),
    bug("rnn_forward_stacked_on_time_first", "rnn_forward",
        "h = torch.stack(states, dim=1)", "h = torch.stack(states)",
        tests(SEQ_FWD),
        "stacked the states as (T, N, H) instead of (N, T, H)"),
    bug("rnn_backward_tanh_twice", "rnn_backward",
        "(1 - h[:, t] * h[:, t])", "(1 - torch.tanh(h[:, t]) ** 2)",
        tests(SEQ_BWD),
        "applied tanh to h again in the derivative, as if h were the pre-activation"),
    bug("rnn_backward_no_gradient_through_time", "rnn_backward",
        "da[:, t] = (dh[:, t] + dprev_h) *", "da[:, t] = dh[:, t] *",
        tests(SEQ_BWD),
        "used only the loss's gradient dh[:, t], not what flows back from step t + 1"),
    bug("rnn_backward_db_per_example", "rnn_backward",
        "db = da_flat.sum(dim=0)", "db = da.sum(dim=1)",
        tests(SEQ_BWD),
        "summed db over time only, leaving shape (N, H)"),
    bug("rnn_backward_dWh_from_current_states", "rnn_backward",
        "dWh = prev_states.reshape(N * T, -1)", "dWh = h.reshape(N * T, -1)",
        tests(SEQ_BWD),
        "paired each step's gradient with h_t instead of h_(t-1) in dWh"),
    Bug("rnn_backward_dWh_overwritten", "rnn_backward", frozenset({SEQ_BWD}),
        "assigned dWh at every step of the loop instead of accumulating it over time",
        code=RNN_BACKWARD_DWH_OVERWRITTEN),

    # --- word embedding ----------------------------------------------------------------
    bug("embedding_off_by_one", "WordEmbedding",
        "out = self.W_embed[x]", "out = self.W_embed[x - 1]",
        all_tests_of("WordEmbedding"),
        "thought word indices start at 1"),
    bug("embedding_one_hot_sized_by_the_batch", "WordEmbedding",
        "out = self.W_embed[x]", "out = F.one_hot(x).to(self.W_embed.dtype) @ self.W_embed",
        all_tests_of("WordEmbedding"),
        "one-hot encoded without num_classes: the width is max(x) + 1, not V"),
    bug("embedding_detached", "WordEmbedding",
        "out = self.W_embed[x]", "out = self.W_embed.data[x]",
        tests(EMB_GRAD),
        "indexed .data, so the embedding is never trained"),

    # --- temporal softmax loss ---------------------------------------------------------
    bug("loss_mean_over_time", "temporal_softmax_loss",
        ") / N", ") / (N * T)",
        all_tests_of("temporal_softmax_loss"),
        "averaged over time as well as over the batch"),
    bug("loss_mean_over_all_tokens", "temporal_softmax_loss",
        'reduction="sum",\n    ) / N', 'reduction="mean",\n    )',
        all_tests_of("temporal_softmax_loss"),
        "used cross_entropy's default mean over every kept token"),
    bug("loss_not_averaged_over_batch", "temporal_softmax_loss",
        ") / N", ")",
        all_tests_of("temporal_softmax_loss"),
        "summed over the batch instead of averaging over it"),
    bug("loss_ignores_ignore_index", "temporal_softmax_loss",
        "ignore_index=-100 if ignore_index is None else ignore_index", "ignore_index=-100",
        tests(LOSS_IGNORE, LOSS_GRAD),  # the plain loss test passes no ignore_index
        "never passed ignore_index on, so the <NULL> padding counts in the loss"),
    Bug("loss_log_of_scores", "temporal_softmax_loss", frozenset(all_tests_of("temporal_softmax_loss")),
        "took the log of the raw scores instead of log_softmax",
        code=LOSS_LOG_OF_SCORES),
    Bug("loss_softmax_over_time", "temporal_softmax_loss", frozenset(all_tests_of("temporal_softmax_loss")),
        "normalised the scores over the time axis instead of the vocabulary",
        code=LOSS_SOFTMAX_OVER_TIME),

    # --- the captioner: training loss --------------------------------------------------
    bug("captioner_same_words_in_and_out", "CaptioningRNN",
        "captions[:, :-1], captions[:, 1:]", "captions[:, :-1], captions[:, :-1]",
        ALL_LOSSES,
        "predicted the word it reads instead of the next one"),
    bug("captioner_h0_zeros", "CaptioningRNN",
        "h0 = self.feature_projection(features.mean(dim=(2, 3)))",
        "h0 = torch.zeros(features.shape[0], self.output_projection.in_features, dtype=features.dtype)",
        RNN_CAPTIONER_LOSSES,
        "started the RNN from zeros: the image never reaches the loss"),
    bug("captioner_h0_unprojected", "CaptioningRNN",
        "h0 = self.feature_projection(features.mean(dim=(2, 3)))", "h0 = features.mean(dim=(2, 3))",
        RNN_CAPTIONER_LOSSES,
        "used the averaged features as h0 without feature_projection"),
    bug("captioner_h0_max_over_grid", "CaptioningRNN",
        "self.feature_projection(features.mean(dim=(2, 3)))", "self.feature_projection(features.amax(dim=(2, 3)))",
        RNN_CAPTIONER_LOSSES | {SAMPLE_RNN, SAMPLE_LSTM},
        "max-pooled the grid instead of averaging it (in forward and sample)", count=2),
    bug("captioner_no_ignore_index", "CaptioningRNN",
        "temporal_softmax_loss(scores, captions_out, ignore_index=self.ignore_index)",
        "temporal_softmax_loss(scores, captions_out)",
        ALL_LOSSES,
        "did not pass self.ignore_index, so the padding is trained on"),

    # --- the captioner: sampling -------------------------------------------------------
    bug("sample_always_feeds_start", "CaptioningRNN",
        "x = self.word_embedding(words)", "x = self.word_embedding(torch.full_like(words, self._start))",
        ALL_SAMPLES,
        "fed <START> at every step instead of the previously generated word"),
    bug("sample_no_null_after_end", "CaptioningRNN",
        "captions[:, t] = words.masked_fill(finished, self._null)", "captions[:, t] = words",
        ALL_SAMPLES,
        "kept writing words after <END> instead of <NULL>"),
    bug("sample_end_replaced_by_null", "CaptioningRNN",
        "            captions[:, t] = words.masked_fill(finished, self._null)\n"
        "            finished |= words == self._end",
        "            finished |= words == self._end\n"
        "            captions[:, t] = words.masked_fill(finished, self._null)",
        ALL_SAMPLES,
        "marked the caption finished before writing, so <END> itself becomes <NULL>"),
    bug("sample_lstm_cell_state_dropped", "CaptioningRNN",
        "h, c = self.rnn.step_forward(x, h, c)", "h, _ = self.rnn.step_forward(x, h, c)",
        tests(SAMPLE_LSTM),
        "threw the LSTM's new cell state away, so every step starts from c = 0"),
    bug("sample_attn_starts_like_lstm", "CaptioningRNN",
        "h = c = A.mean(dim=(2, 3))", "h = A.mean(dim=(2, 3))\n            c = torch.zeros_like(h)",
        tests(SAMPLE_ATTN),
        "started the attention LSTM from c0 = 0 instead of the mean of A"),
    bug("sample_attn_weights_of_new_h", "CaptioningRNN",
        "attn_weights_all[:, t] = weights.masked_fill(",
        "_, weights = dot_product_attention(h, A)\n                attn_weights_all[:, t] = weights.masked_fill(",
        tests(SAMPLE_ATTN),
        "stored the attention of the new h instead of the attention the step used (of prev h)"),
    bug("sample_attn_weights_after_end", "CaptioningRNN",
        "attn_weights_all[:, t] = weights.masked_fill(finished.view(N, 1, 1), 0)",
        "attn_weights_all[:, t] = weights",
        tests(SAMPLE_ATTN),
        "kept storing attention weights after <END> instead of leaving zeros"),

    # --- LSTM --------------------------------------------------------------------------
    Bug("lstm_gates_i_f_g_o", "LSTM", frozenset(all_tests_of("LSTM")),
        "split the activations in the order i, f, g, o instead of i, f, o, g",
        code=_with_lstm_gates(LSTM_GATES_I_F_G_O)),
    bug("lstm_h_from_prev_c", "LSTM",
        "next_h = o * torch.tanh(next_c)", "next_h = o * torch.tanh(prev_c)",
        all_tests_of("LSTM"),
        "squashed the previous cell state instead of the new one into h"),
    bug("lstm_c0_is_h0", "LSTM",
        "prev_h, prev_c = h0, torch.zeros_like(h0)", "prev_h, prev_c = h0, h0",
        tests(LSTM_FWD, LSTM_GRAD),
        "started the cell state from h0 instead of zeros"),
    bug("lstm_h0_ignored", "LSTM",
        "prev_h, prev_c = h0, torch.zeros_like(h0)", "prev_h, prev_c = torch.zeros_like(h0), torch.zeros_like(h0)",
        tests(LSTM_FWD, LSTM_GRAD),
        "started from h = 0, ignoring the given h0 (the image)"),

    # --- attention ---------------------------------------------------------------------
    bug("attention_softmax_over_batch", "dot_product_attention",
        "torch.softmax(scores, dim=1)", "torch.softmax(scores, dim=0)",
        all_tests_of("dot_product_attention"),
        "normalised the scores over the batch instead of over the grid"),
    bug("attention_not_scaled", "dot_product_attention",
        " / math.sqrt(H)", "",
        all_tests_of("dot_product_attention"),
        "left out the 1/sqrt(H) scaling of the scores"),
    bug("attention_scaled_by_H", "dot_product_attention",
        " / math.sqrt(H)", " / H",
        all_tests_of("dot_product_attention"),
        "scaled the scores by 1/H instead of 1/sqrt(H)"),

    # --- attention LSTM ----------------------------------------------------------------
    bug("attn_lstm_c0_zero", "AttentionLSTM",
        "prev_c = prev_h", "prev_c = torch.zeros_like(prev_h)",
        tests(ALSTM_FWD, ALSTM_GRAD),
        "started the cell state from zeros as in the plain LSTM, not from the mean of A"),
    bug("attn_lstm_h0_sum_of_A", "AttentionLSTM",
        "prev_h = A.mean(dim=(2, 3))", "prev_h = A.sum(dim=(2, 3))",
        tests(ALSTM_FWD, ALSTM_GRAD),
        "summed the grid instead of averaging it for h0 and c0"),
    bug("attn_lstm_attention_once", "AttentionLSTM",
        "        for x_t in x_proj.unbind(dim=1):\n            attn, _ = dot_product_attention(prev_h, A)\n",
        "        attn, _ = dot_product_attention(prev_h, A)\n        for x_t in x_proj.unbind(dim=1):\n",
        tests(ALSTM_FWD, ALSTM_GRAD),
        "computed the attention once from h0 instead of at every step from the previous h"),
    bug("attn_lstm_attention_queried_with_c", "AttentionLSTM",
        "dot_product_attention(prev_h, A)", "dot_product_attention(prev_c, A)",
        tests(ALSTM_FWD, ALSTM_GRAD),
        "queried the attention with the cell state instead of the hidden state"),
    bug("attn_lstm_Wh_for_attention", "AttentionLSTM",
        "attn.mm(self.Wattn)", "attn.mm(self.Wh)",
        all_tests_of("AttentionLSTM"),
        "multiplied the attention vector by Wh: Wattn is never used", count=2),
    bug("attn_lstm_step_no_bias", "AttentionLSTM",
        " + attn.mm(self.Wattn) + self.b", " + attn.mm(self.Wattn)",
        tests(ALSTM_STEP),  # forward adds b through its own input projection
        "forgot the bias in step_forward"),
]

# Bugs the grader does not grade as their entry says, id -> what happens (see the report).
MISSED: dict[str, str] = {}
