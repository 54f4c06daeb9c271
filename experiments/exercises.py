r"""Every exercise of D2L §4.1.5 (and §4.5's exp range), answered and checked numerically.

1. The Hessian of the cross-entropy in the logits is ``diag(p) − ppᵀ``, the covariance of the
   one-hot of a class drawn from ``p``: closed form vs ``jax.hessian`` vs a Monte Carlo covariance
   (tolerance ``2.5/√N``, five standard deviations of an entry of bounded variance ``<= 1/4``).
2. Three equiprobable classes carry ``log2 3 = 1.585`` bits; a per-symbol binary code spends 2.
   Coding blocks of ``n`` symbols (``3ⁿ`` outcomes) with a fixed-length code costs
   ``ceil(n·log2 3)/n`` bits per symbol and with a Huffman code ``(L + 2(M − 2^L)/M)/n``
   (``M = 3ⁿ``, ``L = floor(log2 M)``); both codes are built, checked prefix-free (Kraft sum), and
   used to encode and decode a random sequence.
3. Integers ``{0, …, 7}`` need 2 trits (``3² = 9 >= 8``) but 3 bits: ``ceil(log_k N)`` digits,
   computed in integers (the float formula is wrong for some exact powers, e.g. ``N = 5³``).
   With PAM-3 a word takes a third fewer symbols, so the same data need a lower symbol rate
   (bandwidth) on the wire, paid for with a smaller voltage gap between levels (noise margin).
4. Bradley–Terry is a softmax over two scores: ``softmax([s_i, s_j])_0 = σ(s_i − s_j)``; scores
   are recovered from simulated games by maximum likelihood (within 4 standard errors, from the
   Fisher information), also with a "neither" option as a third score, which reduces to BT as
   ``s_neither → −∞`` (and keeps BT's odds between i and j at any ``s_neither``).
5. RealSoftMax ``log(e^a + e^b)`` exceeds ``max(a, b)`` by ``log(1 + e^{−|a−b|}) ∈ (0, log 2]``;
   ``λ⁻¹·RealSoftMax(λa, λb) → max`` with gap ``<= log 2/λ``; soft-min; the n-ary form
   (``sj.logsumexp``) exceeds the max by at most ``log n``; all finite at ``±1e4`` and ``±3e38``.
6. ``g(x) = log Σ exp x`` is convex (its Hessian is the PSD softmax covariance, and
   ``vᵀ∇²g v = Var_p(v)``), ``g(x + b) = g(x) + b``, and the shift by ``max x`` is exact where the
   naive formula overflows (``inf`` at ``x ≈ 1e3`` in float32) or underflows (``−inf``).
7. ``Q ∝ P^α`` is the softmax at ``T/α``: ``α = 1/2`` doubles the temperature, ``α = 2`` halves
   it; ``α → ∞`` (``T → 0``) gives the argmax, ``α → 0`` (``T → ∞``) the uniform distribution.
   (:mod:`softmax_jax.temperature`.)

§4.5 (exp range): the largest ``x`` with ``exp(x)`` finite is ``log(max)``, the smallest without
underflow ``log(tiny)`` (smallest normal) or ``log(smallest subnormal)``; each is measured in
float64, float32, bfloat16 and float16 by bisection over the dtype's values and confirmed with
``jnp.nextafter`` (``exp`` finite at ``x``, ``inf`` at the next value).

Command:

  python -m experiments.exercises --workdir=/tmp/sj_exercises

Expected (seed 0; about 15 s on 2 CPU cores; 74 checks, all pass). Exercise 1: ``jax.hessian``
of the loss matches ``diag(p) − ppᵀ`` to 1.5e-8 for every label, and the Monte Carlo covariance
(N = 200,000) to 4.4e-4 (tolerance 5.6e-3). Exercise 2: fixed-length rates 2, 2, 1.667, 1.75,
1.6, 1.667, 1.714, 1.625 bits per symbol for n = 1 … 8, Huffman 1.667, 1.611, 1.605, 1.605,
1.589, 1.599, 1.590, 1.594 (log2 3 = 1.585); every code is prefix-free and decodes its sequence
exactly. Exercise 3: 2 trits, 3 bits; the float formula already errs at N = 5³ = 125 (it says
4). Exercise 4: 6 items, 20,000 games: largest score error 0.068 (max |z| = 2.76), with
"neither" 0.046 (|z| <= 1.95). Exercise 5: in float32 ``RealSoftMax(a, 0) == a`` exactly from
``a = 14.44`` (``−log(ulp(a)/2) = 14.56``; 33.25 in float64): the strict inequality holds in
exact arithmetic only. §4.5 (x_max; smallest x with exp(x) >= tiny; smallest with exp(x) > 0):
float64 709.7827, −708.3964, −708.3964; float32 88.72283, −87.33654, −87.33654; bfloat16 88.5,
−87.0, −87.0; float16 11.086, −9.703, −17.328. XLA's CPU ``exp`` flushes subnormal results to 0
in float64, float32 and bfloat16, so ``log(smallest subnormal)`` (−744.44, −103.28, −92.19) is
never reached there; float16 (computed in float32, then rounded) does reach its subnormals, down
to ``log(2^-25) = −17.33`` where ``exp`` rounds up to ``2^-24``.
Writes ``results.json`` and ``exercises.png``.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

import softmax_jax as sj
from experiments import common
from softmax_jax import plots
from softmax_jax import temperature as tm
from softmax_jax.solve import enable_x64

_MC_SAMPLES = flags.DEFINE_integer("exercises_mc_samples", 200_000, "Exercise 1: one-hot samples "
                                   "for the Monte Carlo covariance.", lower_bound=100,
                                   upper_bound=10_000_000)
_MAX_BLOCK = flags.DEFINE_integer("exercises_max_block", 8, "Exercise 2: the longest block of "
                                  "symbols coded jointly (3^n codewords).", lower_bound=1,
                                  upper_bound=12)
_SEQUENCE = flags.DEFINE_integer("exercises_sequence_length", 6_000, "Exercise 2: symbols in the "
                                 "random sequence each code encodes and decodes.", lower_bound=1,
                                 upper_bound=1_000_000)
_BT_ITEMS = flags.DEFINE_integer("exercises_bt_items", 6, "Exercise 4: items with scores.",
                                 lower_bound=2, upper_bound=100)
_BT_GAMES = flags.DEFINE_integer("exercises_bt_games", 20_000, "Exercise 4: simulated choices.",
                                 lower_bound=50, upper_bound=10_000_000)
FLAGS = flags.FLAGS

EPS32 = float(np.finfo(np.float32).eps)
LOG2 = math.log(2.0)


def _row(exercise: str, check: str, measured: Any, expected: Any, passed: bool,
         tol: Any = "") -> dict[str, Any]:
  return {"ex": exercise, "check": check, "measured": measured, "expected": expected,
          "tol": tol, "pass": bool(passed)}


# ================================================================================================
# 1. The Hessian of the cross-entropy is the softmax covariance.
# ================================================================================================


@jax.jit
def _ce_hessians(o: jax.Array) -> jax.Array:
  """``jax.hessian`` of the cross-entropy in the logits, for every label."""
  def hess(y):
    return jax.hessian(lambda o: sj.cross_entropy(o, y))(o)

  return jax.vmap(hess)(jnp.arange(o.shape[0]))


@functools.partial(jax.jit, static_argnames=("num_samples",))
def _onehot_covariance(key: jax.Array, o: jax.Array, *, num_samples: int) -> jax.Array:
  """The (biased) sample covariance of the one-hots of ``num_samples`` classes drawn from
  ``softmax(o)``. Counts of up to 2^24 are exact in float32."""
  y = sj.one_hot(jax.random.categorical(key, o, shape=(num_samples,)), o.shape[0])
  mean = jnp.mean(y, axis=0)
  return y.T @ y / num_samples - mean[:, None] * mean[None, :]


def ce_hessian(logits: Sequence[float], *, num_samples: int, key: jax.Array) -> dict[str, Any]:
  """``diag(p) − ppᵀ`` against ``jax.hessian`` of the loss (every label) and a sample covariance.

  Returns:
    ``p``, ``closed`` (``sj.softmax_hessian``), ``autodiff_max_diff`` (over all labels: the
    Hessian does not depend on the label), ``mc_cov``, ``mc_max_diff`` and its tolerance
    ``mc_tol = 2.5/√N`` (each entry is a mean of a variable of range <= 1, so variance <= 1/4),
    ``min_eigenvalue`` (>= 0 up to rounding) and ``null_residual`` ``max|H·1|`` (the shift
    direction is flat).
  """
  o = jnp.asarray(logits, jnp.float32)
  num_classes = o.shape[0]
  closed = sj.softmax_hessian(o)
  hessians = _ce_hessians(o)  # [label, C, C]
  diffs = [float(jnp.max(jnp.abs(h - closed))) for h in hessians]
  mc_cov = np.asarray(_onehot_covariance(key, o, num_samples=num_samples), np.float64)
  eig = np.linalg.eigvalsh(np.asarray(closed, np.float64))
  return {"p": np.asarray(sj.softmax(o)), "closed": np.asarray(closed),
          "autodiff_max_diff": max(diffs), "mc_cov": mc_cov,
          "mc_max_diff": float(np.max(np.abs(mc_cov - np.asarray(closed, np.float64)))),
          "mc_tol": 2.5 / math.sqrt(num_samples), "min_eigenvalue": float(eig.min()),
          "null_residual": float(jnp.max(jnp.abs(closed @ jnp.ones(num_classes))))}


# ================================================================================================
# 2. Coding three equiprobable symbols, one at a time and in blocks.
# ================================================================================================


def fixed_length_bits(num_outcomes: int) -> int:
  """The fewest bits ``L`` with ``2^L >= num_outcomes`` (``ceil(log2 M)``, in integers)."""
  if num_outcomes < 1:
    raise ValueError(f"num_outcomes must be >= 1; got {num_outcomes}.")
  return (num_outcomes - 1).bit_length()


def fixed_length_code(num_outcomes: int) -> list[str]:
  """Codeword ``i`` is ``i`` in binary, ``ceil(log2 M)`` bits (at least 1)."""
  bits = max(1, fixed_length_bits(num_outcomes))
  return [format(i, f"0{bits}b") for i in range(num_outcomes)]


def huffman_code(weights: Sequence[int | float]) -> list[str]:
  """A binary Huffman code for outcomes of the given weights (codeword ``i`` for outcome ``i``).

  Repeatedly merges the two lightest subtrees (ties broken by creation order, so the code is
  deterministic). A single outcome gets the codeword ``"0"``.

  References:
    Huffman, A method for the construction of minimum-redundancy codes, 1952; Cover & Thomas,
    Elements of Information Theory, §5.6.
  """
  if len(weights) == 0:
    raise ValueError("weights must hold at least one outcome.")
  if any(not w > 0 for w in weights):
    raise ValueError(f"weights must be > 0; got {list(weights)}.")
  if len(weights) == 1:
    return ["0"]
  counter = itertools.count()
  heap = [(w, next(counter), [i]) for i, w in enumerate(weights)]
  heapq.heapify(heap)
  codes = [""] * len(weights)
  while len(heap) > 1:
    w0, _, leaves0 = heapq.heappop(heap)
    w1, _, leaves1 = heapq.heappop(heap)
    for i in leaves0:
      codes[i] = "0" + codes[i]
    for i in leaves1:
      codes[i] = "1" + codes[i]
    heapq.heappush(heap, (w0 + w1, next(counter), leaves0 + leaves1))
  return codes


def huffman_uniform_length(num_outcomes: int) -> float:
  """Expected Huffman codeword length for ``M`` equiprobable outcomes, in closed form.

  With ``L = floor(log2 M)``, the code is a complete tree of depth ``L`` in which
  ``M − 2^L`` leaves are split in two, so ``2(M − 2^L)`` codewords have ``L + 1`` bits and the
  rest ``L``: the mean is ``L + 2(M − 2^L)/M``.
  """
  depth = num_outcomes.bit_length() - 1
  return depth + 2 * (num_outcomes - 2**depth) / num_outcomes


def is_prefix_free(codewords: Sequence[str]) -> bool:
  """No codeword is a prefix of another (checking lexicographic neighbours suffices)."""
  words = sorted(codewords)
  return len(set(words)) == len(words) and all(
      not b.startswith(a) for a, b in zip(words, words[1:], strict=False))


def kraft_sum(codewords: Sequence[str]) -> float:
  """``Σ 2^{−len}``: at most 1 for a prefix code, exactly 1 for a complete one (Huffman)."""
  return float(sum(2.0**-len(w) for w in codewords))


def encode_blocks(symbols: np.ndarray, block: int, codewords: Sequence[str],
                  base: int = 3) -> str:
  """Codes each block of ``block`` base-``base`` symbols as the codeword of its index."""
  if symbols.size % block:
    raise ValueError(f"the sequence length {symbols.size} is not a multiple of block={block}.")
  index = symbols.reshape(-1, block) @ (base ** np.arange(block))
  return "".join(codewords[i] for i in index)


def decode_blocks(bits: str, block: int, codewords: Sequence[str], base: int = 3) -> np.ndarray:
  """Inverts :func:`encode_blocks` for a prefix code, reading one bit at a time."""
  lookup = {w: i for i, w in enumerate(codewords)}
  out, word = [], ""
  for bit in bits:
    word += bit
    if word in lookup:
      index = lookup[word]
      out.extend((index // base**np.arange(block)) % base)
      word = ""
  if word:
    raise ValueError(f"the bits end inside a codeword: {word!r} left over.")
  return np.asarray(out, np.int64)


def coding_rates(max_block: int, *, sequence_length: int, seed: int) -> list[dict[str, Any]]:
  """For ``n = 1 … max_block``: the fixed-length and Huffman codes of blocks of ``n`` trits.

  Each code is built, checked prefix-free, and used to encode and decode a random sequence of
  about ``sequence_length`` equiprobable symbols (a whole number of blocks).
  """
  rng = np.random.default_rng(seed)
  rows = []
  for n in range(1, max_block + 1):
    m = 3**n
    num_blocks = max(1, -(-sequence_length // n))
    symbols = rng.integers(0, 3, size=num_blocks * n)
    row = {"n": n, "outcomes": m, "num_symbols": int(symbols.size)}
    for name, code, expected in (
        ("fixed", fixed_length_code(m), fixed_length_bits(m) / n),
        ("huffman", huffman_code([1] * m), huffman_uniform_length(m) / n)):
      bits = encode_blocks(symbols, n, code)
      decoded = decode_blocks(bits, n, code)
      row[f"{name}_expected_rate"] = expected
      row[f"{name}_code_rate"] = float(np.mean([len(w) for w in code])) / n
      row[f"{name}_measured_rate"] = len(bits) / symbols.size
      row[f"{name}_prefix_free"] = is_prefix_free(code)
      row[f"{name}_kraft"] = kraft_sum(code)
      row[f"{name}_decoded_ok"] = bool(decoded.shape == symbols.shape and
                                       np.array_equal(decoded, symbols))
      # The measured rate of a Huffman code varies by block: a codeword's length is L or L + 1
      # (std <= 1/2 bit), so the mean over B blocks is within 5·0.5/√B bits of its expectation.
      row[f"{name}_rate_tol"] = 2.5 / math.sqrt(num_blocks) / n
    rows.append(row)
  return rows


# ================================================================================================
# 3. Trits against bits.
# ================================================================================================


def digits_needed(num_values: int, base: int) -> int:
  """The fewest base-``base`` digits that name ``num_values`` values: ``ceil(log_base N)``.

  Computed in integers (the smallest ``m`` with ``base^m >= N``); the float formula
  ``ceil(log N / log base)`` errs for some exact powers (see :func:`float_formula_failure`).
  """
  if num_values < 1 or base < 2:
    raise ValueError(f"need num_values >= 1 and base >= 2; got {num_values} and {base}.")
  m, power = 0, 1
  while power < num_values:
    m, power = m + 1, power * base
  return m


def float_formula_failure(max_base: int = 10, max_exponent: int = 40) -> dict[str, Any] | None:
  """The smallest ``N = k^m`` (``k <= max_base``) for which ``ceil(log N/log k) != m``."""
  failures = [(k**m, k, m) for k in range(2, max_base + 1) for m in range(1, max_exponent + 1)
              if math.ceil(math.log(k**m) / math.log(k)) != m]
  if not failures:
    return None
  n, k, m = min(failures)
  return {"N": n, "base": k, "digits": m, "float_formula": math.ceil(math.log(n) / math.log(k))}


# ================================================================================================
# 4. Bradley–Terry, with and without a "neither" option.
# ================================================================================================


def bt_probability(s_i: jax.Array, s_j: jax.Array) -> jax.Array:
  """``P(i chosen over j) = softmax([s_i, s_j])_0``, elementwise."""
  return sj.softmax(jnp.stack([s_i, s_j], axis=-1))[..., 0]


@jax.jit
def _bt_arrays(s: jax.Array) -> dict[str, jax.Array]:
  s_i, s_j = s[:, None] * jnp.ones_like(s)[None, :], jnp.ones_like(s)[:, None] * s[None, :]
  err = jnp.abs(bt_probability(s_i, s_j) - jax.nn.sigmoid(s_i - s_j))
  extreme = jnp.asarray([[1e4, -1e4], [3e38, -3e38], [-3e38, 3e38], [3e38, 3e38], [-1e4, -1e4]])
  grid = jnp.linspace(-5, 5, 101)
  return {"max_err": jnp.max(err),
          "extreme": bt_probability(extreme[:, 0], extreme[:, 1]),
          "monotone": jnp.all(jnp.diff(bt_probability(grid, jnp.zeros_like(grid))) > 0)}


def bt_softmax_checks(seed: int) -> dict[str, Any]:
  """``softmax([s_i, s_j])_0`` against ``σ(s_i − s_j)`` on 64 × 64 random scores, its
  monotonicity in ``s_i``, and its values at ``±1e4`` and ``±3e38``."""
  s = jnp.asarray(np.random.default_rng(seed).normal(0, 3, (64,)), jnp.float32)
  return {k: v.tolist() for k, v in jax.device_get(_bt_arrays(s)).items()}


def simulate_choices(key: jax.Array, scores: jax.Array, num_games: int, *,
                     s_neither: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Draws ``num_games`` pairs ``i != j`` uniformly and the choice among ``[i, j(, neither)]``.

  Returns:
    ``pairs`` ``[G, 2]`` and ``choices`` ``[G]`` in ``{0: i, 1: j(, 2: neither)}``.
  """
  pairs, choices = _simulate(key, jnp.asarray(scores, jnp.float32),
                             jnp.float32(0.0 if s_neither is None else s_neither),
                             num_games=num_games, neither=s_neither is not None)
  return np.asarray(pairs), np.asarray(choices)


@functools.partial(jax.jit, static_argnames=("num_games", "neither"))
def _simulate(key, scores, s_neither, *, num_games, neither):
  k_i, k_j, k_c = jax.random.split(key, 3)
  m = scores.shape[0]
  i = jax.random.randint(k_i, (num_games,), 0, m)
  j = (i + jax.random.randint(k_j, (num_games,), 1, m)) % m  # uniform over j != i
  logits = jnp.stack([scores[i], scores[j]], axis=1)
  if neither:
    logits = jnp.concatenate([logits, jnp.full((num_games, 1), s_neither)], axis=1)
  return jnp.stack([i, j], axis=1), jax.random.categorical(k_c, logits)


def _choice_logits(theta, pairs, neither: bool):
  num_items = theta.shape[0] - int(neither)
  logits = jnp.stack([theta[pairs[:, 0]], theta[pairs[:, 1]]], axis=1)
  if neither:
    logits = jnp.concatenate([logits, jnp.broadcast_to(theta[num_items], (pairs.shape[0], 1))],
                             axis=1)
  return logits


@functools.partial(jax.jit, static_argnames=("neither",))
def _grad_hess(theta, pairs, choices, *, neither):
  def nll(theta):
    return sj.cross_entropy(_choice_logits(theta, pairs, neither), choices, reduction="mean")

  return jax.grad(nll)(theta), jax.hessian(nll)(theta)


def fit_choice_model(pairs: np.ndarray, choices: np.ndarray, num_items: int, *,
                     neither: bool, max_iter: int = 50, tol: float = 1e-10) -> dict[str, Any]:
  """Maximum likelihood scores of the softmax choice model, by Newton's method in float64.

  The parameters are the item scores (and ``s_neither``); the NLL is the mean cross-entropy of
  the logits ``[s_i, s_j(, s_neither)]``. Adding a constant to every parameter changes nothing,
  so the Hessian is singular along that direction: the Newton step uses its pseudo-inverse, and
  the scores are reported as contrasts from the items' mean. The standard errors of the contrasts
  come from the inverse Fisher information (``G·pinv(n·H)·Gᵀ``, ``G`` the contrast map).

  Returns:
    ``theta`` (centred contrasts), ``se`` (their standard errors), ``iterations``,
    ``grad_norm``.
  """
  size = num_items + int(neither)
  with enable_x64():
    p_idx = jnp.asarray(pairs)
    y = jnp.asarray(choices, jnp.int32)
    theta = np.zeros(size)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
      g, h = (np.asarray(a) for a in _grad_hess(jnp.asarray(theta), p_idx, y, neither=neither))
      if np.max(np.abs(g)) <= tol:
        break
      theta = theta - np.linalg.pinv(h, hermitian=True) @ g
    g, h = (np.asarray(a) for a in _grad_hess(jnp.asarray(theta), p_idx, y, neither=neither))
    contrast = np.eye(size) - np.outer(np.ones(size), np.r_[np.ones(num_items) / num_items,
                                                            np.zeros(int(neither))])
    cov = contrast @ np.linalg.pinv(len(choices) * h, hermitian=True) @ contrast.T
    return {"theta": contrast @ theta, "se": np.sqrt(np.clip(np.diag(cov), 0, None)),
            "iterations": iterations, "grad_norm": float(np.max(np.abs(g)))}


def centred(scores: np.ndarray, s_neither: float | None = None) -> np.ndarray:
  """The true parameters as the contrasts :func:`fit_choice_model` reports."""
  scores = np.asarray(scores, np.float64)
  out = scores - scores.mean()
  return out if s_neither is None else np.r_[out, s_neither - scores.mean()]


def neither_limit(s_i: float, s_j: float, s_neither_values: Sequence[float]) -> list[dict]:
  """``softmax([s_i, s_j, s_0])_0`` against ``σ(s_i − s_j)`` as ``s_0 → −∞``.

  The three-way probability is ``σ(s_i − s_j)·(1 − P(neither))``, so the gap is
  ``σ(s_i − s_j)·P(neither) <= e^{s_0}/(e^{s_i} + e^{s_j})``, and the odds of ``i`` against
  ``j`` stay ``e^{s_i − s_j}`` (Luce's choice axiom) at every ``s_0``.
  """
  bt = float(jax.nn.sigmoid(s_i - s_j))
  rows = []
  for s0 in s_neither_values:
    p = np.asarray(sj.softmax(jnp.asarray([s_i, s_j, s0], jnp.float32)), np.float64)
    bound = math.exp(s0 - float(np.logaddexp(s_i, s_j))) if s0 > -math.inf else 0.0
    rows.append({"s_neither": s0, "p_i": p[0], "p_neither": p[2], "gap": abs(p[0] - bt),
                 "bound": bound, "conditional": p[0] / (p[0] + p[1]), "bt": bt})
  return rows


# ================================================================================================
# 5. RealSoftMax.
# ================================================================================================


def real_softmax(a: jax.Array, b: jax.Array) -> jax.Array:
  """``log(e^a + e^b)``, stably (``sj.logsumexp`` of the pair), elementwise."""
  return sj.logsumexp(jnp.stack([jnp.asarray(a), jnp.asarray(b)], axis=-1))


def scaled_real_softmax(a: jax.Array, b: jax.Array, lam: float | jax.Array) -> jax.Array:
  """``λ⁻¹·RealSoftMax(λa, λb)`` (``λ > 0``, a scalar or of the shape of ``a``): tends to
  ``max(a, b)`` as ``λ → ∞``."""
  return real_softmax(lam * jnp.asarray(a), lam * jnp.asarray(b)) / lam


def soft_min(a: jax.Array, b: jax.Array) -> jax.Array:
  """``−RealSoftMax(−a, −b)``: below ``min(a, b)`` by at most ``log 2``."""
  return -real_softmax(-jnp.asarray(a), -jnp.asarray(b))


def first_exact_max(dtype: Any, step: float = 0.01, stop: float = 60.0) -> float:
  """The smallest ``a`` on a grid with ``RealSoftMax(a, 0) == a`` exactly in ``dtype``.

  Mathematically the gap ``log(1 + e^{−a})`` is positive for every ``a``; in floating point it
  rounds away once it is below half an ulp of ``a``.
  """
  a = jnp.arange(0.0, stop, step, dtype=dtype)
  same = np.asarray(real_softmax(a, jnp.zeros_like(a)) == a)
  return float(np.asarray(a)[np.argmax(same)]) if same.any() else math.inf


@jax.jit
def _real_softmax_arrays(key: jax.Array) -> dict[str, jax.Array]:
  k_ab, k_x = jax.random.split(key)
  ab = jax.random.normal(k_ab, (2, 1000)) * 10
  a = ab[0]
  b = ab[1].at[:10].set(ab[0, :10])  # ten ties, a = b
  gap = real_softmax(a, b) - jnp.maximum(a, b)
  formula = jnp.log1p(jnp.exp(-jnp.abs(a - b)))
  rounding = 4 * EPS32 * (1 + jnp.maximum(jnp.abs(a), jnp.abs(b)))
  softmin_gap = jnp.minimum(a, b) - soft_min(a, b)
  xs = jax.random.normal(k_x, (200, 7)) * 10
  n_gap = sj.logsumexp(xs) - jnp.max(xs, -1)
  ext = jnp.asarray([[1e4, 1e4], [1e4, -1e4], [-1e4, -1e4], [3e38, 3e38], [3e38, -3e38],
                     [-3e38, -3e38], [-3e38, 3e38]], jnp.float32)
  rsm = real_softmax(ext[:, 0], ext[:, 1])
  # max + log(1 + e^{−|a−b|}); a − b overflows to ±inf for ±3e38, where the term is 0 anyway.
  expected = jnp.maximum(ext[:, 0], ext[:, 1]) + jnp.log1p(jnp.exp(-jnp.abs(ext[:, 0] -
                                                                            ext[:, 1])))
  ulp = jnp.abs(jnp.nextafter(expected, jnp.float32(jnp.inf)) - expected)
  return {"formula_max_err": jnp.max(jnp.abs(gap - formula)),
          "formula_ok": jnp.all(jnp.abs(gap - formula) <= rounding),
          "max_gap": jnp.max(gap), "gap_in_range": jnp.all((gap >= 0) & (gap <= LOG2 + rounding)),
          "tie_gap": jnp.min(gap[:10]),
          "tie_ok": jnp.all(jnp.abs(gap[:10] - LOG2) <= rounding[:10]),
          "max_softmin_gap": jnp.max(softmin_gap),
          "softmin_in_range": jnp.all((softmin_gap >= 0) & (softmin_gap <= LOG2 + rounding)),
          "max_n_gap": jnp.max(n_gap),
          "n_gap_in_range": jnp.all((n_gap >= 0) & (n_gap <= math.log(7) + 1e-5)),
          "n_tie_gap": sj.logsumexp(jnp.full(7, 2.5)) - 2.5,
          "extreme": ext, "extreme_rsm": rsm, "extreme_finite": jnp.all(jnp.isfinite(rsm)),
          "extreme_ulps": jnp.max(jnp.abs(rsm - expected) / ulp)}


def real_softmax_checks(seed: int) -> dict[str, Any]:
  """Exercise 5's claims on 1000 random pairs (ten of them ties), λ ∈ [1e-2, 1e4], extremes.

  Returns:
    Python values: the largest deviations and pass flags of each claim, ``lambda_gaps`` (rows of
    ``a − b``, ``λ``, gap, bound ``log 2/λ``; float64), ``first_exact_max`` (the ``a`` from which
    ``RealSoftMax(a, 0) == a`` in float32 and float64) with ``rounds_away`` ``= −log(ulp(a)/2)``,
    its prediction, and the naive formula's non-finite count at the extreme inputs.
  """
  out = {k: v.tolist() for k, v in jax.device_get(
      _real_softmax_arrays(jax.random.PRNGKey(seed + 5))).items()}
  ext = np.asarray(out["extreme"], np.float32)
  with np.errstate(over="ignore", divide="ignore"):
    naive = np.log(np.exp(ext[:, 0]) + np.exp(ext[:, 1]))
  out["naive_non_finite"] = int(np.sum(~np.isfinite(naive)))
  lams = np.logspace(-2, 4, 25)
  diffs = (0.0, 0.1, 1.0)
  with enable_x64():  # float64, so that the gap is resolved down to 1e-12 at λ = 1e4
    shape = (len(diffs), len(lams))
    b0 = jnp.full(shape, 0.3, jnp.float64)
    a0 = b0 + jnp.broadcast_to(jnp.asarray(diffs, jnp.float64)[:, None], shape)
    lam = jnp.broadcast_to(jnp.asarray(lams, jnp.float64)[None, :], shape)
    gaps = np.asarray(scaled_real_softmax(a0, b0, lam) - jnp.maximum(a0, b0))
    lam_rows = [{"a - b": diff, "lambda": float(lam_), "gap": float(g), "bound": LOG2 / lam_}
                for diff, row in zip(diffs, gaps, strict=True)
                for lam_, g in zip(lams, row, strict=True)]
    exact = {"float64": first_exact_max(jnp.float64)}
  exact["float32"] = first_exact_max(jnp.float32)
  # a + log1p(e^{−a}) rounds to a once e^{−a} < ulp(a)/2 (1 + e^{−a} is itself rounded first,
  # which moves the threshold by about 0.1).
  out["rounds_away"] = {name: -math.log(float(np.spacing(np.asarray(a, np.dtype(name)))) / 2)
                        for name, a in exact.items()}
  out.update(lambda_gaps=lam_rows, first_exact_max=exact, gap_at_1e4=lam_rows[len(lams) - 1]["gap"])
  return out


# ================================================================================================
# 6. The log-partition function.
# ================================================================================================


def log_partition_checks(key: jax.Array, num_classes: int = 5,
                         num_pairs: int = 200) -> dict[str, Any]:
  """Convexity (Hessian = covariance, PSD; Jensen at midpoints) and ``g(x + b) = g(x) + b``."""
  out = jax.device_get(_log_partition(key, num_classes=num_classes, num_pairs=num_pairs))
  hess = np.asarray(out.pop("hessian"), np.float64)
  return {k: float(v) for k, v in out.items()} | {
      "min_eigenvalue": float(np.linalg.eigvalsh(hess).min())}


@functools.partial(jax.jit, static_argnames=("num_classes", "num_pairs"))
def _log_partition(key, *, num_classes, num_pairs):
  k_x, k_v, k_pairs = jax.random.split(key, 3)
  x = jax.random.normal(k_x, (num_classes,)) * 2
  p = sj.softmax(x)
  hess = jax.hessian(sj.logsumexp)(x)
  v = jax.random.normal(k_v, (16, num_classes))
  quad = jnp.einsum("kc,cd,kd->k", v, hess, v)
  var = jnp.sum(p[None] * v**2, -1) - jnp.sum(p[None] * v, -1) ** 2
  xy = jax.random.normal(k_pairs, (2, num_pairs, num_classes)) * 5
  jensen = (sj.logsumexp((xy[0] + xy[1]) / 2) -
            (sj.logsumexp(xy[0]) + sj.logsumexp(xy[1])) / 2)
  shifts = jnp.asarray([-1e3, -3.0, 0.5, 7.0, 1e3])
  shifted = jax.vmap(lambda b: sj.logsumexp(x + b) - b)(shifts)
  return {"hessian": hess,
          "hessian_vs_covariance": jnp.max(jnp.abs(hess - sj.softmax_hessian(x))),
          "quadratic_vs_variance": jnp.max(jnp.abs(quad - var)),
          "max_jensen_gap": jnp.max(jensen),  # <= 0 for a convex function
          "shift_max_rel_err": jnp.max(jnp.abs(shifted - sj.logsumexp(x)) /
                                       (1 + jnp.abs(shifts))),
          "softmax_shift_max_err": jnp.max(jnp.abs(
              jax.vmap(lambda b: sj.softmax(x + b))(shifts) - p[None]))}


def naive_logsumexp(x: jax.Array) -> jax.Array:
  """``log(sum(exp(x)))`` as written: overflows above ``log(max)``, underflows far below 0."""
  return jnp.log(jnp.sum(jnp.exp(x), axis=-1))


def shifted_logsumexp(x: jax.Array) -> jax.Array:
  """``b + log Σ exp(x − b)`` with ``b = max x``: every exponent ``<= 0``, one of them 0."""
  b = jnp.max(x, axis=-1)
  return b + jnp.log(jnp.sum(jnp.exp(x - b[..., None]), axis=-1))


def overflow_cases() -> list[dict[str, Any]]:
  """Naive vs shifted log-sum-exp in float32 on large and on very negative logits."""
  rows = []
  for name, x in (("large", [1000.0, 999.0, 998.0]), ("very negative", [-1000.0, -1001.0, -1002.0]),
                  ("above log(max)", [100.0, 99.0]), ("mixed", [1e4, -1e4, 0.0])):
    x64 = np.asarray(x, np.float64)
    m = x64.max()
    exact = m + math.log(float(np.sum(np.exp(x64 - m))))  # float64, shifted: exact to 1e-16
    xx = jnp.asarray(x, jnp.float32)
    rows.append({"case": name, "x": x, "naive": float(naive_logsumexp(xx)),
                 "shifted": float(shifted_logsumexp(xx)), "sj.logsumexp": float(sj.logsumexp(xx)),
                 "exact": exact})
  return rows


# ================================================================================================
# 7. Temperature through α (softmax_jax.temperature).
# ================================================================================================


def power_checks(logits: Sequence[float], temperature: float = 1.0) -> dict[str, float]:
  """Max errors of ``normalise(softmax(o/T)^α)`` against ``softmax(o/(T/α))``, and the limits."""
  o = jnp.asarray(logits, jnp.float32)
  p = sj.softmax(o, temperature=temperature)
  out = {}
  for alpha, name in ((0.5, "double"), (2.0, "half")):
    new_t = tm.power_to_temperature(alpha, temperature=temperature)
    out[f"{name}_new_temperature"] = new_t
    out[f"{name}_max_err"] = float(jnp.max(jnp.abs(
        tm.power_distribution(p, alpha=alpha) - sj.softmax(o, temperature=new_t))))
  top = np.asarray(o == jnp.max(o))
  out["alpha_inf_max_err"] = float(np.max(np.abs(
      np.asarray(tm.power_distribution(p, alpha=1e4)) - top / top.sum())))
  out["alpha_zero_max_err"] = float(np.max(np.abs(
      np.asarray(tm.power_distribution(p, alpha=1e-6)) - 1 / o.shape[0])))
  return out


# ================================================================================================
# §4.5: the range of exp in each float format.
# ================================================================================================

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _to_key(x: np.ndarray) -> int:
  """An integer that orders the floats of one dtype as their values (IEEE bit trick)."""
  bits = int(np.asarray(x).reshape(1).view(_UINT[x.dtype.itemsize])[0])
  sign = 1 << (8 * x.dtype.itemsize - 1)
  return bits if bits < sign else -(bits - sign)


def _from_key(key: int, dtype: Any) -> np.ndarray:
  itemsize = np.dtype(dtype).itemsize
  bits = key if key >= 0 else (-key) | (1 << (8 * itemsize - 1))
  return np.asarray([bits], _UINT[itemsize]).view(dtype)[0]


def _largest_true(pred: Callable[[np.ndarray], bool], lo: float, hi: float, dtype: Any) -> float:
  """The largest ``x`` of ``dtype`` in ``[lo, hi)`` with ``pred(x)``, for ``pred`` true then
  false along the reals (``pred(lo)`` true, ``pred(hi)`` false), by bisection over the values."""
  k_lo, k_hi = _to_key(np.asarray(lo, dtype)), _to_key(np.asarray(hi, dtype))
  assert pred(_from_key(k_lo, dtype)) and not pred(_from_key(k_hi, dtype))
  while k_hi - k_lo > 1:
    mid = (k_lo + k_hi) // 2
    if pred(_from_key(mid, dtype)):
      k_lo = mid
    else:
      k_hi = mid
  return _from_key(k_lo, dtype)


def exp_range(dtype: Any) -> dict[str, Any]:
  """Derived (from ``jnp.finfo``) and measured bounds on the argument of ``exp`` in ``dtype``.

  ``x_max``: the largest ``x`` with ``exp(x)`` finite (derived: ``log(max)``); ``x_normal``: the
  smallest with ``exp(x) >= tiny``, the smallest normal number (``log(tiny)``); ``x_nonzero``:
  the smallest with ``exp(x) > 0``. That is ``log(s/2) = log(s) − log 2`` for the smallest
  subnormal ``s`` if subnormal results survive (a result above ``s/2`` rounds up to ``s``), and
  about ``log(tiny)`` if the backend flushes them to 0. Both ``log(s)`` and ``log(s/2)`` are
  reported. Each measured value is confirmed at and just beyond it with ``jnp.nextafter``.
  ``ulp`` is the spacing of ``dtype`` at each derived value, the agreement to expect.
  float64 needs x64: the caller must enable it.
  """
  dtype = jnp.dtype(dtype)
  fi = jnp.finfo(dtype)
  derived = {"x_max": math.log(float(fi.max)), "x_normal": math.log(float(fi.tiny)),
             "x_subnormal": math.log(float(fi.smallest_subnormal)),
             # Rounded to nearest, exp(x) is the smallest subnormal s (not 0) once it exceeds s/2.
             "x_subnormal_rounded": math.log(float(fi.smallest_subnormal)) - LOG2}

  def exp(x):
    return np.asarray(jnp.exp(jnp.asarray(x, dtype)), np.float64)

  big = 1e4  # exp(±1e4) over- and underflows in every dtype here (float16's max is 65504)
  x_max = _largest_true(lambda x: bool(np.isfinite(exp(x))), 0.0, big, dtype)
  # "exp(x) >= tiny" and "exp(x) > 0" are false then true: search on −x.
  x_normal = -_largest_true(lambda x: bool(exp(-x) >= float(fi.tiny)), 0.0, big, dtype)
  x_nonzero = -_largest_true(lambda x: bool(exp(-x) > 0), 0.0, big, dtype)

  def nextafter(x, direction):
    return jnp.nextafter(jnp.asarray(x, dtype), jnp.asarray(direction, dtype))

  confirm = {
      "exp(x_max)": float(exp(x_max)), "exp(next above x_max)": float(exp(nextafter(x_max, big))),
      "exp(x_nonzero)": float(exp(x_nonzero)),
      "exp(next below x_nonzero)": float(exp(nextafter(x_nonzero, -big)))}

  def ulp(x):
    x = jnp.asarray(x, dtype)
    return float(jnp.abs(nextafter(x, big * np.sign(float(x))) - x))

  flushes = x_nonzero > derived["x_subnormal"] + 2 * ulp(derived["x_subnormal"])
  return {"dtype": dtype.name, "max": float(fi.max), "tiny": float(fi.tiny),
          "smallest_subnormal": float(fi.smallest_subnormal), "derived": derived,
          "measured": {"x_max": float(x_max), "x_normal": float(x_normal),
                       "x_nonzero": float(x_nonzero)},
          "ulp": {k: ulp(v) for k, v in derived.items()}, "confirm": confirm,
          "flushes_subnormals": bool(flushes)}


def exp_ranges() -> list[dict[str, Any]]:
  """:func:`exp_range` for float64 (under x64), float32, bfloat16 and float16."""
  with enable_x64():
    out = [exp_range(jnp.float64)]
  return out + [exp_range(d) for d in (jnp.float32, jnp.bfloat16, jnp.float16)]


# ================================================================================================
# The experiment.
# ================================================================================================


def run(*, mc_samples: int, max_block: int, sequence_length: int, bt_items: int, bt_games: int,
        seed: int) -> dict[str, Any]:
  """Answers every exercise; returns the results and a list of checks (``rows``)."""
  key = jax.random.PRNGKey(seed)
  k1, k4a, k4b, k6 = jax.random.split(key, 4)
  rows = []

  # 1 ---------------------------------------------------------------------------------------------
  ex1 = ce_hessian([2.0, 1.0, 0.1, -1.0, 0.5], num_samples=mc_samples, key=k1)
  rows += [
      _row("1", "jax.hessian(CE) == diag(p) - pp^T (every label)", ex1["autodiff_max_diff"], 0.0,
           ex1["autodiff_max_diff"] <= 1e-6, 1e-6),
      _row("1", f"one-hot sample covariance (N={mc_samples}) == diag(p) - pp^T",
           ex1["mc_max_diff"], 0.0, ex1["mc_max_diff"] <= ex1["mc_tol"], ex1["mc_tol"]),
      _row("1", "Hessian PSD: min eigenvalue", ex1["min_eigenvalue"], ">= 0",
           ex1["min_eigenvalue"] >= -1e-7, 1e-7),
      _row("1", "H·1 = 0 (shift direction flat)", ex1["null_residual"], 0.0,
           ex1["null_residual"] <= 1e-6, 1e-6)]

  # 2 ---------------------------------------------------------------------------------------------
  h_bits = float(sj.info.entropy(jnp.full(3, 1 / 3), base=2))
  codes = coding_rates(max_block, sequence_length=sequence_length, seed=seed)
  rows += [_row("2", "entropy of 3 equiprobable classes (bits)", h_bits, math.log2(3),
                abs(h_bits - math.log2(3)) <= 1e-6, 1e-6),
           _row("2", "per-symbol binary code: bits (1 of 4 codewords unused)",
                codes[0]["fixed_measured_rate"], 2.0, codes[0]["fixed_measured_rate"] == 2.0)]
  for c in codes:
    for name in ("fixed", "huffman"):
      ok = (c[f"{name}_prefix_free"] and c[f"{name}_decoded_ok"] and
            abs(c[f"{name}_code_rate"] - c[f"{name}_expected_rate"]) <= 1e-12 and
            abs(c[f"{name}_measured_rate"] - c[f"{name}_expected_rate"]) <= c[f"{name}_rate_tol"]
            and c[f"{name}_kraft"] <= 1 + 1e-12
            and c[f"{name}_expected_rate"] >= math.log2(3) - 1e-12
            and c[f"{name}_expected_rate"] <= math.log2(3) + 1 / c["n"] + 1e-12)
      rows.append(_row("2", f"{name} code, blocks of n={c['n']}: bits/symbol (prefix-free, "
                            f"decodes, H <= rate <= H + 1/n)", c[f"{name}_measured_rate"],
                       c[f"{name}_expected_rate"], ok, c[f"{name}_rate_tol"] if
                       name == "huffman" else 0.0))

  # 3 ---------------------------------------------------------------------------------------------
  trits, bits = digits_needed(8, 3), digits_needed(8, 2)
  failure = float_formula_failure()
  disagree = sum(digits_needed(n, k) != math.ceil(math.log(n) / math.log(k))
                 for n in range(1, 1001) for k in range(2, 11))
  counted_ok = all(k ** (m - 1) < n <= k**m for n in range(2, 1001) for k in range(2, 11)
                   for m in [digits_needed(n, k)]) and digits_needed(1, 3) == 0
  rows += [_row("3", "trits for {0..7}", trits, 2, trits == 2),
           _row("3", "bits for {0..7}", bits, 3, bits == 3),
           _row("3", "integer count m: k^(m-1) < N <= k^m for all N <= 1000, k <= 10",
                counted_ok, True, counted_ok)]
  if failure:
    rows.append(_row("3", f"float ceil(log N/log k) at N={failure['base']}^{failure['digits']}"
                          f" (wrong in {disagree} cases, N <= 1000)", failure["float_formula"],
                     failure["digits"],
                     digits_needed(failure["N"], failure["base"]) == failure["digits"]))

  # 4 ---------------------------------------------------------------------------------------------
  bt = bt_softmax_checks(seed)
  rows += [_row("4", "softmax([s_i, s_j])_0 == sigmoid(s_i - s_j) (64 x 64 scores)", bt["max_err"],
                0.0, bt["max_err"] <= 1e-6, 1e-6),
           _row("4", "P(i wins) increases with s_i", bt["monotone"], True, bt["monotone"]),
           _row("4", "at ±1e4, ±3e38: P = [1, 1, 0, .5, .5]", str(bt["extreme"]),
                "[1, 1, 0, 0.5, 0.5]", bt["extreme"] == [1, 1, 0, 0.5, 0.5])]
  true_scores = jnp.linspace(-1.5, 1.5, bt_items)
  bt_models = {}
  for name, s0, k in (("bradley_terry", None, k4a), ("with_neither", -0.5, k4b)):
    pairs, choices = simulate_choices(k, true_scores, bt_games, s_neither=s0)
    fit = fit_choice_model(pairs, choices, bt_items, neither=s0 is not None)
    truth = centred(np.asarray(true_scores), s0)
    z = (fit["theta"] - truth) / np.where(fit["se"] > 0, fit["se"], np.inf)
    bt_models[name] = {**fit, "truth": truth, "z": z, "s_neither": s0,
                       "max_abs_err": float(np.max(np.abs(fit["theta"] - truth)))}
    rows.append(_row("4", f"{name}: recovered scores, max |z| ({bt_games} games)",
                     float(np.max(np.abs(z))), "<= 4", np.max(np.abs(z)) <= 4
                     and fit["grad_norm"] <= 1e-8, 4))
  limit = neither_limit(1.0, 0.0, [0.0, -5.0, -10.0, -20.0, -math.inf])
  rows += [_row("4", f"neither: |P3(i) - sigmoid| <= e^(s0)/(e^si+e^sj), s0={r['s_neither']}",
                r["gap"], r["bound"], r["gap"] <= r["bound"] * (1 + 1e-5) + 2 * EPS32)
           for r in limit]
  iia = max(abs(r["conditional"] - r["bt"]) for r in limit)
  rows.append(_row("4", "neither: P(i)/(P(i)+P(j)) == sigmoid(s_i - s_j) at every s0", iia, 0.0,
                   iia <= 1e-6, 1e-6))

  # 5 ---------------------------------------------------------------------------------------------
  r5 = real_softmax_checks(seed)
  lam_rows = r5["lambda_gaps"]
  rows += [
      _row("5", "RealSoftMax - max == log(1 + e^-|a-b|) (1000 pairs)", r5["formula_max_err"],
           0.0, r5["formula_ok"], "4 ulp"),
      _row("5", "0 <= RealSoftMax - max <= log 2", r5["max_gap"], LOG2, r5["gap_in_range"]),
      _row("5", "equality at a = b: gap == log 2", r5["tie_gap"], LOG2, r5["tie_ok"], "4 ulp"),
      *[_row("5", f"{name}: RealSoftMax(a, 0) == a exactly from a = (vs -log(ulp(a)/2))",
             r5["first_exact_max"][name], r5["rounds_away"][name],
             abs(r5["first_exact_max"][name] - r5["rounds_away"][name]) <= 0.25, 0.25)
        for name in ("float32", "float64")],
      _row("5", "float64: max over 3 gaps x 25 lambdas of (lambda^-1 RSM(la, lb) - max)·lambda",
           max(r["gap"] * r["lambda"] for r in lam_rows), f"<= log 2 = {LOG2:.6g}",
           all(r["gap"] <= r["bound"] * (1 + 1e-12) + 1e-14 for r in lam_rows)),
      _row("5", "... -> max as lambda -> inf: gap at lambda=1e4, a=b (equality)",
           r5["gap_at_1e4"], LOG2 / 1e4, abs(r5["gap_at_1e4"] - LOG2 / 1e4) <= 1e-12, 1e-12),
      _row("5", "soft-min: 0 <= min - softmin <= log 2", r5["max_softmin_gap"], LOG2,
           r5["softmin_in_range"]),
      _row("5", "n-ary (n=7): 0 <= logsumexp - max <= log 7", r5["max_n_gap"], math.log(7),
           r5["n_gap_in_range"]),
      _row("5", "n-ary equality at ties: gap == log 7", r5["n_tie_gap"], math.log(7),
           abs(r5["n_tie_gap"] - math.log(7)) <= 1e-6, 1e-6),
      _row("5", "at ±1e4, ±3e38: |RSM - (max + log1p(e^-|a-b|))| in ulps (naive: "
           f"{r5['naive_non_finite']} of {len(r5['extreme'])} non-finite)", r5["extreme_ulps"],
           "<= 1", r5["extreme_finite"] and r5["extreme_ulps"] <= 1
           and r5["naive_non_finite"] > 0, "1 ulp")]

  # 6 ---------------------------------------------------------------------------------------------
  ex6 = log_partition_checks(k6)
  over = overflow_cases()
  rows += [
      _row("6", "jax.hessian(logsumexp) == diag(p) - pp^T", ex6["hessian_vs_covariance"], 0.0,
           ex6["hessian_vs_covariance"] <= 1e-6, 1e-6),
      _row("6", "Hessian PSD: min eigenvalue", ex6["min_eigenvalue"], ">= 0",
           ex6["min_eigenvalue"] >= -1e-7, 1e-7),
      _row("6", "v^T H v == Var_p(v) (16 directions)", ex6["quadratic_vs_variance"], 0.0,
           ex6["quadratic_vs_variance"] <= 1e-5, 1e-5),
      _row("6", "Jensen: g(mid) - mean(g) <= 0 (200 pairs)", ex6["max_jensen_gap"], "<= 0",
           ex6["max_jensen_gap"] <= 1e-5, 1e-5),
      _row("6", "g(x + b) == g(x) + b, b in ±1e3 (relative)", ex6["shift_max_rel_err"], 0.0,
           ex6["shift_max_rel_err"] <= 1e-6, 1e-6),
      _row("6", "softmax(x + b) == softmax(x)", ex6["softmax_shift_max_err"], 0.0,
           ex6["softmax_shift_max_err"] <= 1e-5, 1e-5)]
  for r in over:
    ok = (abs(r["shifted"] - r["exact"]) <= 4 * EPS32 * abs(r["exact"]) and
          abs(r["sj.logsumexp"] - r["exact"]) <= 4 * EPS32 * abs(r["exact"]) and
          not math.isfinite(r["naive"]))
    rows.append(_row("6", f"{r['case']} {r['x']}: naive = {r['naive']}, shifted by max",
                     r["shifted"], r["exact"], ok, "4 ulp"))

  # 7 ---------------------------------------------------------------------------------------------
  ex7 = power_checks([1.5, 1.5, 0.2, -1.0, 0.7], temperature=1.0)
  rows += [
      _row("7", "alpha = 1/2: T -> 2T, max |Q - softmax(o/2T)|", ex7["double_max_err"], 0.0,
           ex7["double_new_temperature"] == 2.0 and ex7["double_max_err"] <= 1e-6, 1e-6),
      _row("7", "alpha = 2: T -> T/2, max |Q - softmax(o/(T/2))|", ex7["half_max_err"], 0.0,
           ex7["half_new_temperature"] == 0.5 and ex7["half_max_err"] <= 1e-6, 1e-6),
      _row("7", "alpha -> inf (T -> 0): argmax, ties split", ex7["alpha_inf_max_err"], 0.0,
           ex7["alpha_inf_max_err"] <= 1e-6, 1e-6),
      _row("7", "alpha -> 0 (T -> inf): uniform", ex7["alpha_zero_max_err"], 0.0,
           ex7["alpha_zero_max_err"] <= 1e-5, 1e-5)]

  # §4.5 ------------------------------------------------------------------------------------------
  ranges = exp_ranges()
  for r in ranges:
    d, m, u, c = r["derived"], r["measured"], r["ulp"], r["confirm"]
    rows.append(_row("4.5", f"{r['dtype']}: largest x with exp(x) finite = log(max)", m["x_max"],
                     d["x_max"], abs(m["x_max"] - d["x_max"]) <= 2 * u["x_max"]
                     and math.isfinite(c["exp(x_max)"])
                     and c["exp(next above x_max)"] == math.inf, "2 ulp"))
    rows.append(_row("4.5", f"{r['dtype']}: smallest x with exp(x) >= tiny = log(tiny)",
                     m["x_normal"], d["x_normal"],
                     abs(m["x_normal"] - d["x_normal"]) <= 2 * u["x_normal"], "2 ulp"))
    target = "x_normal" if r["flushes_subnormals"] else "x_subnormal_rounded"
    rows.append(_row("4.5", f"{r['dtype']}: smallest x with exp(x) > 0 = " + (
        "log(tiny): subnormals flushed" if r["flushes_subnormals"] else "log(subnormal/2)"),
                     m["x_nonzero"], d[target], abs(m["x_nonzero"] - d[target]) <= 2 * u[target]
                     and c["exp(x_nonzero)"] > 0 and c["exp(next below x_nonzero)"] == 0, "2 ulp"))

  return {"checks": rows, "all_pass": all(r["pass"] for r in rows),
          "hessian": ex1, "coding": codes, "entropy_bits": h_bits,
          "digits": {"trits_for_8": trits, "bits_for_8": bits, "float_formula_failure": failure},
          "bradley_terry": {"true_scores": np.asarray(true_scores), "models": bt_models,
                            "neither_limit": limit},
          "real_softmax": r5,
          "log_partition": ex6, "overflow": over, "power": ex7, "exp_range": ranges,
          "config": {"mc_samples": mc_samples, "max_block": max_block,
                     "sequence_length": sequence_length, "bt_items": bt_items,
                     "bt_games": bt_games, "seed": seed}}


def plot(results: dict[str, Any], path: str) -> None:
  """RealSoftMax's gap against λ, coding rates against block length, and BT's recovery."""
  from matplotlib import pyplot as plt

  fig, (ax_l, ax_c, ax_b) = plt.subplots(1, 3, figsize=(13, 3.6))
  lam_rows = results["real_softmax"]["lambda_gaps"]
  for diff in sorted({r["a - b"] for r in lam_rows}):
    rs = [r for r in lam_rows if r["a - b"] == diff]
    ax_l.plot([r["lambda"] for r in rs], [max(r["gap"], 1e-12) for r in rs], "o-", ms=3,
              label=f"a − b = {diff:g}")
  lams = np.asarray(sorted({r["lambda"] for r in lam_rows}))
  ax_l.plot(lams, LOG2 / lams, "k--", lw=1, label="log 2 / λ")
  ax_l.set(xscale="log", yscale="log", xlabel="λ", ylabel="λ⁻¹RealSoftMax(λa, λb) − max(a, b)",
           title="Ex. 5: the gap closes as λ grows")
  ax_l.legend(fontsize=7, title="(a gap of 0 is drawn at 1e-12)", title_fontsize=7)
  codes = results["coding"]
  n = [c["n"] for c in codes]
  ax_c.plot(n, [c["fixed_measured_rate"] for c in codes], "o-", label="fixed length (measured)")
  ax_c.plot(n, [c["huffman_measured_rate"] for c in codes], "s-", label="Huffman (measured)")
  ax_c.plot(n, [c["huffman_expected_rate"] for c in codes], "k.", ms=4, label="Huffman (exact)")
  ax_c.axhline(math.log2(3), color="C3", ls="--", lw=1, label="log2 3 = 1.585")
  ax_c.axhline(2.0, color="gray", ls=":", lw=1, label="2 bits per symbol")
  ax_c.set(xlabel="block length n (symbols coded jointly)", ylabel="bits per symbol",
           title="Ex. 2: coding 3 equiprobable symbols")
  ax_c.legend(fontsize=7)
  for i, (name, m) in enumerate(results["bradley_terry"]["models"].items()):
    ax_b.errorbar(m["truth"] + 0.03 * i, m["theta"], yerr=2 * m["se"], fmt="o", ms=3,
                  capsize=2, label=name.replace("_", " ") + " (±2 SE)")
  lim = np.abs(np.concatenate([m["truth"] for m in results["bradley_terry"]["models"].values()]))
  lim = float(lim.max()) + 0.3
  ax_b.plot([-lim, lim], [-lim, lim], "k--", lw=1)
  ax_b.set(xlabel="true score (centred)", ylabel="fitted score",
           title="Ex. 4: Bradley–Terry recovery")
  ax_b.legend(fontsize=7)
  for ax in (ax_l, ax_c, ax_b):
    ax.grid(alpha=0.3)
  plots.save_figure(fig, path)


def main(argv):
  del argv
  workdir = common.require_workdir()
  results = run(mc_samples=_MC_SAMPLES.value, max_block=_MAX_BLOCK.value,
                sequence_length=_SEQUENCE.value, bt_items=_BT_ITEMS.value,
                bt_games=_BT_GAMES.value, seed=common.SEED.value)
  plot(results, f"{workdir}/exercises.png")
  common.write_results(workdir, results)
  table = [{k: r[k] for k in ("ex", "check", "measured", "expected", "pass")}
           for r in results["checks"]]
  print(common.format_table(table))
  print(f"{sum(r['pass'] for r in results['checks'])}/{len(results['checks'])} checks pass.")


if __name__ == "__main__":
  app.run(main)
