# %% [markdown]
# # Softmax regression, section by section (D2L §4.1)
#
# A walkthrough of the source text with `softmax_jax`'s public API only (`import softmax_jax as
# sj`). It is a jupytext "percent" script: plain Python, run it with
#
#     python -m experiments.walkthrough        # from the repository root (or after pip install .)
#
# or open it in Jupyter through jupytext as a notebook. Every cell checks what it shows with an
# `assert`, and the test suite runs the whole file (`tests/test_walkthrough.py`), so the walkthrough
# cannot drift from the library. It takes a few seconds on a CPU.

# %%
import math

import jax
import jax.numpy as jnp
import numpy as np

import softmax_jax as sj


def show(a) -> str:
  """An array as text, 4 decimals."""
  return np.array2string(np.asarray(a), precision=4, suppress_small=True)

# %% [markdown]
# ## §4.1.1 Classification: 2×2 images of cats, chickens and dogs
#
# The text's running example: each input is a 2×2 grayscale image, so its four pixel values are
# four features $x_1, \dots, x_4$, and each image shows one of three animals. `sj.data.load("toy")`
# generates such a data set from a seed: one mean image per class plus pixel noise.

# %%
toy = sj.data.load("toy")
print(f"classes {toy.class_names}; image shape {toy.image_shape}; "
      f"train {toy.x_train.shape}, test {toy.x_test.shape}")
first = toy.x_train[0].reshape(toy.image_shape)
print(f"the first training image, a {toy.class_names[toy.y_train[0]]}:\n{show(first)}")
assert toy.class_names == ("cat", "chicken", "dog")
assert toy.image_shape == (2, 2) and toy.num_features == 4 and toy.num_classes == 3
assert toy.x_train.shape == (300, 4) and toy.y_train.shape == (300,)
assert np.all((toy.x_train >= 0) & (toy.x_train <= 1))  # grayscale intensities

# %% [markdown]
# ### One-hot labels
#
# Coding the classes as the integers {1, 2, 3} would give them an order they do not have. A
# one-hot vector has one component per class, 1 for the example's class and 0 elsewhere: cat is
# (1, 0, 0), chicken (0, 1, 0) and dog (0, 0, 1). `sj.CategoryEncoder` learns the categories of
# string data in `fit` (sorted, as scikit-learn's `OneHotEncoder` does); using it before `fit` —
# the mistake in the text's snippet — is an error that says what to do.

# %%
animals = ["cat", "chicken", "dog", "cat", "dog"]
encoder = sj.CategoryEncoder("animal")
try:
  encoder.transform(animals)
  raise AssertionError("transform before fit must fail")
except RuntimeError as e:
  print(f"before fit: {e}")
Y_animals = encoder.fit(animals).transform(animals)
print(encoder.feature_names)
print(Y_animals)
assert encoder.feature_names == ("animal_cat", "animal_chicken", "animal_dog")
np.testing.assert_array_equal(Y_animals, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]])
assert encoder.inverse_transform(Y_animals) == animals

# The same rows from integer class ids:
ids = encoder.encode(animals)
print(f"class ids {ids.tolist()}")
np.testing.assert_array_equal(sj.one_hot(ids, 3), Y_animals)
Y_toy = sj.one_hot(toy.y_train, toy.num_classes)
assert Y_toy.shape == (300, 3) and np.all(Y_toy.sum(axis=1) == 1)

# %% [markdown]
# ### The linear model: one affine function per class
#
# With 4 features and 3 classes the model needs 3 affine functions of the inputs:
# $o_1 = x_1 w_{11} + \dots + x_4 w_{41} + b_1$, and likewise $o_2$ and $o_3$ — 12 weights and
# 3 biases. In vector form $\mathbf{o} = \mathbf{x} \mathbf{W} + \mathbf{b}$ with $\mathbf{W}$ of
# shape 4×3 (the text writes the transposed 3×4, $\mathbf{W}\mathbf{x}$). Every output depends on
# every input: a fully connected layer.

# %%
params = sj.init_params(jax.random.key(0), toy.num_features, toy.num_classes)
W, b = params
print(f"W {W.shape}, b {b.shape}: {W.size} weights + {b.size} biases")
assert W.shape == (4, 3) and b.shape == (3,)
assert W.size == 12 and b.size == 3

x = toy.x_train[0]
o = sj.logits(params, x)  # one example: o = xW + b
print(f"logits of the first image: {show(o)}")
assert o.shape == (3,)
np.testing.assert_allclose(o, x @ W + b, rtol=1e-6)
# o_1 written out as the text does, one weight per pixel:
o_1 = sum(x[i] * W[i, 0] for i in range(4)) + b[0]
np.testing.assert_allclose(o[0], o_1, rtol=1e-5)

# %% [markdown]
# ### Vectorization
#
# For a minibatch $\mathbf{X}$ of $n$ examples (one per row) the logits are one matrix product,
# $\mathbf{O} = \mathbf{X}\mathbf{W} + \mathbf{b}$, the bias broadcast over the rows. `sj.logits` is
# written for one example and `jax.vmap`-ped over the batch, which gives exactly that product.

# %%
X = jnp.asarray(toy.x_train[:8])
O = sj.logits(params, X)
assert O.shape == (8, 3)
np.testing.assert_allclose(O, X @ W + b[None, :], rtol=1e-5)
np.testing.assert_allclose(O[3], sj.logits(params, X[3]), rtol=1e-6)
print(f"O = XW + b for a batch of {X.shape[0]}: shape {O.shape}")

# %% [markdown]
# ### Softmax
#
# Logits are not probabilities: they can be negative and need not sum to 1. The softmax
# exponentiates and normalizes, $\hat y_j = \exp(o_j) / \sum_k \exp(o_k)$, giving non-negative
# outputs that sum to 1. It keeps the order of the logits, so the most likely class is the
# argmax of the logits and `sj.predict` needs no softmax. `sj.softmax` shifts by the maximum, so
# even logits of 1e4 do not overflow; its temperature $T$ is Gibbs' $\exp(-E/kT)$ (§4.1.5):
# $T \to 0$ approaches the one-hot of the argmax, large $T$ the uniform distribution.

# %%
logits_example = jnp.array([2.0, -1.0, 0.5])
p = sj.softmax(logits_example)
print(f"softmax({show(logits_example)}) = {show(p)}")
assert np.all(p >= 0) and math.isclose(float(p.sum()), 1.0, rel_tol=1e-6)
np.testing.assert_allclose(p, jnp.exp(logits_example) / jnp.exp(logits_example).sum(), rtol=1e-6)
assert jnp.argmax(p) == jnp.argmax(logits_example) == 0

P = sj.predict_proba(params, X)
np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
np.testing.assert_array_equal(sj.predict(params, X), jnp.argmax(P, axis=1))

big = sj.softmax(jnp.array([1e4, 0.0, -1e4]))
assert np.all(np.isfinite(big)) and big[0] == 1.0  # exp(1e4) alone would be inf
cold, hot = (sj.softmax(logits_example, temperature=t) for t in (0.01, 100.0))
print(f"T = 0.01: {show(cold)}; T = 100: {show(hot)}")
assert cold[0] > 0.999 and float(jnp.max(jnp.abs(hot - 1 / 3))) < 0.02

# %% [markdown]
# ## §4.1.2 The loss: log-likelihood and cross-entropy
#
# Maximizing the likelihood of the labels under the model's probabilities is minimizing the
# negative log-likelihood, a sum over examples of
# $l(\mathbf{y}, \hat{\mathbf{y}}) = -\sum_j y_j \log \hat y_j$. With a one-hot $\mathbf{y}$ only
# the label's term is left: $-\log \hat y_{\text{label}}$. It is at least 0, and 0 only if the
# label gets probability 1, which no finite logits give. `sj.cross_entropy` takes the logits (never
# the probabilities, whose log could underflow) and class ids or one-hot/probability rows.

# %%
y_ids = jnp.asarray(toy.y_train[:8])
Y8 = sj.one_hot(y_ids, 3)
losses = sj.cross_entropy(O, y_ids)
print(f"per-example losses: {show(losses)}")
np.testing.assert_allclose(losses, -jnp.sum(Y8 * jnp.log(P), axis=1), rtol=1e-5)
assert np.all(losses > 0)

# Soft labels: the label may be any distribution, e.g. (0.1, 0.2, 0.7); the loss is then the
# expected loss over that distribution of labels: Σ_j 0.1/0.2/0.7 × the loss of label j.
soft = jnp.array([0.1, 0.2, 0.7])
loss_of_each_label = sj.cross_entropy(jnp.stack([logits_example] * 3), jnp.arange(3))
soft_loss = sj.cross_entropy(logits_example, soft)
np.testing.assert_allclose(soft_loss, jnp.dot(soft, loss_of_each_label), rtol=1e-6)
print(f"soft-label loss {float(soft_loss):.4f} = the expected loss over the labels")

# %% [markdown]
# ### Softmax and its derivative
#
# Substituting the softmax into the loss gives $l = \log \sum_k \exp(o_k) - \sum_j y_j o_j$, and
# its derivative with respect to a logit is
# $\partial l / \partial o_j = \mathrm{softmax}(\mathbf{o})_j - y_j$: what the model predicts minus
# what happened, as in linear regression. Check it against automatic differentiation, and against
# `sj.cross_entropy_grad`, the closed form that the loss's backward pass evaluates.

# %%
y_one = jnp.array([0.0, 0.0, 1.0])  # the label "dog"
autodiff = jax.grad(lambda o: sj.cross_entropy(o, y_one))(logits_example)
closed = sj.softmax(logits_example) - y_one
print(f"jax.grad: {show(autodiff)}; softmax(o) - y: {show(closed)}")
np.testing.assert_allclose(autodiff, closed, rtol=1e-6, atol=1e-7)
np.testing.assert_allclose(sj.cross_entropy_grad(logits_example, jnp.array(2)), closed, rtol=1e-6)
# The same for a whole batch, with respect to the weights: dL/dW = Xᵀ(softmax(O) − Y) / n.
grad_W = jax.grad(lambda p: sj.cross_entropy(sj.logits(p, X), y_ids, reduction="mean"))(params).W
np.testing.assert_allclose(grad_W, X.T @ (P - Y8) / 8, rtol=1e-4, atol=1e-7)

# %% [markdown]
# ### Training: minibatch SGD on real digits
#
# The toy shows the pieces; real 8×8 handwritten digits (64 features, 10 classes, bundled with
# scikit-learn) show them learning. `sj.train.fit` runs minibatch SGD, one `lax.scan` an epoch,
# and at every step checks the autodiff gradient against the closed form
# $\mathbf{X}^\top(\mathrm{softmax}(\mathbf{O}) - \mathbf{Y})/n$. Five epochs take a second or
# two; `python -m experiments.train` trains 200 of them, to 0.961 test accuracy.

# %%
digits = sj.data.load("digits")
state, history = sj.train.fit(digits, epochs=5, batch_size=32, learning_rate=0.5)
for record in history:
  print(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, test loss "
        f"{record['test_loss']:.4f}, test accuracy {record['test_accuracy']:.4f}")
final_accuracy = history[-1]["test_accuracy"]
assert state.params.W.shape == (64, 10)  # 640 weights + 10 biases: O(dq) parameters (§4.1.4)
assert history[-1]["train_loss"] < history[0]["train_loss"]
assert final_accuracy > 0.9, final_accuracy
assert max(r["grad_check_max_rel_diff"] for r in history) < 1e-4  # closed form = autodiff
test_eval = sj.train.evaluate(state.params, digits.x_test, digits.y_test)
np.testing.assert_allclose(test_eval["accuracy"], final_accuracy)

# %% [markdown]
# ## §4.1.3 Information theory: entropy, surprisal, cross-entropy
#
# The entropy $H[P] = -\sum_j P(j) \log P(j)$ is the least average number of nats (natural log) or
# bits (log base 2) needed to encode draws from $P$; one nat is $1/\log 2 \approx 1.44$ bits. The
# surprisal of an outcome of probability $P(j)$ is $-\log P(j)$, and the entropy is its
# expectation. The cross-entropy $H(P, Q) = -\sum_j P(j)\log Q(j)$ is the expected surprisal of an
# observer who believes $Q$ while the data come from $P$; it is smallest, $H(P)$, when $Q = P$,
# and the gap is the KL divergence.

# %%
uniform = jnp.full(3, 1 / 3)
h_nats, h_bits = sj.info.entropy(uniform), sj.info.entropy(uniform, base=2)
print(f"uniform over 3 classes: {float(h_nats):.4f} nats = {float(h_bits):.4f} bits")
np.testing.assert_allclose(h_nats, math.log(3), rtol=1e-6)
np.testing.assert_allclose(h_bits, math.log2(3), rtol=1e-6)
np.testing.assert_allclose(h_nats / h_bits, math.log(2), rtol=1e-6)  # 1 nat = 1/log 2 bits
print(f"one nat = {1 / math.log(2):.4f} bits")
assert float(sj.info.entropy(jnp.array([0.0, 1.0, 0.0]))) == 0.0  # no surprise, 0·log 0 = 0
np.testing.assert_allclose(sj.info.surprisal(jnp.array(0.5), base=2), 1.0)  # a fair coin: 1 bit

P_true, Q_belief = jnp.array([0.1, 0.2, 0.7]), jnp.array([0.3, 0.3, 0.4])
h_pq, h_p = sj.info.cross_entropy(P_true, Q_belief), sj.info.entropy(P_true)
kl = sj.info.kl_divergence(P_true, Q_belief)
print(f"H(P) = {float(h_p):.4f}, H(P, Q) = {float(h_pq):.4f}, KL(P||Q) = {float(kl):.4f} nats")
assert h_pq > h_p and kl > 0
np.testing.assert_allclose(h_pq, h_p + kl, rtol=1e-6)
np.testing.assert_allclose(sj.info.cross_entropy(P_true, P_true), h_p, rtol=1e-6)
# The training loss is this cross-entropy, averaged over examples: in bits per label,
bits_per_label = test_eval["loss"] / math.log(2)
print(f"the trained model needs {bits_per_label:.3f} bits per test label (uniform guess: "
      f"{math.log2(10):.3f})")
assert bits_per_label < math.log2(10)

# %% [markdown]
# ## §4.1.4 Summary
#
# Softmax regression is an affine map to logits, a softmax to probabilities and the
# cross-entropy as the loss, whose gradient is prediction minus label. Its fully connected
# output layer costs $O(dq)$ parameters and operations: 15 for the toy, 650 for the digits.

# %%
num_params = {name: ds.num_features * ds.num_classes + ds.num_classes
              for name, ds in (("toy", toy), ("digits", digits))}
print(f"parameters: {num_params}")
assert num_params == {"toy": 15, "digits": 650}
