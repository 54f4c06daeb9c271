r"""Exact full-batch solvers for L2-regularised softmax regression: Newton and L-BFGS.

The objective is the mean cross-entropy plus an L2 penalty on the weights (not the bias),

.. math:: J(W, b) = \frac1n\sum_{i=1}^n l(x_i W + b,\ y_i) + \frac\lambda2\|W\|_F^2,

which is convex, and strictly convex in ``W`` for ``λ > 0``. :func:`fit_exact` minimises it to a
gradient of max-abs (∞-norm) at most ``tol``, by default ``1e-6``.

**scikit-learn.** ``LogisticRegression(C=C)`` (multinomial, ``lbfgs``, ``fit_intercept=True``)
documents its objective as ``C·Σ_i l_i + ½‖W‖²``, which is exactly ``C·n·J`` with ``λ = 1/(C·n)``:
the same minimiser, and internally scikit-learn minimises this very ``J`` (its ``LinearModelLoss``
takes the mean loss with ``l2_reg_strength = 1/(C·n)``), with ``tol`` a bound on the max-abs of
``∇J``. The test suite checks both numerically on the digits. Convert with ``W = coef_.T``,
``b = intercept_``.

**Method.** Newton's method with the closed-form Hessian and a backtracking (Armijo) line search.
With augmented inputs ``x̃ = [x, 1]`` and parameters ``Θ = [W; b]`` of shape ``(d+1, q)``,
flattened row-major to ``θ`` of length ``P = (d+1)·q``:

.. math:: \nabla_\Theta J = \frac1n \tilde X^\top(\mathrm{softmax}(O) - Y) + \lambda [W; 0],
   \qquad
   \nabla^2_\theta J = \frac1n\sum_i (\tilde x_i\tilde x_i^\top)\otimes
   (\mathrm{diag}(p_i) - p_i p_i^\top) + \lambda\,(I_d \oplus 0)\otimes I_q,

with ``diag(p) − ppᵀ`` from :func:`softmax_jax.softmax_hessian`. Building the Hessian costs
``O(n·P²)`` and its Cholesky factor ``O(P³)`` per step; Newton then converges quadratically, in
about 10–20 steps. L-BFGS costs ``O(n·P)`` per step but needs tens to hundreds of steps to reach
``1e-6``, and its last steps are slow when ``λ`` is small. It is written here rather than taken from
``optax.lbfgs``: the two-loop recursion with ``H₀ = γI`` (Nocedal & Wright, Alg. 7.4) and Armijo
backtracking from ``t = 1``, in a ``while_loop`` (the backtracking in an inner one). Three things
make it fast (:func:`_lbfgs`):
- **Centred features.** It solves for ``(W, b' = b + μW)`` on ``x − μ``, ``μ`` the feature means:
  the same ``J``, since ``b`` is not penalised, with a far better conditioned Hessian (the
  convergence test is still on ``∇J`` in ``(W, b)``). The digits (pixels in ``[0, 1]``, means up
  to 0.76) took 175 steps uncentred and take 36 (at ``C = 1``; the raw 0–16 pixels: 2,173 and
  444); features of mean 30 took 688 steps and take 9.
- **A line search without products.** Each step makes two products, the logits' change ``D``
  along the direction (with float32 products, in one product with the logits ``O`` themselves)
  and ``(x − μ)ᵀG`` (read from a row-major copy of the transpose, :func:`_prepare_lbfgs`); every
  trial ``t`` is then elementwise, ``O + tD``.
- **Optional float32 products** (``product_dtype``), with everything else in float64.
On the ``60,000 × 784 × 10`` problem of ``benchmarks/solve.py`` it takes 21 steps; the whole
call took 1.2 s with float32 products and 1.9–2.0 s with float64 ones on two CPU cores, where
``optax.lbfgs`` with its zoom line search took 22 steps and 3.0 s (float64).
``method="auto"`` (:func:`default_method`) picks Newton when the Hessian is small and cheap to
build, ``P <= 4,096`` (at most 134 MB in float64) and ``n·P² <= 10¹⁰`` multiply-adds (about 0.3 s a
step on two CPU cores, at the digits' rate), and L-BFGS otherwise. Measured on two CPU cores: the
digits (``n = 1,438``, ``P = 650``, ``n·P² = 6·10⁸``) take Newton, 4–11 steps of about 0.04 s each
(0.15–0.37 s in all) for ``C`` from 0.01 to 10⁴, where L-BFGS on centred features takes 10–80
cheaper steps (0.006–0.033 s in all; 40–290 steps before it centred them) but stops just below
``tol``, further from the optimum than Newton at large ``C`` (below); MNIST's ``60,000 × 784 × 10``
(``P = 7,850``, a 62M-entry Hessian of 0.5 GB) takes L-BFGS, since one Newton step there costs
``60,000·7,850² ≈ 3.7·10¹²`` multiply-adds (about 2 minutes a step on two CPU cores, at the digits'
rate), while ``method="newton"`` remains available (on an accelerator, say).

**The gauge.** Softmax is shift-invariant, so the cross-entropy does not change when the same
vector ``a ∈ R^{d+1}`` is added to every class column of ``Θ`` (``Θ → Θ + a1ᵀ``). For the bias
(``a = e_{d+1}``) the objective is exactly unchanged and its Hessian is singular along that
direction; for the weights the penalty decreases when the rows of ``W`` are centred. Every
minimiser therefore has an optimal representative in ``S = {Θ : Θ1 = 0}`` (each row of ``Θ``,
i.e. each feature's weights and the bias vector, sums to zero over the classes), and the solvers
work in ``S``: they start there (an ``init`` is centred first), the gradient lies in ``S``
(``Σ_c (p_c − y_c) = 0``), and the Newton system is solved with ``s·(I − Π)`` added, where
``Π = I ⊗ (I − 11ᵀ/q)`` projects onto ``S`` and ``s = tr(H)/P``. ``H`` maps ``S`` and its
complement to themselves, so this leaves the step in ``S`` exactly the pseudo-inverse Newton step
(no damping, no change of the objective) and only makes the matrix invertible. Each iterate is
re-centred to remove rounding drift. The returned ``b`` thus sums to zero, as scikit-learn's
``intercept_`` does. With ``λ = 0`` and features that are constant zero (the digits' corner
pixels), ``H`` is singular on ``S`` too; when the Cholesky factorisation fails, the step is
retried with a ridge ``10⁻¹⁰·s·I`` (a Levenberg–Marquardt step). Note that with ``λ = 0`` a
minimiser need not exist at all (separable data), and the solver then stops at ``max_iter`` with
``converged=False``.

**Precision.** A gradient of ``1e-6`` and objectives that agree to ``1e-6`` relative need float64:
the solvers run inside :func:`enable_x64` whatever the global setting (L-BFGS can round just its
products to float32, ``product_dtype``), and return float64 NumPy parameters (convert with
``jax.tree.map(jnp.asarray, params)`` for float32 JAX arrays). Each solver is one jitted
``lax.while_loop``; compilation is timed apart from the solve and cached per problem shape. A small
gradient bounds the excess objective by ``‖∇J‖₂²/(2μ)``, ``μ`` the least curvature on ``S`` (at
least ``λ`` along ``W``), so with a small ``λ`` (a large ``C``) lower ``tol``: on the digits at ``C
= 10⁴``, ``tol = 1e-6`` leaves ``J`` 0.8% (Newton) or 0.9% (L-BFGS; 1.9% with float32 products)
above scikit-learn's ``tol = 1e-10`` optimum, and ``tol = 1e-10`` reaches it (4 more Newton steps).
At ``C = 1`` and ``tol = 1e-6``, Newton is within ``2.4·10⁻⁹`` (relative) of it and L-BFGS within
``2.1·10⁻⁸``; at ``C = 100``, ``1.5·10⁻⁸`` and ``1.2·10⁻⁵``.

References:
  Zhang et al., Dive into Deep Learning, §4.1 (softmax regression) and exercise 4.1.1 (the
  softmax Hessian); Böhning, Multinomial logistic regression algorithm, Ann. Inst. Stat. Math. 44,
  1992 (the Kronecker structure of the Hessian); Nocedal & Wright, Numerical Optimization, 2nd ed.,
  2006, §3.1 (Armijo backtracking), §3.4 and §10.3 (Newton and Levenberg–Marquardt), §7.2
  (L-BFGS); Liu & Nocedal, On the limited memory BFGS method, Math. Prog. 45, 1989.
"""

from __future__ import annotations

import functools
import math
import numbers
import time
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from softmax_jax import _precision
from softmax_jax.losses import cross_entropy
from softmax_jax.losses import cross_entropy_grad
from softmax_jax.model import Params
from softmax_jax.model import logits
from softmax_jax.softmax import softmax
from softmax_jax.train import add_l2

METHODS = ("auto", "newton", "lbfgs")
NEWTON_MAX_PARAMS = 4096  # method="auto": Newton up to this many parameters P = (d+1)·q ...
NEWTON_MAX_WORK = 1e10  # ... and up to n·P² multiply-adds per Hessian; L-BFGS beyond either
DEFAULT_MAX_ITER = {"newton": 100, "lbfgs": 10_000}
_ARMIJO_C1 = 1e-4  # sufficient decrease: J(θ + tΔ) <= J(θ) + c1·t·∇Jᵀ Δ
_MAX_HALVINGS = 60  # t >= 2⁻⁶⁰ before the line search gives up
_RIDGE = 1e-10  # the Levenberg–Marquardt fallback, relative to s = tr(H)/P
_HESSIAN_CHUNK_ELEMENTS = 2**24  # examples per chunk of the Hessian sum: m·(d+1)·q <= this
PRODUCT_DTYPES = ("float64", "float32")


class SolveInfo(NamedTuple):
  """How a solve went.

  Attributes:
    objective: ``J(W, b)`` at the solution, in float64.
    grad_norm: the max-abs (∞-norm) of ``∇J`` there, over ``W`` and ``b``.
    iterations: Newton or L-BFGS steps taken.
    converged: ``grad_norm <= tol``.
    solve_seconds: wall time from the checked inputs to the solution: the copies of ``x`` in the
      product dtype (Newton: augmented; L-BFGS: centred) with its transposed copy, transfers and
      the compiled solve, less ``compile_seconds``.
    compile_seconds: time to trace and compile the solver and the data preparation; 0.0 when a
      problem of the same shapes, method and product dtype was compiled before in this process.
      The solver compiles while the data preparation runs, so on a first call the two overlap.
    method: ``"newton"`` or ``"lbfgs"``, the method that ran.
  """

  objective: float
  grad_norm: float
  iterations: int
  converged: bool
  solve_seconds: float
  compile_seconds: float
  method: str


def enable_x64():
  """A context manager turning on float64 for a block: ``jax.enable_x64`` or its older home."""
  if hasattr(jax, "enable_x64") and callable(jax.enable_x64):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64 as old  # jax < 0.8

  return old()


# ----------------------------------------------------------------------------------------------
# Kernels on Θ = [W; b], shape (d+1, q), and augmented inputs x̃ = [x, 1], shape (n, d+1).
# ----------------------------------------------------------------------------------------------


def _augment(x_NxD: jax.Array) -> jax.Array:
  return jnp.concatenate([x_NxD, jnp.ones((x_NxD.shape[0], 1), x_NxD.dtype)], axis=1)


def _stack(params: Params) -> jax.Array:
  return jnp.concatenate([params.W, params.b[None, :]], axis=0)


def _center(theta_DxC: jax.Array) -> jax.Array:
  """Projects onto the gauge-fixed subspace S: every row sums to zero over the classes."""
  return theta_DxC - jnp.mean(theta_DxC, axis=1, keepdims=True)


def _weights_only(theta_DxC: jax.Array) -> jax.Array:
  """``[W; 0]``: the penalised part of Θ (the bias row zeroed)."""
  return theta_DxC.at[-1].set(0)


def _mean_ce_and_probs(o_NxC, y_N):
  """The mean cross-entropy of class ids ``y_N`` and ``softmax(o_NxC)``, by one logsumexp.

  A lean copy of :func:`softmax_jax.cross_entropy` for the solvers, whose logits are finite
  (``x`` is checked, ``Θ`` starts finite): none of its handling of infinite logits, masks or
  weights, which made the L-BFGS solver take 0.1–0.3 s longer to compile (about 1.0 s against
  0.75 s at 60,000 × 785 × 10). A trial step that overflows gives ``inf`` or NaN, and the line
  searches reject both.
  """
  max_Nx1 = jnp.max(o_NxC, axis=1, keepdims=True)
  exp_NxC = jnp.exp(o_NxC - max_Nx1)
  sum_Nx1 = jnp.sum(exp_NxC, axis=1, keepdims=True)
  label_Nx1 = jnp.take_along_axis(o_NxC, y_N[:, None], axis=1)
  return jnp.mean(jnp.log(sum_Nx1) + max_Nx1 - label_Nx1), exp_NxC / sum_Nx1


def _value(theta_DxC, xt_NxD, y_N, l2):
  ce, _ = _mean_ce_and_probs(_precision.dot(xt_NxD, theta_DxC), y_N)
  return ce + 0.5 * l2 * jnp.sum(jnp.square(_weights_only(theta_DxC)))


def _value_and_grad(theta_DxC, xt_NxD, xtT_DxN, y_N, l2):
  """``J`` and its closed-form gradient ``X̃ᵀ(softmax(O) − Y)/n + λ[W; 0]``.

  ``xtT_DxN`` is a row-major copy of ``X̃ᵀ`` (:func:`_prepare`): it makes ``X̃ᵀ·G`` a plain
  product, on a CPU 2× faster than contracting ``X̃`` over its rows.
  """
  o_NxC = _precision.dot(xt_NxD, theta_DxC)
  w_DxC = _weights_only(theta_DxC)
  ce, p_NxC = _mean_ce_and_probs(o_NxC, y_N)
  value = ce + 0.5 * l2 * jnp.sum(jnp.square(w_DxC))
  g_NxC = p_NxC - jax.nn.one_hot(y_N, o_NxC.shape[1], dtype=o_NxC.dtype)
  xtg_DxC = _precision.dot(xtT_DxN, g_NxC)
  return value, xtg_DxC / xt_NxD.shape[0] + l2 * w_DxC


def _chunk_size(n: int, d1: int, q: int) -> int:
  return max(1, min(n, _HESSIAN_CHUNK_ELEMENTS // (d1 * q)))


def _column_scales(xt_NxD):
  """Powers of two ``2^(−t_j)`` for the columns of ``X̃`` whose products could overflow the
  Hessian's sums, and 1 for the others (``t_j = 0``).

  A sum of ``n`` products of entries below ``2^k`` stays below ``2^(2k + log₂ n)``; with
  ``k = ⌊(maxexp − 2 − ⌈log₂ n⌉)/2⌋`` (float32, ``n = 1438``: ``k = 57``, ``1.4e17``) that is at
  most a quarter of the float range. Columns whose max reaches ``2^k`` are scaled to
  ``[2^(k−1), 2^k)``, no further: the smaller the scale, the fewer of their small products
  underflow. Returns the exponents ``t``, int32 ``(d+1,)``: the columns are multiplied by
  ``2^-t`` (:func:`softmax_jax._precision.times_pow2`)."""
  n = xt_NxD.shape[0]
  info = jnp.finfo(xt_NxD.dtype)
  k = (int(info.maxexp) - 2 - math.ceil(math.log2(max(n, 1)))) // 2
  max_D = jnp.max(jnp.abs(xt_NxD), axis=0)
  _, e_D = jnp.frexp(max_D)  # max = f·2^e, f in [½, 1)
  return jnp.where(max_D >= 2.0**k, e_D - k, 0)


def _hessian(theta_DxC, xt_NxD, l2, *, chunk: int, scaled: bool = False):
  r"""The ``(P, P)`` Hessian of ``J`` in θ (row-major Θ), summed over chunks of examples.

  With ``S_m = diag(p_m) − p_m p_mᵀ`` (:func:`softmax_jax.softmax_hessian`) the sum
  ``Σ_m (x̃_m x̃_mᵀ) ⊗ S_m`` splits into a block diagonal, ``Σ_m x̃_m x̃_mᵀ p_ma`` for each class
  ``a``, and ``−Z Zᵀ`` with ``Z``'s column ``m`` the vector ``x̃_m ⊗ p_m``. ``Z Zᵀ`` is one
  plain product of ``n·P²`` multiply-adds (as many as the Kronecker form's contraction), with ``Z``
  built row-major, ``(P, m)``: in that layout the product ran 2.5× faster on a CPU than
  contracting an ``(m, P)`` array over its rows, and the whole Hessian of the digits took 16 ms
  against the Kronecker form's 61 ms. Memory: ``m·P`` per chunk.

  With ``scaled``, columns of ``X̃`` whose square could overflow are scaled by powers of two
  (:func:`_column_scales`) and the blocks scaled back at the end, exactly: an entry beyond the
  float range is then ``±inf``, where the block diagonal minus ``Z Zᵀ`` gave ``inf − inf = NaN``.
  """
  n, d1 = xt_NxD.shape
  q = theta_DxC.shape[1]
  p_NxC = softmax(_precision.dot(xt_NxD, theta_DxC), axis=1)
  if scaled:
    t_D = _column_scales(xt_NxD)
    xt_NxD = _precision.times_pow2(xt_NxD, -t_D[None, :])
  pad = (-n) % chunk  # padded rows have x̃ = 0, so they add nothing
  xs = jnp.pad(xt_NxD, ((0, pad), (0, 0))).reshape(-1, chunk, d1)
  ps = jnp.pad(p_NxC, ((0, pad), (0, 0))).reshape(-1, chunk, q)

  def add_chunk(acc, chunk_xs):
    outer_PxP, diag_DxCxD = acc
    x_MxD, p_MxC = chunk_xs
    z_PxM = (x_MxD.T[:, None, :] * p_MxC.T[None, :, :]).reshape(d1 * q, -1)
    outer_PxP = outer_PxP + _precision.einsum("pm,rm->pr", z_PxM, z_PxM)
    diag_DxCxD = diag_DxCxD + _precision.einsum("ma,mi,mj->iaj", p_MxC, x_MxD, x_MxD)
    return (outer_PxP, diag_DxCxD), None

  dtype = xt_NxD.dtype
  (outer, diag), _ = jax.lax.scan(
      add_chunk, (jnp.zeros((d1 * q, d1 * q), dtype), jnp.zeros((d1, q, d1), dtype)), (xs, ps))
  eye_CxC = jnp.eye(q, dtype=dtype)
  penalised = jnp.ones((d1,), dtype).at[-1].set(0)
  h = (jnp.einsum("iaj,ab->iajb", diag, eye_CxC) - outer.reshape(d1, q, d1, q)) / n
  if scaled:  # back to X̃'s scale by powers of two: exact, or ±inf beyond the range
    h = _precision.times_pow2(h, t_D[:, None, None, None])
    h = _precision.times_pow2(h, t_D[None, None, :, None])
  h = h + l2 * jnp.einsum("ij,ab->iajb", jnp.diag(penalised), eye_CxC)
  return h.reshape(d1 * q, d1 * q)


def _max_abs(x: jax.Array) -> jax.Array:
  return jnp.max(jnp.abs(x))


@functools.partial(jax.jit, static_argnames=("chunk",))
def _newton(theta0_DxC, xt_NxD, xtT_DxN, y_N, l2, tol, max_iter, *, chunk: int):
  d1, q = theta0_DxC.shape
  size = d1 * q
  dtype = xt_NxD.dtype
  # I − Π = I_{d+1} ⊗ 11ᵀ/q: the projector onto the gauge directions Θ → Θ + a1ᵀ.
  gauge = jnp.einsum("ij,ab->iajb", jnp.eye(d1, dtype=dtype),
                     jnp.full((q, q), 1 / q, dtype)).reshape(size, size)

  def newton_step(theta, value, grad):
    h = _hessian(theta, xt_NxD, l2, chunk=chunk)
    s = jnp.trace(h) / size
    s = jnp.where(s > 0, s, 1)
    a = h + s * gauge
    chol = jnp.linalg.cholesky(a)
    chol = jax.lax.cond(jnp.all(jnp.isfinite(chol)), lambda: chol,
                        lambda: jnp.linalg.cholesky(a + _RIDGE * s * jnp.eye(size, dtype=dtype)))
    delta = jax.scipy.linalg.cho_solve((chol, True), -grad.reshape(size)).reshape(d1, q)
    slope = jnp.vdot(grad, delta)  # < 0 for a descent direction

    def too_high(ls):
      t, trial, k = ls
      return ~(trial <= value + _ARMIJO_C1 * t * slope) & (k < _MAX_HALVINGS)  # NaN is too high

    def halve(ls):
      t, _, k = ls
      return t / 2, _value(theta + t / 2 * delta, xt_NxD, y_N, l2), k + 1

    one = jnp.ones((), dtype)
    t, trial, _ = jax.lax.while_loop(too_high, halve,
                                     (one, _value(theta + delta, xt_NxD, y_N, l2), 0))
    ok = (slope < 0) & (trial <= value + _ARMIJO_C1 * t * slope)
    return jnp.where(ok, _center(theta + t * delta), theta), ok

  def keep_going(state):
    it, _, _, grad, ok = state
    return (it < max_iter) & (_max_abs(grad) > tol) & ok

  def body(state):
    it, theta, value, grad, _ = state
    theta, ok = newton_step(theta, value, grad)
    value, grad = _value_and_grad(theta, xt_NxD, xtT_DxN, y_N, l2)
    return it + ok.astype(jnp.int32), theta, value, grad, ok

  theta0_DxC = _center(theta0_DxC)
  value, grad = _value_and_grad(theta0_DxC, xt_NxD, xtT_DxN, y_N, l2)
  it, theta, value, grad, _ = jax.lax.while_loop(
      keep_going, body, (jnp.zeros((), jnp.int32), theta0_DxC, value, grad, jnp.array(True)))
  return theta, value, _max_abs(grad), it


def _lbfgs_direction(grad_P, s_MxP, y_MxP, gamma):
  """``−H·∇J``, ``H`` the L-BFGS inverse Hessian of the stored pairs, by the two-loop recursion
  (Nocedal & Wright, Alg. 7.4) with ``H₀ = γI``.

  The pairs are the rows of ``S`` and ``Y``, oldest first; a row of zeros (no pair stored yet)
  contributes nothing.
  """
  sy_M = jnp.sum(s_MxP * y_MxP, axis=1)
  rho_M = jnp.where(sy_M > 0, 1 / jnp.where(sy_M > 0, sy_M, 1), 0)
  m = s_MxP.shape[0]

  def newest_first(j, carry):
    r, alpha_M = carry
    i = m - 1 - j
    a = rho_M[i] * jnp.vdot(s_MxP[i], r)
    return r - a * y_MxP[i], alpha_M.at[i].set(a)

  r, alpha_M = jax.lax.fori_loop(0, m, newest_first, (grad_P, jnp.zeros_like(rho_M)))

  def oldest_first(i, r):
    return r + (alpha_M[i] - rho_M[i] * jnp.vdot(y_MxP[i], r)) * s_MxP[i]

  return -jax.lax.fori_loop(0, m, oldest_first, gamma * r)


@functools.partial(jax.jit, static_argnames=("memory_size",))
def _lbfgs(theta0_DxC, x_NxD, xT_DxN, mu_D, y_N, l2, tol, max_iter, *, memory_size: int):
  """L-BFGS on ``J``, on centred features and with a line search that needs no product per trial.

  ``x_NxD`` is ``x − μ`` and ``xT_DxN`` its row-major transpose (:func:`_prepare_lbfgs`), in the
  product dtype; everything else is float64. The iterate is ``Θ' = [W; b + μW]``, which gives
  ``x·W + b = (x − μ)·W + b'`` and the same ``J`` (``b`` is not penalised); :func:`fit_exact`
  converts ``Θ`` in (centred) and out, and the convergence test is on ``∇J`` in ``(W, b)``:
  ``∇_W J = ∇_W J' + μ∇_b' J'ᵀ``.

  Each pass makes two products: the logits' change ``D`` along the direction ``Δ``, after which
  every trial ``t`` of the Armijo search is elementwise (``O + tD``), and ``(x − μ)ᵀG`` for the
  gradient at the accepted point. In float64, ``D = O(Θ' + Δ) − O`` with ``O`` carried from the
  pass before, so that after a full step (``t = 1``, the usual case) ``O`` is a fresh product and
  no rounding adds up: carrying ``O + tD`` with ``D = (x − μ)·Δ`` drifted by ~1e-12 over a few
  hundred steps, which at features of scale 1e6 is 1e-6 in ``∇_W J``. With float32 products that
  difference would be float32 rounding, far larger than ``D`` near the optimum, so ``O`` and ``D``
  come from one product, ``(x − μ)·[W' | ΔW]`` (15.1 ms against 13.3 for ``D`` alone at
  60,000 × 784 × 10). The first pass starts from ``Θ' = 0`` and ``O = 0`` with ``Δ = Θ'₀`` and
  ``t = 1``: it evaluates the start, and each product is compiled once.
  """
  n = x_NxD.shape[0]
  d1, q = theta0_DxC.shape
  size = d1 * q
  dtype = theta0_DxC.dtype
  carry_logits = x_NxD.dtype == dtype
  onehot_NxC = jax.nn.one_hot(y_N, q, dtype=dtype)

  def products(theta_DxC):  # (x − μ)·W' + b' for the columns of theta_DxC
    return _precision.dot(x_NxD, theta_DxC[:-1].astype(x_NxD.dtype)).astype(dtype) + (
        theta_DxC[-1:])

  def value_and_probs(theta_DxC, o_NxC):
    ce, p_NxC = _mean_ce_and_probs(o_NxC, y_N)
    return ce + 0.5 * l2 * jnp.sum(jnp.square(_weights_only(theta_DxC))), p_NxC

  def grad_norm(grad_P):
    grad_DxC = grad_P.reshape(d1, q)
    return jnp.maximum(_max_abs(grad_DxC[:-1] + mu_D[:, None] * grad_DxC[-1:]),
                       _max_abs(grad_DxC[-1]))

  def keep_going(state):  # ``norm`` is carried, not recomputed here: one fusion less to compile
    it, _, _, _, _, norm, _, slope, _, _, _, _, ok, first = state
    return first | (ok & (it < max_iter) & (norm > tol) & (slope < 0))

  def body(state):
    it, theta, o_NxC, value, grad, _, delta, slope, t, s_MxP, y_MxP, gamma, _, first = state
    delta_DxC = delta.reshape(d1, q)
    if carry_logits:  # D = O(Θ' + Δ) − O: after a full step (t = 1) O is a fresh product
      d_NxC = products(theta + delta_DxC) - o_NxC
    else:
      both_NxC = products(jnp.concatenate([theta, delta_DxC], axis=1))
      o_NxC, d_NxC = both_NxC[:, :q], both_NxC[:, q:]
      value = jnp.where(first, value, value_and_probs(theta, o_NxC)[0])

    def too_high(ls):
      t, trial, _, k = ls
      armijo = trial <= value + _ARMIJO_C1 * t * slope  # NaN is too high
      return (k == 0) | (~first & ~armijo & (k <= _MAX_HALVINGS))

    def halve(ls):  # the first call evaluates t itself
      t, _, _, k = ls
      return t / 2, *value_and_probs(theta + t / 2 * delta_DxC, o_NxC + t / 2 * d_NxC), k + 1

    t, trial, p_NxC, _ = jax.lax.while_loop(
        too_high, halve, (2 * t, jnp.zeros((), dtype), jnp.zeros_like(o_NxC), 0))
    accept = first | (trial <= value + _ARMIJO_C1 * t * slope)
    step = t * delta
    g_NxC = p_NxC - onehot_NxC
    xg_DxC = _precision.dot(xT_DxN, g_NxC.astype(x_NxD.dtype)).astype(dtype)
    new_theta = theta + step.reshape(d1, q)
    new_grad = (jnp.concatenate([xg_DxC, jnp.sum(g_NxC, axis=0, keepdims=True)]) / n +
                l2 * _weights_only(new_theta)).reshape(size)
    change = new_grad - grad
    curvature = jnp.vdot(step, change)
    # Store the pair only with positive curvature (always, for λ > 0 and an accepted step).
    keep = accept & ~first & (
        curvature > 1e-10 * jnp.linalg.norm(step) * jnp.linalg.norm(change))
    s_MxP = jnp.where(keep, jnp.roll(s_MxP, -1, axis=0).at[-1].set(step), s_MxP)
    y_MxP = jnp.where(keep, jnp.roll(y_MxP, -1, axis=0).at[-1].set(change), y_MxP)
    gamma = jnp.where(keep, curvature / jnp.vdot(change, change), gamma)
    theta, o_NxC, value, grad = jax.tree.map(
        lambda new, old: jnp.where(accept, new, old),
        (new_theta, o_NxC + t * d_NxC, trial, new_grad), (theta, o_NxC, value, grad))
    # The next direction; steepest descent if rounding made it uphill.
    new_delta = _lbfgs_direction(grad, s_MxP, y_MxP, gamma)
    new_slope = jnp.vdot(grad, new_delta)
    uphill = ~(new_slope < 0)
    new_delta = jnp.where(uphill, -gamma * grad, new_delta)
    new_slope = jnp.where(uphill, jnp.vdot(grad, new_delta), new_slope)
    delta = jnp.where(accept, new_delta, delta)
    slope = jnp.where(accept, new_slope, slope)
    # The first step has no pairs to scale it: it changes no entry by more than 1.
    t = jnp.where(first, jnp.minimum(1, 1 / jnp.maximum(_max_abs(delta), jnp.finfo(dtype).tiny)),
                  1).astype(dtype)
    return (it + (accept & ~first).astype(jnp.int32), theta, o_NxC, value, grad, grad_norm(grad),
            delta, slope, t, s_MxP, y_MxP, gamma, accept, jnp.zeros_like(first))

  # The first direction's scale: 1 / the mean Hessian diagonal at Θ' = 0,
  # mean(x̃²)·(q − 1)/q² + λ, with x̃ = [x − μ, 1].
  mean_sq = (jnp.mean(jnp.square(x_NxD.astype(dtype))) * (d1 - 1) + 1) / d1
  curvature0 = mean_sq * (q - 1) / q**2 + l2 * (d1 - 1) / d1
  gamma = jnp.where(curvature0 > 0, 1 / curvature0, 1).astype(dtype)
  history = jnp.zeros((memory_size, size), dtype)
  zeros, zero = jnp.zeros((size,), dtype), jnp.zeros((), dtype)
  state = (jnp.zeros((), jnp.int32), jnp.zeros_like(theta0_DxC), jnp.zeros((n, q), dtype), zero,
           zeros, zero, theta0_DxC.reshape(size), zero - 1, jnp.ones((), dtype), history, history,
           gamma, jnp.array(True), jnp.array(True))
  it, theta, _, value, _, norm, *_ = jax.lax.while_loop(keep_going, body, state)
  return theta, value, norm, it


_COMPILED: dict[tuple[Any, ...], Any] = {}


@jax.jit
def _prepare(x_NxD):
  """``X̃ = [x, 1]`` in float64, and a row-major copy of ``X̃ᵀ``.

  They are made by an executable of their own: inside the solver's, XLA would fold the copy back
  into a transposed read of ``X̃``, the slow layout for ``X̃ᵀ·G``.
  """
  x_NxD = x_NxD.astype(jnp.float64)
  xt_NxD = jnp.concatenate([x_NxD, jnp.ones((x_NxD.shape[0], 1), x_NxD.dtype)], axis=1)
  return xt_NxD, xt_NxD.T


@functools.partial(jax.jit, static_argnames=("dtype",))
def _prepare_lbfgs(x_NxD, *, dtype: str):
  """The centred features ``x − μ`` in the product dtype, a row-major copy of their transpose for
  ``(x − μ)ᵀG`` (see :func:`_prepare`), and ``μ`` (float64).

  ``μ`` is the column mean, and ``x − μ`` is taken in the wider of ``x``'s dtype and the product
  dtype, then rounded to the product dtype (any ``μ`` gives an exact reparametrisation,
  :func:`_lbfgs`): float32 ``x`` with float32 products needs no float64 copy, and float64 ``x``
  is centred before it is rounded. A column whose ``x − μ`` would overflow is left uncentred.
  On a CPU ``xᵀG`` from the transposed copy took 16.6 ms against 23.1 ms for ``(Gᵀx)ᵀ`` and 39.2
  ms for ``x`` contracted over its rows (float32, 60,000 × 784 × 10); in float64 36, 50 and 78 ms.
  """
  n = x_NxD.shape[0]
  # The means and the centring in the wider of x's dtype and the product dtype (float64 x is
  # centred before it is rounded to float32); a copy of x only where that widens it.
  x_NxD = x_NxD.astype(jnp.promote_types(x_NxD.dtype, dtype))
  sum_D = jnp.sum(x_NxD, axis=0)  # XLA:CPU's column sum of 10⁶ float32 rows is exact to an ulp
  mu_D = sum_D / n
  if x_NxD.dtype == jnp.float64:  # Σx can overflow (float32 x cannot: fit_exact bounds it)
    mu_D = jax.lax.cond(jnp.all(jnp.isfinite(sum_D)), lambda: mu_D,
                        lambda: jnp.sum(x_NxD / n, axis=0))
  biggest = float(jnp.finfo(dtype).max)
  hi_D, lo_D = jnp.max(x_NxD, axis=0), jnp.min(x_NxD, axis=0)
  ok_D = (jnp.abs(hi_D - mu_D) <= biggest) & (jnp.abs(mu_D - lo_D) <= biggest)
  mu_D = jnp.where(ok_D, mu_D, 0)  # a column whose x − μ would overflow stays uncentred
  x_NxD = (x_NxD - mu_D[None, :]).astype(dtype)
  mu_D = mu_D.astype(jnp.float64)
  return x_NxD, x_NxD.T, mu_D


_FUNCTIONS = {"newton": _newton, "lbfgs": _lbfgs, "prepare": _prepare,
              "prepare_lbfgs": _prepare_lbfgs}


def _compiled(name: str, args: tuple[Any, ...], static: dict[str, int]):
  """The AOT-compiled ``_FUNCTIONS[name]`` for these shapes, and the seconds spent compiling it
  (0 if cached)."""
  key = (name, jax.default_backend(), tuple((np.shape(a), str(a.dtype)) for a in args),
         tuple(sorted(static.items())))
  if key in _COMPILED:
    return _COMPILED[key], 0.0
  fn = _FUNCTIONS[name]
  start = time.perf_counter()
  compiled = fn.lower(*args, **static).compile()
  seconds = time.perf_counter() - start
  _COMPILED[key] = compiled
  return compiled, seconds


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _check_nonneg(value: Any, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
      math.isfinite(value) and value >= 0):
    raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
  return float(value)


def _check_data(x: ArrayLike, y: ArrayLike, num_classes: int | None):
  """Host-side checks; returns ``x`` as given, int32 ``y`` (NumPy), the number of classes and
  ``max|x|``."""
  x = np.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):  # jnp's knows bfloat16
    raise TypeError(f"x must be a floating-point array; got dtype {x.dtype} with shape "
                    f"{x.shape}.")
  if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
    raise ValueError(f"x must have shape (n, d) with n, d >= 1; got {x.shape}.")
  lo, hi = np.min(x), np.max(x)
  if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN propagates through both
    finite = np.isfinite(x)
    index = np.unravel_index(np.argmin(finite), x.shape)
    raise ValueError(f"x must be finite; got {x[index]} at index {tuple(int(i) for i in index)} "
                     f"({np.sum(~finite)} such entries).")
  y = np.asarray(y)
  if not np.issubdtype(y.dtype, np.integer):
    raise TypeError(f"y must be integer class ids; got dtype {y.dtype} with shape {y.shape}. "
                    f"Cast with .astype(np.int32) if they are whole numbers.")
  if y.shape != (x.shape[0],):
    raise ValueError(f"y must have shape ({x.shape[0]},), one class id per row of x {x.shape}; "
                     f"got {y.shape}.")
  if num_classes is None:
    if y.min() < 0:
      raise ValueError(f"y must be class ids >= 0; got {y.min()} at index {np.argmin(y)}.")
    num_classes = int(y.max()) + 1
  elif isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or (
      num_classes < 1):
    raise ValueError(f"num_classes must be a positive int; got {num_classes!r}.")
  num_classes = int(num_classes)
  bad = (y < 0) | (y >= num_classes)
  if bad.any():
    index = int(np.argmax(bad))
    raise ValueError(f"y must be class ids in [0, {num_classes}); got {y[index]} at index "
                     f"[{index}] ({int(bad.sum())} out of range).")
  return x, y.astype(np.int32), num_classes, float(max(abs(lo), abs(hi)))


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def objective(params: Params, x: ArrayLike, y: ArrayLike, *, l2: ArrayLike) -> jax.Array:
  r"""The regularised objective ``J(W, b)`` that :func:`fit_exact` minimises.

  .. math:: J(W, b) = \frac1n\sum_i l(x_i W + b,\ y_i) + \frac\lambda2\|W\|_F^2

  with ``l`` the softmax cross-entropy (:func:`softmax_jax.cross_entropy`, ``reduction="mean"``).
  The bias is not penalised. ``J`` equals scikit-learn's ``C·Σ_i l_i + ½‖W‖²`` divided by ``C·n``
  when ``λ = 1/(C·n)``. It is computed in the promoted dtype of ``params`` and ``x``: float64
  inputs under :func:`enable_x64` give float64. It is differentiable to any order.

  Args:
    params: ``Params(W, b)``, ``W`` of shape ``(d, q)``, ``b`` of shape ``(q,)``.
    x: features, shape ``(n, d)``.
    y: integer class ids, shape ``(n,)``, in ``[0, q)``.
    l2: ``λ >= 0``, a number or a scalar array.

  Returns:
    A scalar.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.2 and §3.7 (weight decay).
  """
  if isinstance(l2, numbers.Real):
    _check_nonneg(l2, "l2")
  o = logits(params, x)
  if o.ndim != 2:
    raise ValueError(f"x must have shape (n, d); got {jnp.shape(x)}.")
  # add_l2 sums ½Σ(λW)·W: at λ = 0 a weight of 3e38 in float32 gave a NaN objective and gradient
  # as λ/2·ΣW² (0·inf), and for λ > 0 the gradient λW stays finite where 2W would overflow.
  return add_l2(cross_entropy(o, y, reduction="mean"), jnp.asarray(params.W), l2=l2)


def gradient(params: Params, x: ArrayLike, y: ArrayLike, *, l2: ArrayLike) -> Params:
  r"""The closed-form gradient of :func:`objective`.

  .. math:: \nabla_W J = \frac1n X^\top(\mathrm{softmax}(O) - Y) + \lambda W,\qquad
     \nabla_b J = \frac1n\sum_i (\mathrm{softmax}(o_i) - y_i)

  Args:
    params, x, y, l2: as in :func:`objective`.

  Returns:
    ``Params`` of the gradients, in the promoted dtype of ``params`` and ``x``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.3 (eq. 4.1.10).
  """
  if isinstance(l2, numbers.Real):
    _check_nonneg(l2, "l2")
  o = logits(params, x)
  if o.ndim != 2:
    raise ValueError(f"x must have shape (n, d); got {jnp.shape(x)}.")
  x = jnp.asarray(x).astype(o.dtype)
  g_NxC = cross_entropy_grad(o, y)
  n = x.shape[0]
  return Params(W=_precision.dot(x.T, g_NxC) / n + l2 * jnp.asarray(params.W),
                b=jnp.sum(g_NxC, axis=0) / n)


def hessian(params: Params, x: ArrayLike, *, l2: ArrayLike) -> jax.Array:
  r"""The closed-form Hessian of :func:`objective` in ``θ``, the row-major flattening of ``[W; b]``.

  .. math:: \nabla^2_\theta J = \frac1n\sum_i (\tilde x_i\tilde x_i^\top)\otimes
     (\mathrm{diag}(p_i) - p_i p_i^\top) + \lambda\,(I_d \oplus 0)\otimes I_q,
     \qquad \tilde x_i = [x_i, 1],\ p_i = \mathrm{softmax}(x_i W + b)

  so entry ``(i·q + a, j·q + b)`` is ``∂²J/∂Θ_{ia}∂Θ_{jb}`` with ``Θ = [W; b]`` of shape
  ``(d+1, q)``, and ``θ = concatenate([W.ravel(), b])``. It does not depend on the labels. It is
  singular along the gauge direction ``b → b + c·1`` (and, with ``λ = 0``, along
  ``W → W + a1ᵀ``); see the module docstring.

  Args:
    params: ``Params(W, b)``.
    x: features, shape ``(n, d)``.
    l2: ``λ >= 0``.

  Returns:
    Shape ``((d+1)·q, (d+1)·q)``, in the promoted dtype of ``params`` and ``x``. Its entries
    scale as ``x_i x_j``: an entry beyond the float range (features beyond about 1.8e19 in
    float32) is ``±inf``, never NaN. Columns whose products could overflow the sums (max
    ``|x_j|`` beyond ``2^k``, ``k ≈ (maxexp − log₂ n)/2``: 1.4e17 in float32 at n = 1438) are
    scaled by powers of two and scaled back; there a product ``x_i x_j p_a p_b`` that is
    subnormal once scaled (below ``2^-126`` times the scale factors, float32) counts as 0. Other
    columns are exact as before. Extreme logits from ``W`` and ``b`` (±3e38, −inf) are exact.

  References:
    Böhning, Multinomial logistic regression algorithm, 1992; Zhang et al., Dive into Deep
    Learning, exercise 4.1.1.
  """
  if isinstance(l2, numbers.Real):
    _check_nonneg(l2, "l2")
  o = logits(params, x)
  if o.ndim != 2:
    raise ValueError(f"x must have shape (n, d); got {jnp.shape(x)}.")
  theta = _stack(Params(jnp.asarray(params.W), jnp.asarray(params.b))).astype(o.dtype)
  xt = _augment(jnp.asarray(x).astype(o.dtype))
  return _hessian(theta, xt, l2, chunk=_chunk_size(*xt.shape, theta.shape[1]), scaled=True)


def fit_exact(x: ArrayLike, y: ArrayLike, *, l2: float, num_classes: int | None = None,
              method: str = "auto", tol: float = 1e-6, max_iter: int | None = None,
              init: Params | None = None, memory_size: int = 10,
              product_dtype: str = "float64") -> tuple[Params, SolveInfo]:
  r"""Minimises :func:`objective` to ``max|∇J| <= tol``, in float64 (optionally with float32
  products for L-BFGS).

  .. math:: \min_{W, b}\ \frac1n\sum_i l(x_i W + b,\ y_i) + \frac\lambda2\|W\|_F^2

  For scikit-learn's ``LogisticRegression(C=C)`` use ``l2 = 1/(C·n)``: the minimiser is the
  same, and scikit-learn's objective ``C·Σ l_i + ½‖W‖²`` is ``C·n`` times ours. The biases are
  returned centred (``Σ_c b_c = 0``; the objective does not see their common shift), and so is
  each row of ``W``. The convergence test is on the ∞-norm of ``∇J`` over ``W`` and ``b``, as is
  scikit-learn's ``tol``. Newton also stops, with ``converged=False``, if its line search finds
  no decrease that float64 can resolve (only possible for ``tol`` near rounding level).

  Args:
    x: features, shape ``(n, d)``, floating point (any width; the solve is in float64) and
      finite. Memory: two copies in the product dtype (Newton: ``X̃`` and ``X̃ᵀ``; L-BFGS: the
      centred ``x − μ`` and its transpose).
    y: integer class ids, shape ``(n,)``.
    l2: ``λ >= 0``. With ``λ = 0`` a minimiser may not exist (separable data).
    num_classes: ``q``; by default ``max(y) + 1``.
    method: ``"newton"`` (closed-form Hessian, Armijo backtracking), ``"lbfgs"``
      (limited-memory BFGS, Armijo backtracking) or ``"auto"``: Newton when the Hessian is
      small and cheap, ``P = (d+1)·q <= 4,096`` and ``n·P² <= 10¹⁰``, else L-BFGS
      (:func:`default_method`).
    tol: the bound on ``max|∇J|``, ``>= 0``.
    max_iter: the most steps; by default 100 for Newton and 10,000 for L-BFGS.
    init: a starting point (default zero); it is centred first, which does not raise ``J``.
    memory_size: L-BFGS's number of stored pairs.
    product_dtype: the dtype of the products with ``x``, ``"float64"`` (default) or ``"float32"``
      (or a NumPy/JAX dtype or its name). ``"float32"`` is for L-BFGS (``"auto"`` then picks it):
      ``x − μ`` (taken in float64 for float64 ``x``), ``W`` and ``G`` are rounded to float32 and
      multiplied in float32, sums over features and examples included; the bias, the loss and its
      sums, the iterates and the L-BFGS pairs stay float64. The products run about twice as fast,
      from two float32 copies of ``x`` instead of two float64 ones: on ``60,000 × 784 × 10`` the
      whole call took 0.6× the time of float64's (``BENCHMARKS.md``). Their rounding enters ``∇_W
      J`` at up to about ``6·10⁻⁸·max|x − μ|·|G|``, so it suits well-scaled features: the digits
      (pixels in ``[0, 1]``) and standardised features reach ``tol = 1e-6`` as in float64, but
      features of scale ``10³`` cannot (the solve then ends with ``converged=False``), and
      ``max|x|`` beyond float32's largest value over ``2n`` is an error. ``objective``,
      ``grad_norm`` and so ``converged`` are then computed from float32 products: ``objective`` was
      ``1·10⁻⁸`` (relative) off on the digits; ``grad_norm`` within about 3% of the float64
      gradient's on the digits and on standardised data, but from 18% below to 5% above it at
      feature scales 30–80 (one solve reported ``9.94·10⁻⁷`` where the float64 gradient is
      ``1.03·10⁻⁶``). :func:`objective` and :func:`gradient` on float64 ``x`` give the float64
      values.

  Returns:
    ``(params, info)``: ``Params`` of float64 NumPy arrays, ``W`` ``(d, q)`` and ``b`` ``(q,)``,
    and a :class:`SolveInfo`.

  Raises:
    TypeError: ``x`` not floating point, ``y`` not integer.
    ValueError: bad shapes, non-finite ``x``, labels outside ``[0, q)``, ``l2 < 0`` and other
      bad keyword values, each named with the offending value.

  References:
    Nocedal & Wright, Numerical Optimization, 2006, §3.1, §3.4 and §7.2; Böhning, 1992.
  """
  x, y, q, max_abs_x = _check_data(x, y, num_classes)
  n, d = x.shape
  l2 = _check_nonneg(l2, "l2")
  tol = _check_nonneg(tol, "tol")
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
  try:
    name = None if product_dtype is None else np.dtype(product_dtype).name
  except (TypeError, ValueError):
    name = None
  if name not in PRODUCT_DTYPES:
    raise ValueError(f"product_dtype must be one of {PRODUCT_DTYPES}; got {product_dtype!r}.")
  product_dtype = name
  # |x − μ| <= 2·max|x| and |G| <= 1, so no sum of the float32 products exceeds 2n·max|x|.
  bound = float(np.finfo(np.float32).max) / (2 * n)
  if product_dtype == "float32" and max_abs_x > bound:
    raise ValueError(f"product_dtype='float32' needs max|x| <= {bound:.3g} (float32's largest "
                     f"value / 2n, n = {n}), so that its products cannot overflow; got "
                     f"{max_abs_x:.3g}. Use product_dtype='float64'.")
  if method == "auto":
    method = default_method(n, d, q) if product_dtype == "float64" else "lbfgs"
  if method == "newton" and product_dtype != "float64":
    raise ValueError(f"method='newton' computes in float64; got product_dtype={product_dtype!r} "
                     f"(float32 products are for method='lbfgs').")
  if max_iter is None:
    max_iter = DEFAULT_MAX_ITER[method]
  if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 0:
    raise ValueError(f"max_iter must be an int >= 0; got {max_iter!r}.")
  if isinstance(memory_size, bool) or not isinstance(memory_size, numbers.Integral) or (
      memory_size < 1):
    raise ValueError(f"memory_size must be a positive int; got {memory_size!r}.")
  if init is None:
    theta0 = np.zeros((d + 1, q))
  else:
    W0, b0 = (np.asarray(a, np.float64) for a in init)
    if W0.shape != (d, q) or b0.shape != (q,):
      raise ValueError(f"init must hold W of shape {(d, q)} and b of shape {(q,)}; got W "
                       f"{W0.shape} and b {b0.shape}.")
    if not (np.isfinite(W0).all() and np.isfinite(b0).all()):
      raise ValueError("init must be finite; got non-finite entries in W or b.")
    theta0 = np.concatenate([W0, b0[None, :]], axis=0)

  if method == "newton":
    static = {"chunk": _chunk_size(n, d + 1, q)}
    prepare_name, prepare_static = "prepare", {}
  else:
    static = {"memory_size": int(memory_size)}
    prepare_name, prepare_static = "prepare_lbfgs", {"dtype": product_dtype}
  with enable_x64():
    if x.dtype not in (np.float16, np.float32, np.float64):
      x = x.astype(np.float64)  # bfloat16, float128 and the like
    start = time.perf_counter()
    prepare, compile_prepare = _compiled(prepare_name, (x,), prepare_static)
    prepared = prepare(x)  # runs while the solver compiles (from shapes alone)
    scalar = functools.partial(jax.ShapeDtypeStruct, ())
    shapes = (jax.ShapeDtypeStruct(theta0.shape, jnp.float64),
              *(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in prepared),
              jax.ShapeDtypeStruct(y.shape, jnp.int32), scalar(jnp.float64), scalar(jnp.float64),
              scalar(jnp.int32))
    solver, compile_solver = _compiled(method, shapes, static)
    compile_seconds = compile_prepare + compile_solver
    if method == "lbfgs":  # L-BFGS's iterate is Θ' = [W; b + μW], centred (see _lbfgs)
      mu = np.asarray(prepared[-1])
      theta0 = np.array(_center(theta0))
      theta0[-1] += mu @ theta0[:-1]
    args = (jnp.asarray(theta0, jnp.float64), *prepared, jnp.asarray(y),
            jnp.asarray(l2, jnp.float64), jnp.asarray(tol, jnp.float64),
            jnp.asarray(min(max_iter, 2**31 - 1), jnp.int32))
    theta, value, grad_norm, iterations = jax.block_until_ready(solver(*args))
    solve_seconds = time.perf_counter() - start - compile_seconds
    theta = np.array(theta)
    if method == "lbfgs":
      theta[-1] -= mu @ theta[:-1]
      # Iterates stay in S up to rounding; centring moves J by rounding only.
      theta = np.asarray(_center(theta))
    info = SolveInfo(objective=float(value), grad_norm=float(grad_norm),
                     iterations=int(iterations), converged=bool(grad_norm <= tol),
                     solve_seconds=solve_seconds, compile_seconds=compile_seconds, method=method)
  return Params(W=theta[:-1], b=theta[-1]), info


def default_method(n: int, num_features: int, num_classes: int) -> str:
  """The method ``"auto"`` picks: ``"newton"`` if ``P <= 4,096`` and ``n·P² <= 10¹⁰``, else
  ``"lbfgs"``, with ``P = (num_features + 1)·num_classes`` (see the module docstring)."""
  size = (num_features + 1) * num_classes
  if size <= NEWTON_MAX_PARAMS and n * size**2 <= NEWTON_MAX_WORK:
    return "newton"
  return "lbfgs"


def _accuracy(params: Params, x: np.ndarray, y: np.ndarray) -> float:
  o = np.asarray(x, np.float64) @ params.W + params.b
  return float(np.mean(np.argmax(o, axis=1) == y))


def fit_and_evaluate(data, *, C: float = 1.0, method: str = "auto", tol: float = 1e-6,
                     max_iter: int | None = None,
                     product_dtype: str = "float64") -> tuple[Params, dict[str, Any]]:
  """Fits ``data`` (a :class:`softmax_jax.data.Dataset`) exactly with scikit-learn's ``C``.

  The penalty is ``λ = 1/(C·n_train)``, so the solution is that of
  ``LogisticRegression(C=C)`` (multinomial, with intercept) on the training split.

  Args:
    data: the train/test split.
    C: scikit-learn's inverse regularisation strength, ``> 0``.
    method, tol, max_iter, product_dtype: as in :func:`fit_exact`.

  Returns:
    ``(params, record)``; the record holds ``C``, ``l2``, ``n_train``, ``num_features``,
    ``num_classes``, the :class:`SolveInfo` fields, ``sklearn_objective`` (``C·Σ l_i + ½‖W‖²``
    ``= C·n·J``), ``train_accuracy`` and ``test_accuracy``.
  """
  if isinstance(C, bool) or not isinstance(C, numbers.Real) or not (math.isfinite(C) and C > 0):
    raise ValueError(f"C must be a finite number > 0; got {C!r}.")
  n = len(data.y_train)
  l2 = 1.0 / (C * n)
  params, info = fit_exact(data.x_train, data.y_train, l2=l2, num_classes=data.num_classes,
                           method=method, tol=tol, max_iter=max_iter,
                           product_dtype=product_dtype)
  record = {"C": float(C), "l2": l2, "n_train": n, "num_features": data.num_features,
            "num_classes": data.num_classes, "product_dtype": np.dtype(product_dtype).name,
            **info._asdict(),
            "sklearn_objective": float(C) * n * info.objective,
            "train_accuracy": _accuracy(params, data.x_train, data.y_train),
            "test_accuracy": _accuracy(params, data.x_test, data.y_test)}
  return params, record
