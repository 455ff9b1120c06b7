# The text source of the student notebook (percent format: `# %%` starts a cell).
# `make notebook` builds assignment/source/rnn_captioning/rnn_captioning.ipynb from it;
# edit this file, never the .ipynb. Directives the builder understands:
#   # %% [markdown]          a markdown cell (the leading "# " of each line is removed)
#   # %%                     a code cell, as written
#   # %% [imports]           a code cell: the reference module's imports, then the lines below
#   # %% [provided] A B ...  a read-only cell with definitions A, B, ... of solution/captioning.py
#   # %% [unit] NAME         the solution cell of graded unit NAME (its code comes from
#                            solution/captioning.py), followed by its autograded grade cell
# In code cells, UNIT_POINTS becomes {unit: its points} from autograder/points.toml.
# In markdown cells, OVERFIT_TARGETS[rnn] (lstm, attn) becomes that cell type's overfitting target,
# declared once in captioning_helpers.py (OVERFIT_TARGETS).
# Expected values in the checks were computed once with the reference solution on these
# fixed inputs; tests/test_notebook.py fails if the reference ever disagrees with them.

# %% [markdown]
# # Image captioning with recurrent networks
#
# In this assignment you build, from scratch in PyTorch, a model that writes a sentence
# about an image. A convolutional network (RegNet-X 400MF, trained on ImageNet) turns the
# image into a 4x4 grid of 400-dimensional features, and a recurrent network generates the
# caption one word at a time from those features.
#
# You will implement, in this order:
#
# 1. a vanilla RNN: one step and a whole sequence, forward and (by hand) backward;
# 2. word embeddings and a temporal softmax loss;
# 3. `CaptioningRNN`, which computes the training loss and samples captions;
# 4. an LSTM;
# 5. scaled dot-product attention over the 4x4 grid, and an attention LSTM.
#
# **Rules.**
# * Write your code in place of each `raise NotImplementedError()`, between its
#   `# YOUR CODE HERE` and the end of that function or method (a cell may hold several).
#   Do not rename functions, classes, arguments or parameters: the grader calls them by
#   name and loads weights into your model by name.
# * New tensors take the dtype and device of the inputs (`torch.zeros_like(x)`, or
#   `x.new_zeros(N, D)`): `torch.zeros(N, D)` is float32 on the CPU, and the grader, which
#   works in float64, counts a float32 output as wrong. The visible checks say so too. The
#   grader compares to 1e-10, so a float32 step anywhere inside costs the points as well.
# * Forward passes must let autograd through (no `.detach()`, `.item()` or `.numpy()` on the
#   way): the model trains through them, and the grader checks the gradients autograd
#   computes through your `rnn_step_forward`, `rnn_forward`, `step_forward`s and loss.
# * Do not use `torch.nn.RNN`, `LSTM`, `GRU`, their `*Cell`s, `nn.MultiheadAttention`,
#   `F.scaled_dot_product_attention`, or any other built-in recurrent cell, attention or
#   transformer (`torch.ops.aten...`, `torch.ao.nn...`): the point is to write them. Write
#   `rnn_step_backward` and `rnn_backward` by hand: autograd is switched off while they run.
#   The four vanilla RNN cells (`rnn_step_forward`, `rnn_step_backward`, `rnn_forward`,
#   `rnn_backward`) also run inside those backward passes, where autograd is off for the
#   running thread only, so they may not start threads (`threading`, `_thread`,
#   `concurrent.futures`, nor anything that starts one, such as `asyncio.to_thread`): a cell
#   that does loses its own unit's points (the reason names it), and the backward passes are
#   graded with the grader's version of it.
#   Graded cells also may not use what only serves to get around the grader: `torch._C`,
#   `torch.ops`, `torch.library`, `gc`, `inspect`, `ctypes`, `importlib` (or `pkgutil`,
#   `_imp`), `eval`, `exec`, `subprocess`, or changing `torch` itself (`torch.allclose =
#   ...`). The grader checks
#   every graded cell (mentions in comments, docstrings and strings do not count) and runs
#   your code with those built-ins switched off; a unit that uses one scores zero.
#   Everything else in `torch` may be used, `torch.nn.functional` included (`F.embedding`,
#   `F.one_hot`, `F.cross_entropy`, `F.softmax`, `torch.einsum`, ...).
# * The grader runs your code with the course's Python (3.11 or later) and torch: the
#   versions the set-up cell prints.
# * Only your solution cells are graded, each on its own, on hidden inputs, in a fresh
#   process. The provided cells are taken from the original assignment, so changes to them
#   are ignored. Your code may call the functions this notebook says it may (for example
#   `rnn_step_forward` inside `rnn_forward`, or `lstm_gates`), but must not rely on any other
#   variable defined elsewhere in the notebook.
# * A bug costs points only in its own unit. A unit that fails while a unit it relies on
#   fails its own tests (your `rnn_forward` calling a buggy `rnn_step_forward`, your
#   `rnn_step_backward` reading that function's cache) is graded again with the grader's
#   version of that unit in place of yours, and keeps the better result; the feedback says
#   so. This works when your step cache is laid out as `(x, prev_h, Wx, Wh, next_h)`;
#   otherwise the reason names the unit to fix first. If your backward pass does better with
#   the grader's forward pass than with yours (while yours passes its own tests), your
#   forward pass caches what your backward cannot use, and the forward pass loses its points.
#
# After each part, a cell of **visible checks** runs your code on fixed inputs and prints
# PASS or FAIL with the relative error against the expected values. Passing them is a good
# sign, not a guarantee: the grader uses other inputs, including a batch of one and
# sequences of length one.

# %% [markdown]
# ## Set-up
#
# The helpers (data loading, checks, gradient checking, training and plots) live in
# `captioning_helpers.py` next to this notebook. The notebook uses a GPU when there is one;
# the checks run on the CPU in float64 so that their results do not depend on your machine.
# On the CPU it uses one thread: the models are small, and one thread trains them as fast
# as several, and much faster on a machine shared with others (a JupyterHub).
#
# **Without internet** (or if the encoder cell below fails to download its weights), set
# `PRETRAINED_ENCODER = False` at the top of the next cell and run the notebook from there:
# the image encoder then has random weights instead of ImageNet's. Everything works the same
# way, but the sampled captions will not describe the images.

# %% [imports]
import platform

import matplotlib.pyplot as plt

import captioning_helpers as helpers
from captioning_helpers import (
    check_close,
    check_equal,
    compute_numeric_gradient,
    linspace_tensor,
    set_parameters_fixed,
    visible_check,
)

PRETRAINED_ENCODER = True  # set to False without internet: the encoder then has random weights

%matplotlib inline
helpers.seed_everything(0)
device = helpers.pick_device()
threads = helpers.limit_threads()
pretrained = helpers.use_pretrained_encoder(PRETRAINED_ENCODER)
print("Python", platform.python_version(), "| torch", torch.__version__, "| device:", device,
      "| CPU threads:", threads, "| encoder:", "ImageNet weights" if pretrained else "random weights (PRETRAINED_ENCODER = False)")

# %% [markdown]
# ## The data: a small subset of COCO
#
# `coco.pt` holds images of COCO 2017 resized to 112x112 and their captions, already turned
# into word indices:
#
# | key | shape | meaning |
# | --- | --- | --- |
# | `train_images`, `val_images` | uint8 (N_img, 3, 112, 112) | every image once |
# | `train_captions`, `val_captions` | int64 (N_cap, 17) | `<START>`, up to 15 words, `<END>`, then `<NULL>` padding |
# | `train_image_idxs`, `val_image_idxs` | int64 (N_cap,) | which image each caption describes |
# | `vocab` | dict | `idx_to_token` (a list) and `token_to_idx` (a dict) |
#
# Each image has five captions written by different people. Words seen fewer than twice in
# the training captions are replaced by `<UNK>`.

# %%
data = helpers.load_coco("coco.pt")
idx_to_word = data["vocab"]["idx_to_token"]
word_to_idx = data["vocab"]["token_to_idx"]
for key, value in data.items():
    if isinstance(value, torch.Tensor):
        print(f"{key:<18} {str(value.dtype):<12} {tuple(value.shape)}")
print("vocabulary size:", len(idx_to_word), "| first tokens:", idx_to_word[:8])

# The first caption of the first eight training images.
first_caption = torch.tensor([data["train_image_idxs"].tolist().index(i) for i in range(8)])
helpers.show_captioned_images(
    data["train_images"][:8],
    helpers.decode_captions(data["train_captions"][first_caption], idx_to_word),
    title="Training images and one of their captions",
)

# %% [markdown]
# ## The image encoder (provided)
#
# `ImageEncoder` wraps torchvision's RegNet-X 400MF without its classifier: a (N, 3, 112, 112)
# batch becomes (N, 400, 4, 4) features, one 400-vector per cell of a 4x4 grid over the image.
# It is frozen (never trained). The first run downloads its ImageNet weights (21 MB). If the
# download fails (no internet), set `PRETRAINED_ENCODER = False` in the set-up cell, run that
# cell again and go on from here: everything still runs, with captions that do not describe
# the images.

# %% [provided] CELL_TYPES ImageEncoder pretrained_weights_path _pretrained_state_dict

# %%
encoder = ImageEncoder(pretrained=pretrained).to(device)
features = encoder(data["train_images"][:8].to(device))
print("features:", tuple(features.shape))

# %% [markdown]
# ## 1. A vanilla RNN
#
# ### One step forward
#
# At every timestep a vanilla RNN reads an input $x_t \in \mathbb{R}^D$ and updates its
# hidden state $h \in \mathbb{R}^H$:
#
# $$h_t = \tanh(x_t W_x + h_{t-1} W_h + b), \qquad W_x \in \mathbb{R}^{D \times H},\;
# W_h \in \mathbb{R}^{H \times H},\; b \in \mathbb{R}^{H}.$$
#
# A minibatch of N examples is processed at once: $x$ is (N, D) and $h$ is (N, H).
# Implement `rnn_step_forward`; keep in `cache` whatever the backward pass will need.

# %% [unit] rnn_step_forward

# %%
N, D, H = 3, 10, 4
x = linspace_tensor((N, D), -0.4, 0.7)
prev_h = linspace_tensor((N, H), -0.2, 0.5)
Wx = linspace_tensor((D, H), -0.1, 0.9)
Wh = linspace_tensor((H, H), -0.3, 0.7)
b = linspace_tensor((H,), -0.2, 0.4)
expected_next_h = torch.tensor([
    [-0.5817208894, -0.5018203226, -0.4123277085, -0.314100984],
    [0.668546923, 0.7956237812, 0.8775555281, 0.9279596661],
    [0.9793450054, 0.9914421288, 0.9964669105, 0.9985435332],
], dtype=torch.float64)

with visible_check("rnn_step_forward"):
    next_h, _ = rnn_step_forward(x, prev_h, Wx, Wh, b)
    check_close("next_h", next_h, expected_next_h)

# %% [markdown]
# ### One step backward
#
# Write the backward pass by hand (no autograd). Given $\frac{\partial L}{\partial h_t}$,
# go back through the tanh first: with $a = x_t W_x + h_{t-1} W_h + b$,
#
# $$\frac{\partial L}{\partial a} = \frac{\partial L}{\partial h_t} \odot (1 - h_t^2),$$
#
# since $\tanh'(a) = 1 - \tanh^2(a)$. The gradients of $x_t$, $h_{t-1}$, $W_x$, $W_h$ and
# $b$ then follow from the matrix products; remember that $b$ is shared by the whole batch.
#
# The check compares your gradients with numeric ones, computed by centred finite
# differences $\frac{f(x + h) - f(x - h)}{2h}$ in float64. Expect relative errors around
# 1e-9 or smaller.

# %% [unit] rnn_step_backward

# %%
torch.manual_seed(231)
N, D, H = 4, 5, 6
x, prev_h = torch.randn(N, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)
Wx, Wh = torch.randn(D, H, dtype=torch.float64), torch.randn(H, H, dtype=torch.float64)
b, dnext_h = torch.randn(H, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)

with visible_check("rnn_step_backward"):
    step = lambda x, prev_h, Wx, Wh, b: rnn_step_forward(x, prev_h, Wx, Wh, b)[0]
    dx_num = compute_numeric_gradient(lambda v: step(v, prev_h, Wx, Wh, b), x, dnext_h)
    dprev_h_num = compute_numeric_gradient(lambda v: step(x, v, Wx, Wh, b), prev_h, dnext_h)
    dWx_num = compute_numeric_gradient(lambda v: step(x, prev_h, v, Wh, b), Wx, dnext_h)
    dWh_num = compute_numeric_gradient(lambda v: step(x, prev_h, Wx, v, b), Wh, dnext_h)
    db_num = compute_numeric_gradient(lambda v: step(x, prev_h, Wx, Wh, v), b, dnext_h)

    _, cache = rnn_step_forward(x, prev_h, Wx, Wh, b)
    dx, dprev_h, dWx, dWh, db = rnn_step_backward(dnext_h, cache)
    check_close("dx", dx, dx_num)
    check_close("dprev_h", dprev_h, dprev_h_num)
    check_close("dWx", dWx, dWx_num)
    check_close("dWh", dWh, dWh_num)
    check_close("db", db, db_num)

# %% [markdown]
# ### A whole sequence forward
#
# `rnn_forward` runs the RNN over a sequence $x$ of shape (N, T, D), starting from $h_0$, and
# returns every hidden state, (N, T, H). A loop over time is unavoidable (each step needs the
# previous one), but nothing else needs a loop. You may call your `rnn_step_forward` (and, in
# `rnn_backward`, your `rnn_step_backward`). Hint: the input projection $x_t W_x$ does not
# depend on $h$, so it can be computed for all timesteps at once.

# %% [unit] rnn_forward

# %%
N, T, D, H = 2, 3, 4, 5
x = linspace_tensor((N, T, D), -0.1, 0.3)
h0 = linspace_tensor((N, H), -0.3, 0.1)
Wx = linspace_tensor((D, H), -0.2, 0.4)
Wh = linspace_tensor((H, H), -0.4, 0.1)
b = linspace_tensor((H,), -0.7, 0.1)
expected_h = torch.tensor([
    [
        [-0.4207074942, -0.2727926124, -0.110749452, 0.05740408601, 0.222362507],
        [-0.3952580808, -0.2255466056, -0.04094539711, 0.1464941193, 0.3239731603],
        [-0.4230511116, -0.2422372755, -0.0428702695, 0.1599704463, 0.3501452527],
    ],
    [
        [-0.5585747447, -0.3906582466, -0.1919818177, 0.02378407632, 0.2373567088],
        [-0.271501986, -0.07088804273, 0.1356293887, 0.3309972767, 0.5015876838],
        [-0.5101482462, -0.3052442859, -0.0675520165, 0.1780639206, 0.4033304299],
    ],
], dtype=torch.float64)

with visible_check("rnn_forward"):
    h, _ = rnn_forward(x, h0, Wx, Wh, b)
    check_close("h", h, expected_h)

# %% [markdown]
# ### A whole sequence backward
#
# `rnn_backward` receives `dh`, the gradient of the loss with respect to each hidden state
# **from the loss only**. Each $h_t$ also feeds $h_{t+1}$, so going backward in time the
# gradient that reaches step $t$ is `dh[:, t]` plus what flows back from step $t+1$. The
# parameters are shared by all timesteps: their gradients are sums over time.

# %% [unit] rnn_backward

# %%
torch.manual_seed(231)
N, T, D, H = 2, 3, 4, 5
x, h0 = torch.randn(N, T, D, dtype=torch.float64), torch.randn(N, H, dtype=torch.float64)
Wx, Wh = torch.randn(D, H, dtype=torch.float64), torch.randn(H, H, dtype=torch.float64)
b, dout = torch.randn(H, dtype=torch.float64), torch.randn(N, T, H, dtype=torch.float64)

with visible_check("rnn_backward"):
    seq = lambda x, h0, Wx, Wh, b: rnn_forward(x, h0, Wx, Wh, b)[0]
    dx_num = compute_numeric_gradient(lambda v: seq(v, h0, Wx, Wh, b), x, dout)
    dh0_num = compute_numeric_gradient(lambda v: seq(x, v, Wx, Wh, b), h0, dout)
    dWx_num = compute_numeric_gradient(lambda v: seq(x, h0, v, Wh, b), Wx, dout)
    dWh_num = compute_numeric_gradient(lambda v: seq(x, h0, Wx, v, b), Wh, dout)
    db_num = compute_numeric_gradient(lambda v: seq(x, h0, Wx, Wh, v), b, dout)

    _, cache = rnn_forward(x, h0, Wx, Wh, b)
    dx, dh0, dWx, dWh, db = rnn_backward(dout, cache)
    check_close("dx", dx, dx_num)
    check_close("dh0", dh0, dh0_num)
    check_close("dWx", dWx, dWx_num)
    check_close("dWh", dWh, dWh_num)
    check_close("db", db, db_num)

# %% [markdown]
# ### The RNN as a module (provided)
#
# From here on, autograd differentiates the model, so your backward passes are not used by
# the captioner. (They still count: they are graded.) `RNN` wraps your forward functions in
# an `nn.Module` that owns $W_x$, $W_h$ and $b$.

# %% [provided] RNN

# %% [markdown]
# ## 2. Word embeddings and the loss
#
# ### Word embedding
#
# Words enter the network as indices in $[0, V)$. A word embedding maps each index to a
# learned vector: row $i$ of a matrix $W_{embed} \in \mathbb{R}^{V \times D}$. Implement the
# lookup for a whole (N, T) batch of indices, without a loop.

# %% [unit] WordEmbedding

# %%
V, D = 5, 3
embedding = WordEmbedding(V, D).double()
set_parameters_fixed(embedding)
words = torch.tensor([[0, 3, 1, 2], [2, 1, 0, 3]])
expected_vectors = torch.tensor([
    [
        [0.9635581854, 0.8084964038, 0.04158066243],
        [0.02477542545, -0.7676858098, -0.9791777292],
        [-0.7568024953, -0.9824526126, -0.4646021794],
        [0.4048499206, 0.967919672, 0.7984871126],
    ],
    [
        [0.4048499206, 0.967919672, 0.7984871126],
        [-0.7568024953, -0.9824526126, -0.4646021794],
        [0.9635581854, 0.8084964038, 0.04158066243],
        [0.02477542545, -0.7676858098, -0.9791777292],
    ],
], dtype=torch.float64)

with visible_check("WordEmbedding"):
    check_close("vectors", embedding(words), expected_vectors)

# %% [markdown]
# ### Temporal softmax loss
#
# At every timestep the model scores each word of the vocabulary, $x \in \mathbb{R}^{N
# \times T \times V}$, and the loss is the cross-entropy of the softmax of the scores with
# the ground-truth word $y_{n,t}$, **summed over time and averaged over the batch**:
#
# $$L = \frac{1}{N} \sum_{n=1}^{N} \sum_{t=1}^{T} m_{n,t}
# \left(-x_{n,t,y_{n,t}} + \log \sum_{v} e^{x_{n,t,v}}\right),$$
#
# where $m_{n,t} = 0$ at the timesteps whose target is `ignore_index` (the `<NULL>` padding
# after a short caption) and 1 elsewhere. `torch.nn.functional.cross_entropy` is allowed.
# Mind the reduction: it is not a mean over every timestep.

# %% [unit] temporal_softmax_loss

# %%
with visible_check("temporal_softmax_loss"):
    # All scores zero: every word has probability 1/V, so the loss is T * log(V) exactly.
    N, T, V = 3, 4, 10
    y = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [9, 0, 1, 2]])
    loss = temporal_softmax_loss(torch.zeros(N, T, V, dtype=torch.float64), y)
    check_close("uniform scores", loss, torch.tensor(T * math.log(V), dtype=torch.float64))

    scores = linspace_tensor((2, 3, 4), -1.0, 1.0)
    y = torch.tensor([[1, 0, 2], [3, 3, 0]])
    expected_loss = torch.tensor(4.173045619, dtype=torch.float64)
    expected_loss_ignoring_0 = torch.tensor(2.65159563, dtype=torch.float64)
    check_close("loss", temporal_softmax_loss(scores, y), expected_loss)
    check_close("loss_ignoring_0", temporal_softmax_loss(scores, y, ignore_index=0),
                expected_loss_ignoring_0)

# %% [markdown]
# ## 3. The captioning model
#
# `CaptioningRNN` puts the pieces together. Its layers are created for you in `__init__`
# (keep their names: the grader loads weights by name):
#
# * `image_encoder` turns images into features $F \in \mathbb{R}^{N \times 400 \times 4 \times 4}$;
# * `feature_projection`, a linear layer $400 \to H$. For `rnn` and `lstm` the initial hidden
#   state is the projection of the features averaged over the grid: $h_0 = W_{proj}\,
#   \mathrm{mean}_{grid}(F) + b_{proj}$. (For `attn`, every grid cell is projected; see part 5.)
# * `word_embedding`, then `rnn` (your RNN, LSTM or attention LSTM);
# * `output_projection`, a linear layer $H \to V$ giving word scores at every timestep.
#
# **Training (`forward`)** uses *teacher forcing*: the model reads the ground-truth caption
# and predicts it shifted by one word. With `captions` of shape (N, T), the input is
# `captions[:, :-1]` (starting with `<START>`) and the target is `captions[:, 1:]` (ending
# with `<END>` or padding). The loss is your temporal softmax loss with `self.ignore_index`.
#
# **Sampling (`sample`)** is greedy: start from `<START>` and the initial state, and at each
# step feed back the highest-scoring word of the previous step. Once a caption has produced
# `<END>`, write `<NULL>` at its remaining positions (and, for attention, leave its weights
# at zero). `sample` receives images, not captions, so it cannot use teacher forcing.
#
# The cell types `lstm` and `attn` come later: write the `rnn` case now and the others in
# parts 4 and 5 (they need `self.rnn.step_forward(x, prev_h, prev_c)` and, for attention,
# `dot_product_attention`).

# %% [unit] CaptioningRNN

# %%
# A tiny vocabulary, fixed weights and fixed image features (features of shape
# (N, 400, 4, 4) pass through the image encoder unchanged).
tiny_vocab = {w: i for i, w in enumerate(["<NULL>", "<START>", "<END>", "a", "cat", "on", "mat", "dog"])}
tiny_features = linspace_tensor((2, 400, 4, 4), -1.0, 1.0)
tiny_captions = torch.tensor([[1, 3, 4, 5, 3, 6, 2], [1, 3, 7, 2, 0, 0, 0]])


def tiny_captioner(cell_type, end_bias=0.0):
    """A CaptioningRNN on tiny_vocab with every trainable weight set to fixed values;
    end_bias raises the score of <END> so that sampled captions end early."""
    model = CaptioningRNN(tiny_vocab, wordvec_dim=6, hidden_dim=5, cell_type=cell_type,
                          image_encoder_pretrained=False, ignore_index=0).double()
    set_parameters_fixed(model)
    with torch.no_grad():
        model.output_projection.bias[tiny_vocab["<END>"]] += end_bias
    return model


expected_loss_rnn = torch.tensor(13.06175035, dtype=torch.float64)
expected_sample_rnn = torch.tensor([
    [6, 4, 4, 4, 4, 4, 4, 4],
    [5, 4, 5, 4, 5, 4, 4, 4],
])
with visible_check("CaptioningRNN (rnn)"):
    model = tiny_captioner("rnn")
    check_close("loss_rnn", model(tiny_features, tiny_captions), expected_loss_rnn)
    check_equal("sample_rnn", model.sample(tiny_features, max_length=8), expected_sample_rnn)

# %% [markdown]
# ### Overfit a small slice of the data (RNN)
#
# A correct model can memorise a handful of captions. The cell below trains it on the first
# caption of each of 50 training images (one caption per image: an image with five different
# captions cannot be memorised), with Adam and the recipe it prints, then samples a caption
# from each of the 50 images.
#
# **Target (RNN):** the model memorises the slice, that is, it gives back all 50 captions word
# for word, and the loss over the 50 captions ends below OVERFIT_TARGETS[rnn]. With this recipe a
# correct implementation meets both; the cell prints both figures. (On a CPU this training
# takes about half a minute, the LSTM's and the attention model's a little longer.)

# %%
small_images, small_captions = helpers.overfit_slice(data)
TRAINING = dict(helpers.OVERFIT_RECIPE, device=device)
print("training recipe:", helpers.OVERFIT_RECIPE)

torch.manual_seed(0)
rnn_model = CaptioningRNN(word_to_idx, cell_type="rnn", ignore_index=word_to_idx["<NULL>"],
                          image_encoder_pretrained=pretrained)
losses = {"rnn": helpers.train_captioner(rnn_model, small_images, small_captions, desc="rnn", **TRAINING)}
helpers.report_overfit("rnn", rnn_model, small_images, small_captions)
helpers.plot_losses(losses)

# %% [markdown]
# ## 4. Long short-term memory
#
# A vanilla RNN's gradients shrink or explode through long sequences. An LSTM keeps a second
# state, the cell $c$, updated additively. At each step it computes an activation vector
# $a = x_t W_x + h_{t-1} W_h + b \in \mathbb{R}^{4H}$ and splits it into four blocks of $H$,
# in this order: $a_i, a_f, a_o, a_g$. Then
#
# $$i = \sigma(a_i),\quad f = \sigma(a_f),\quad o = \sigma(a_o),\quad g = \tanh(a_g),$$
# $$c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t),$$
#
# with $\sigma$ the sigmoid. Write the gate computations once, in `lstm_gates`, and use it in
# `LSTM.step_forward` and `LSTM.forward` (and later in the attention LSTM). The sequence
# starts from the given $h_0$ and from $c_0 = 0$. Autograd computes the backward pass.

# %% [unit] LSTM

# %%
with visible_check("LSTM"):
    N, D, H = 3, 4, 5
    lstm = LSTM(D, H).double()
    set_parameters_fixed(lstm)
    x = linspace_tensor((N, D), -0.4, 1.2)
    prev_h = linspace_tensor((N, H), -0.3, 0.7)
    prev_c = linspace_tensor((N, H), -0.4, 0.9)
    expected_next_h = torch.tensor([
        [-0.3278933251, -0.1767105179, 0.1913566806, 0.258900146, 0.09765081643],
        [0.0226954812, 0.2545314812, 0.2153187022, 0.1092671459, -0.007315528658],
        [0.3195241571, 0.2191481613, 0.05973606249, 0.01066743138, 0.2010128666],
    ], dtype=torch.float64)
    expected_next_c = torch.tensor([
        [-0.4694984274, -0.2042372627, 0.2457186028, 0.6987443297, 0.75154325],
        [0.02889339916, 0.4217464317, 0.6990097401, 0.5651652134, -0.02783790177],
        [0.412314926, 0.9063464584, 1.129091513, 0.1199854987, 0.5330653353],
    ], dtype=torch.float64)
    next_h, next_c = lstm.step_forward(x, prev_h, prev_c)
    check_close("next_h", next_h, expected_next_h)
    check_close("next_c", next_c, expected_next_c)

    N, T, D, H = 2, 3, 5, 4
    lstm = LSTM(D, H).double()
    set_parameters_fixed(lstm, scale=0.5)
    x = linspace_tensor((N, T, D), -0.4, 0.6)
    h0 = linspace_tensor((N, H), -0.4, 0.8)
    expected_hn = torch.tensor([
        [
            [0.03605674966, -0.03781434988, -0.1291899733, -0.1400576039],
            [0.07980168286, -0.02187681846, -0.1693321647, -0.241982215],
            [0.1144412869, -0.002691988389, -0.1749412516, -0.2726759684],
        ],
        [
            [0.07254873458, 0.04815523552, -0.001343099423, -0.06935225165],
            [0.1137570214, 0.06467745927, -0.03591485933, -0.1546638563],
            [0.1468087767, 0.08408411914, -0.04094210202, -0.1849720037],
        ],
    ], dtype=torch.float64)
    check_close("hn", lstm(x, h0), expected_hn)

    # Autograd through your LSTM against numeric gradients (both use your forward pass, so
    # this checks that nothing in it breaks autograd, such as an in-place write or a detach).
    dout = linspace_tensor((N, T, H), -1.0, 1.0)
    x_leaf = x.clone().requires_grad_(True)
    (lstm(x_leaf, h0) * dout).sum().backward()
    check_close("dx (autograd vs numeric)", x_leaf.grad,
                compute_numeric_gradient(lambda v: lstm(v, h0).detach(), x, dout))

# %% [markdown]
# Now write the `lstm` case of `CaptioningRNN.forward` and `CaptioningRNN.sample` (in the
# cell of part 3; run it again), then check it and overfit the small slice with an LSTM.
#
# **Target (LSTM):** as for the RNN, with the same recipe: all 50 captions memorised, and a
# final loss below OVERFIT_TARGETS[lstm]. The LSTM is the slowest of the three to learn to
# tell the images apart: for hundreds of epochs its loss stays high while it learns the
# words that most captions share, then it falls.

# %%
expected_loss_lstm = torch.tensor(8.213270627, dtype=torch.float64)
expected_sample_lstm = torch.tensor([
    [4, 2, 0, 0, 0, 0, 0, 0],
    [2, 0, 0, 0, 0, 0, 0, 0],
])
with visible_check("CaptioningRNN (lstm)"):
    model = tiny_captioner("lstm", end_bias=1.5)
    check_close("loss_lstm", model(tiny_features, tiny_captions), expected_loss_lstm)
    check_equal("sample_lstm", model.sample(tiny_features, max_length=8), expected_sample_lstm)

# %%
torch.manual_seed(0)
lstm_model = CaptioningRNN(word_to_idx, cell_type="lstm", ignore_index=word_to_idx["<NULL>"],
                           image_encoder_pretrained=pretrained)
losses["lstm"] = helpers.train_captioner(lstm_model, small_images, small_captions, desc="lstm", **TRAINING)
helpers.report_overfit("lstm", lstm_model, small_images, small_captions)
helpers.plot_losses(losses)

# %% [markdown]
# ## 5. Attention
#
# ### Scaled dot-product attention
#
# Averaging the feature grid throws away *where* things are. With attention, the model
# chooses at every step which grid cells to look at. Let $A \in \mathbb{R}^{H \times 16}$ be
# the projected features of the 16 cells of one image and $h \in \mathbb{R}^H$ the previous
# hidden state (the query). Then
#
# $$M = \mathrm{softmax}\left(\frac{h^\top A}{\sqrt{H}}\right) \in \mathbb{R}^{16},
# \qquad \mathrm{attn} = A\, M \in \mathbb{R}^H .$$
#
# The scaling by $1/\sqrt{H}$ keeps the scores' spread independent of $H$. Implement it for
# a batch: `prev_h` is (N, H), `A` is (N, H, 4, 4); return the attention vectors (N, H) and
# the weights reshaped to (N, 4, 4). Use batched matrix products, no loops.

# %% [unit] dot_product_attention

# %%
N, H = 2, 5
prev_h = linspace_tensor((N, H), -0.4, 0.6)
A = linspace_tensor((N, H, 4, 4), -0.4, 1.8)
expected_attn = torch.tensor([
    [-0.2978434383, -0.0764597905, 0.1449238573, 0.3663075051, 0.5876911529],
    [0.8141264342, 1.035510082, 1.25689373, 1.478277378, 1.699661025],
], dtype=torch.float64)
expected_attn_weights = torch.tensor([
    [
        [0.06511126274, 0.06475411301, 0.06439892233, 0.06404567996],
        [0.06369437519, 0.06334499741, 0.06299753605, 0.06265198058],
        [0.06230832057, 0.0619665456, 0.06162664535, 0.06128860953],
        [0.06095242791, 0.06061809031, 0.06028558664, 0.05995490682],
    ],
    [
        [0.05717141848, 0.05784356888, 0.05852362159, 0.05921166951],
        [0.05990780665, 0.0606121281, 0.06132473008, 0.06204570995],
        [0.06277516621, 0.0635131985, 0.06425990766, 0.0650153957],
        [0.06577976583, 0.06655312246, 0.06733557127, 0.06812721913],
    ],
], dtype=torch.float64)

with visible_check("dot_product_attention"):
    attn, attn_weights = dot_product_attention(prev_h, A)
    check_close("attn", attn, expected_attn)
    check_close("attn_weights", attn_weights, expected_attn_weights)

# %% [markdown]
# ### The attention LSTM
#
# The attention LSTM adds the attention vector to the activation of every step,
#
# $$a = x_t W_x + h_{t-1} W_h + \mathrm{attn}_t W_{attn} + b,$$
#
# where $\mathrm{attn}_t$ is `dot_product_attention(h_{t-1}, A)`; the gates are those of the
# LSTM (`lstm_gates`). There is no separate $h_0$: both $h_0$ and $c_0$ are the mean of $A$
# over the grid.

# %% [unit] AttentionLSTM

# %%
with visible_check("AttentionLSTM"):
    N, D, H = 3, 4, 5
    attn_lstm = AttentionLSTM(D, H).double()
    set_parameters_fixed(attn_lstm)
    x = linspace_tensor((N, D), -0.4, 1.2)
    prev_h = linspace_tensor((N, H), -0.3, 0.7)
    prev_c = linspace_tensor((N, H), -0.4, 0.9)
    attn = linspace_tensor((N, H), 0.6, 1.8)
    expected_next_h = torch.tensor([
        [-0.2207033666, -0.1663860482, -0.02563678747, 0.09518339148, 0.1034579342],
        [0.2112079681, 0.09942931811, -0.03878242721, -0.02456446214, 0.08767632039],
        [0.1690283098, 0.03443999781, -0.00400019121, 0.2215269213, 0.5605601588],
    ], dtype=torch.float64)
    expected_next_c = torch.tensor([
        [-0.4460661514, -0.2783961451, -0.04179440419, 0.1819434537, 0.250961674],
        [0.6591388332, 0.5184455974, -0.1572540966, -0.05021927277, 0.1187948943],
        [0.9432893979, 1.153988455, -0.0621187692, 0.5385898602, 0.7090177793],
    ], dtype=torch.float64)
    next_h, next_c = attn_lstm.step_forward(x, prev_h, prev_c, attn)
    check_close("next_h", next_h, expected_next_h)
    check_close("next_c", next_c, expected_next_c)

    N, T, D, H = 2, 3, 5, 4
    attn_lstm = AttentionLSTM(D, H).double()
    set_parameters_fixed(attn_lstm, scale=0.5)
    x = linspace_tensor((N, T, D), -0.4, 0.6)
    A = linspace_tensor((N, H, 4, 4), -0.4, 1.8)
    expected_hn = torch.tensor([
        [
            [-0.1369983121, -0.1141963789, -0.001345073115, 0.1640176747],
            [-0.09734927468, -0.1204633313, -0.0615838031, 0.08328687877],
            [-0.06973239308, -0.09917291301, -0.06191043998, 0.04205705293],
        ],
        [
            [0.23267775, 0.2755018884, 0.3015706736, 0.3425580887],
            [0.1781359243, 0.2153445232, 0.2193860882, 0.168087333],
            [0.1625520054, 0.1718507492, 0.1278417633, 0.02219595261],
        ],
    ], dtype=torch.float64)
    check_close("hn", attn_lstm(x, A), expected_hn)

# %% [markdown]
# For the `attn` cell type of `CaptioningRNN`, project every grid cell of the features with
# `feature_projection` (the provided `self._project_grid` does it) to get $A$ of shape
# (N, H, 4, 4); the attention LSTM starts from its mean. In `sample`, compute the attention
# of each step yourself (`dot_product_attention`), call `self.rnn.step_forward(x, h, c, attn)`,
# and store the weights in `attn_weights_all`. Write that case now, then check and train it.
#
# **Target (attention):** all 50 captions memorised, and a final loss below
# OVERFIT_TARGETS[attn], with the same recipe.

# %%
expected_loss_attn = torch.tensor(9.429478734, dtype=torch.float64)
expected_sample_attn = torch.tensor([
    [1, 1, 1, 1, 1, 1, 1, 1],
    [4, 4, 4, 3, 3, 3, 3, 3],
])
with visible_check("CaptioningRNN (attn)"):
    model = tiny_captioner("attn")
    check_close("loss_attn", model(tiny_features, tiny_captions), expected_loss_attn)
    sampled, weights = model.sample(tiny_features, max_length=8)
    check_equal("sample_attn", sampled, expected_sample_attn)
    check_close("attention weights sum to 1", weights.sum(dim=(2, 3))[sampled != 0],
                torch.ones(int((sampled != 0).sum()), dtype=torch.float64))

# %%
torch.manual_seed(0)
attn_model = CaptioningRNN(word_to_idx, cell_type="attn", ignore_index=word_to_idx["<NULL>"],
                           image_encoder_pretrained=pretrained)
losses["attn"] = helpers.train_captioner(attn_model, small_images, small_captions, desc="attn", **TRAINING)
helpers.report_overfit("attn", attn_model, small_images, small_captions)
helpers.plot_losses(losses)

# %% [markdown]
# ## 6. What the models say
#
# Captions sampled by each model for four of the training images it memorised and four
# validation images it never saw. Trained on 50 captions, the models cannot generalise: expect
# memorised captions on training images and plausible-sounding nonsense on validation images.

# %%
train_show = small_images[:4]
val_show = data["val_images"][:4]
for name, model in [("rnn", rnn_model), ("lstm", lstm_model), ("attn", attn_model)]:
    model.eval()
    for split, images in [("train", train_show), ("val", val_show)]:
        sampled = model.sample(images.to(device))
        sampled = sampled[0] if isinstance(sampled, tuple) else sampled
        helpers.show_captioned_images(images, helpers.decode_captions(sampled, idx_to_word),
                                      title=f"{name}: {split} images")

# %% [markdown]
# ### Where the attention model looks
#
# For each word the attention model generated, the colour over the image shows the weight
# of each cell of the 4x4 grid: bright cells are those it attended to. All words share the
# colour bar's scale, on which 1/16 is a uniform attention (every cell alike). With the
# random encoder of `PRETRAINED_ENCODER = False` the maps mean little.

# %%
for split, image in [("train", small_images[0]), ("val", data["val_images"][0])]:
    sampled, weights = attn_model.sample(image[None].to(device))
    words = helpers.decode_captions(sampled[0], idx_to_word).split()
    helpers.show_attention(image, words, weights[0, : len(words)],
                           title=f"attn: where it looked, {split} image")

# %% [markdown]
# ## Submitting
#
# 1. Restart the kernel and run all cells (*Kernel > Restart & Run All*), so that every
#    result comes from the code as it is now.
# 2. Run the cell below: it lists every unit and whether its visible checks passed.
# 3. Save the notebook and submit `rnn_captioning.ipynb` only, under its original name.
#
# The grader runs each of your solution cells on its own, on inputs you have not seen, and
# compares with the reference implementation; it also checks your hand-written gradients
# numerically. Visible checks that pass here are a necessary condition, not a sufficient one.

# %%
helpers.check_summary(UNIT_POINTS);
