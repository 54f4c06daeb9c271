"""Input validation shared by every public function.

Two kinds of check:

* Static checks (shapes, dtypes, keyword values) run at trace time on every call, eager or under
  ``jit``, and raise ``TypeError``/``ValueError`` naming the offending shape or value.
* Value checks (a label out of range, a negative probability) need concrete values. Eagerly they
  raise ``ValueError``. Under a transformation the values are tracers: inside
  :func:`softmax_jax.checked` the check is emitted as ``checkify.debug_check``, whose error names
  the first offending entry; elsewhere (plain ``jit``) nothing is emitted. A ``debug_check`` is a
  no-op under plain ``jit``, but it gives the jaxpr an error effect, and a jitted function with
  an effect leaves JAX's C++ fast path: every call then went through Python dispatch, 116 µs
  instead of 6 µs here, more than a whole small cross-entropy on a GPU.
"""

from __future__ import annotations

import contextvars
import functools
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

REDUCTIONS = ("none", "mean", "sum")


# True while a function wrapped by `checked` is being traced: only then are checks staged out.
_STAGE_CHECKS = contextvars.ContextVar("softmax_jax_stage_checks", default=False)


def is_zero_tangent(t: Any) -> bool:
  """Whether a ``custom_jvp`` rule's tangent (``symbolic_zeros=True``) is a symbolic zero."""
  return t is None or isinstance(t, jax.custom_derivatives.SymbolicZero)


def is_traced(*xs: Any) -> bool:
  """True if any leaf of ``xs`` is a tracer (its value is unknown at trace time)."""
  return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(xs))


def check(ok: jax.Array, message: str, *fmt_args: jax.Array) -> None:
  """Checks the boolean scalar ``ok``; ``message`` is a ``str.format`` template for ``fmt_args``.

  Raises ``ValueError`` eagerly; under a transformation emits ``checkify.debug_check`` inside
  :func:`checked` and nothing elsewhere.
  """
  if is_traced(ok, *fmt_args):
    if _STAGE_CHECKS.get():
      checkify.debug_check(ok, message, *fmt_args)
  elif not bool(ok):
    raise ValueError(message.format(*(str(np.asarray(a)) for a in fmt_args)))


def check_all(ok: jax.Array, values: jax.Array, message: str) -> None:
  """Checks that every entry of the boolean array ``ok`` holds.

  ``message`` may use ``{value}``, ``{index}`` and ``{count}``: the first offending entry of
  ``values``, its index and the number of offending entries.
  """
  if is_traced(ok, values) and not _STAGE_CHECKS.get():
    return
  ok = jnp.asarray(ok)
  if ok.size == 0:
    return
  bad = jnp.ravel(~ok)
  first = jnp.argmax(bad)
  index = jnp.stack(jnp.unravel_index(first, ok.shape)) if ok.ndim else jnp.zeros((0,), int)
  value = jnp.ravel(jnp.broadcast_to(values, ok.shape))[first]
  template = message.format(value="{0}", index="{1}", count="{2}")
  check(~jnp.any(bad), template, value, index, jnp.sum(bad))


def checked(fn: Callable[..., Any], *, errors=checkify.user_checks) -> Callable[..., Any]:
  """Wraps ``fn`` so that the library's value checks run under ``jit``.

  Eager calls of softmax_jax functions raise ``ValueError`` on bad values (a label out of range,
  soft labels that are not probabilities, a temperature that is not positive). Under ``jit`` the
  values are not known when the function is traced; inside this wrapper the checks are staged out
  with :mod:`jax.experimental.checkify` (elsewhere they are skipped, so that plain ``jit`` keeps
  JAX's fast dispatch). This wrapper checkifies ``fn``; it returns ``(error, result)`` as
  ``checkify.checkify`` does::

    err, loss = jax.jit(sj.checked(sj.cross_entropy))(logits, labels)
    err.throw()  # raises JaxRuntimeError (a ValueError) naming the first bad label

  The checks cost a few reductions over the labels; the wrapped function is otherwise unchanged.
  They are staged out while ``fn`` is traced inside this wrapper: a function that was jitted and
  already traced outside it keeps its unchecked trace in ``jit``'s cache.

  Args:
    fn: any function built on softmax_jax (it may itself be jitted or use ``grad``/``vmap``).
    errors: the checkify error set; the default catches the library's checks (user checks).
      Pass e.g. ``checkify.user_checks | checkify.nan_checks`` to catch NaNs too.

  Returns:
    A function with ``fn``'s signature returning ``(checkify.Error, fn's result)``.
  """
  @functools.wraps(fn)
  def staging(*args, **kwargs):
    token = _STAGE_CHECKS.set(True)
    try:
      return fn(*args, **kwargs)
    finally:
      _STAGE_CHECKS.reset(token)

  return functools.wraps(fn)(checkify.checkify(staging, errors=errors))


def as_float_array(x: Any, name: str) -> jax.Array:
  """Converts ``x`` to a floating-point ``jax.Array``; a non-float dtype is a ``TypeError``."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must be a floating-point array; got dtype {x.dtype} with shape "
                    f"{x.shape}.")
  return x


def compute_dtype(dtype: Any) -> jnp.dtype:
  """float16/bfloat16 accumulate in float32; float32 and float64 stay as they are."""
  return jnp.promote_types(dtype, jnp.float32)


def normalize_axis(axis: Any, ndim: int, name: str = "axis") -> int:
  if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
    raise TypeError(f"{name} must be an int; got {axis!r}.")
  if not -ndim <= axis < ndim:
    raise ValueError(f"{name}={axis} is out of range for an array of rank {ndim}.")
  return int(axis) % ndim


def check_reduction(reduction: Any) -> str:
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}.")
  return reduction


def broadcast_mask(where: Any, shape: tuple[int, ...], name: str = "where") -> jax.Array | None:
  """Validates a boolean mask and broadcasts it to ``shape`` (``None`` stays ``None``)."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(f"{name} must be a boolean mask; got dtype {where.dtype}.")
  try:
    return jnp.broadcast_to(where, shape)
  except ValueError:
    raise ValueError(
        f"{name} of shape {where.shape} does not broadcast to shape {shape}.") from None


def check_temperature(temperature: Any, dtype: Any, *, promote: bool = True) -> Any:
  """Temperature must be a positive finite scalar; a float, or an array (to learn it by grad).

  It must also be a normal number of the dtype it is computed in: ``dtype`` (the logits' compute
  dtype) for a Python float, and for an array ``dtype`` promoted with the array's (``promote``)
  or ``dtype`` itself. XLA flushes a subnormal ``T`` to 0 and a ``T`` beyond the largest value
  rounds to ``inf``; both made every probability NaN (``T = 1e-38`` or ``1e39`` with float32
  logits).
  """
  if isinstance(temperature, numbers.Real) and not isinstance(temperature, bool):
    if not (np.isfinite(temperature) and temperature > 0):
      raise ValueError(f"temperature must be a positive finite number; got {temperature!r}.")
    info = jnp.finfo(dtype)
    if not float(info.tiny) <= temperature <= float(info.max):
      raise ValueError(
          f"temperature must be a positive finite number in {info.dtype}'s normal range "
          f"[{float(info.tiny):.4g}, {float(info.max):.4g}], the dtype it is computed in "
          f"(XLA flushes smaller values to 0, larger ones round to inf); got {temperature!r}. "
          f"Use float64 logits (jax_enable_x64) for a temperature outside it.")
    return float(temperature)
  t = jnp.asarray(temperature)
  if t.ndim != 0 or not jnp.issubdtype(t.dtype, jnp.floating):
    raise TypeError(f"temperature must be a positive float scalar; got dtype {t.dtype} with "
                    f"shape {t.shape}.")
  used = jnp.promote_types(dtype, t.dtype) if promote else jnp.dtype(dtype)
  info = jnp.finfo(used)
  t_used = t.astype(used)
  # ``t_used >= tiny`` is False for a subnormal (flushed) or NaN T; the cast overflows to inf.
  check(jnp.isfinite(t_used) & (t_used >= info.tiny),
        f"temperature must be a positive finite number in {info.dtype}'s normal range "
        f"[{float(info.tiny):.4g}, {float(info.max):.4g}], the dtype it is computed in; got {{}}.",
        t)
  return t


def probability_tolerance(dtype: Any, num_classes: int) -> float:
  """How far from 1 the sum of a probability vector may be.

  Storing each entry in ``dtype`` costs at most half an ulp of relative error, so a vector that
  sums to 1 in exact arithmetic sums to 1 within ``eps(dtype)`` once rounded; upstream arithmetic
  (a softmax, a normalisation) adds a few more ulps, and summing ``num_classes`` terms in the
  accumulation dtype adds up to ``num_classes`` ulps of that dtype.
  """
  eps = float(jnp.finfo(dtype).eps)
  acc_eps = float(jnp.finfo(compute_dtype(dtype)).eps)
  return 4 * eps + 2 * num_classes * acc_eps


def check_distribution(p: jax.Array, axis: int, name: str, where: jax.Array | None = None) -> None:
  """Value check: entries of ``p`` are >= 0 and sum to 1 along ``axis`` (where ``where``)."""
  q = p.shape[axis]
  tol = probability_tolerance(p.dtype, q)
  p32 = p.astype(compute_dtype(p.dtype))
  nonneg = p32 >= 0  # False for NaN as well
  if where is not None:
    nonneg = nonneg | jnp.expand_dims(~where, axis)
  check_all(nonneg, p32, f"{name} must be probabilities: entries must be >= 0, got {{value}} "
                         f"at index {{index}} ({{count}} such entries).")
  total = jnp.sum(p32, axis=axis)
  sums_to_one = jnp.abs(total - 1) <= tol
  if where is not None:
    sums_to_one = sums_to_one | ~where
  check_all(sums_to_one, total, f"{name} must sum to 1 along axis {axis} (tolerance {tol:.3g}); "
                                f"a row sums to {{value}} at batch index {{index}} "
                                f"({{count}} such rows).")


def check_class_ids(labels: jax.Array, num_classes: int, name: str = "labels",
                    where: jax.Array | None = None) -> None:
  """Value check: integer ``labels`` lie in ``[0, num_classes)`` (where ``where``)."""
  labels = widen_ids(labels)
  ok = (labels >= 0) & (labels < num_classes)
  if where is not None:
    ok = ok | ~where
  check_all(ok, labels, f"{name} must be class ids in [0, {num_classes}); got {{value}} at index "
                        f"{{index}} ({{count}} out of range).")


def widen_ids(labels: jax.Array) -> jax.Array:
  """Class ids in a dtype at least as wide as int32, so that comparing them with a class count
  cannot wrap (200 in int8 is −56; 256 in uint8 is 0)."""
  return labels.astype(jnp.promote_types(labels.dtype, jnp.int32))


def as_label_array(labels: Any, name: str = "labels") -> jax.Array:
  """``jnp.asarray(labels)``, refusing host integers that the conversion would wrap.

  With 64-bit types off (JAX's default) a NumPy ``int64`` array becomes ``int32``, and a value
  beyond its range wraps: the class id 2³² + 1 was read as 1, with only a warning. Such a value
  is a ``ValueError`` naming it and its index. JAX arrays and floating-point labels pass as they
  are; the check is one pass over host labels of a wider type than JAX will keep.
  """
  if not isinstance(labels, jax.Array):
    host = np.asarray(labels)
    if np.issubdtype(host.dtype, np.integer) and host.size:
      kept = jax.dtypes.canonicalize_dtype(host.dtype)
      if kept != host.dtype:
        info = np.iinfo(kept)
        bad = (host < info.min) | (host > info.max)
        if bad.any():
          index = tuple(int(i) for i in np.unravel_index(np.argmax(bad), host.shape))
          raise ValueError(
              f"{name} must fit in {kept} (JAX's integer type without jax_enable_x64); got "
              f"{host[index]} at index {list(index)} ({int(bad.sum())} such entries) in an "
              f"array of dtype {host.dtype}.")
  return jnp.asarray(labels)


def check_integer_labels(labels: Any, name: str = "labels") -> jax.Array:
  labels = as_label_array(labels, name)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"{name} must be integer class ids; got dtype {labels.dtype} with shape "
                    f"{labels.shape}. Cast with .astype(jnp.int32) if they are whole numbers.")
  return labels


def label_kind(labels: jax.Array, *, ids_shape: tuple[int, ...], probs_shape: tuple[int, ...],
               ids_desc: str, probs_desc: str) -> bool:
  """True for class ids, False for probability vectors, told apart by shape; else an error.

  Args:
    labels: the labels.
    ids_shape: the shape class ids must have; ``ids_desc`` says what it is.
    probs_shape: the shape probability vectors must have; ``probs_desc`` says what it is.

  Raises:
    TypeError: the shape says class ids but the dtype is not integer, or the reverse.
    ValueError: the shape is neither.
  """
  if labels.shape == ids_shape:
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise TypeError(
          f"labels of shape {labels.shape} are read as class ids ({ids_desc}), but their dtype "
          f"is {labels.dtype}; class ids must be integers (cast with .astype(jnp.int32)), and "
          f"probability labels must have shape {probs_shape}.")
    return True
  if labels.shape == probs_shape:
    if not jnp.issubdtype(labels.dtype, jnp.floating):
      raise TypeError(
          f"labels of shape {labels.shape} are read as probability vectors ({probs_desc}), but "
          f"their dtype is {labels.dtype}; probabilities must be floating point, and class ids "
          f"must have shape {ids_shape}.")
    return False
  raise ValueError(f"labels of shape {labels.shape} match neither {ids_shape} ({ids_desc}) nor "
                   f"{probs_shape} ({probs_desc}).")


def check_label_smoothing(label_smoothing: Any) -> float:
  """A static Python float in [0, 1] (it selects code paths, so it cannot be traced)."""
  if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
    raise TypeError(f"label_smoothing must be a Python float in [0, 1]; got {label_smoothing!r}.")
  if not 0.0 <= float(label_smoothing) <= 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1]; got {label_smoothing!r}.")
  return float(label_smoothing)


def flushed_to_zero(x: jax.Array, dtype: Any) -> jax.Array:
  """Where ``x`` is nonzero but XLA:CPU computes it as 0 in ``dtype``, the dtype it is used in
  (float32 or float64).

  Two tests, as XLA also treats a subnormal input as 0 in comparisons and conversions:
  ``0 < |x| < tiny`` in ``x``'s own dtype catches a wider ``x`` (float64 ``1e-40`` for float32
  arithmetic), and the bits catch a subnormal of ``x``'s own dtype (float32 ``1e-40``, also for
  float64 arithmetic: the conversion flushes it; bfloat16 likewise). A float16 subnormal is left
  alone: it converts to a normal float32.
  """
  own, target = jnp.finfo(x.dtype), jnp.finfo(dtype)
  small = (x != 0) & (jnp.abs(x) < jnp.asarray(target.tiny).astype(x.dtype)) if (
      own.minexp < target.minexp) else jnp.zeros(x.shape, bool)
  if own.minexp <= jnp.finfo(jnp.float32).minexp:
    bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{own.bits}"))
    exponent = ((1 << own.nexp) - 1) << own.nmant
    mantissa = (1 << own.nmant) - 1
    small = small | (((bits & exponent) == 0) & ((bits & mantissa) != 0))
  return small


def beyond_range(x: jax.Array, dtype: Any) -> jax.Array:
  """Where the finite ``x`` rounds to ``±inf`` in ``dtype`` (a float64 ``3e39`` for float32)."""
  if jnp.finfo(x.dtype).maxexp <= jnp.finfo(dtype).maxexp:
    return jnp.zeros(x.shape, bool)
  return jnp.isfinite(x) & ~jnp.isfinite(x.astype(dtype))


def check_class_weights(class_weights: Any, num_classes: int, what: str,
                        dtype: Any = jnp.float32) -> jax.Array | None:
  """``None``, or ``num_classes`` finite non-negative weights; ``what`` names the classes.

  ``dtype`` is the dtype the weights are computed in: a nonzero weight below its smallest normal
  number is an error, as XLA would flush it to 0 (a float32 weight of ``1e-40`` made the loss 0),
  and so is one beyond its largest (a float64 ``3e39`` with float32 logits made the loss NaN).
  """
  if class_weights is None:
    return None
  class_weights = as_float_array(class_weights, "class_weights")
  if class_weights.shape != (num_classes,):
    raise ValueError(f"class_weights must have shape ({num_classes},), one weight per {what}; "
                     f"got {class_weights.shape}.")
  check_all(jnp.isfinite(class_weights) & (class_weights >= 0), class_weights,
            "class_weights must be finite and >= 0; got {value} at index {index}.")
  info = jnp.finfo(dtype)
  check_all(~flushed_to_zero(class_weights, dtype) & ~beyond_range(class_weights, dtype),
            class_weights,
            f"class_weights must be 0 or normal numbers: in [{float(info.tiny):.4g}, "
            f"{float(info.max):.4g}] for {jnp.dtype(dtype)}, the dtype they are computed in, and "
            f"not subnormal in their own dtype {class_weights.dtype} (XLA flushes subnormals to "
            f"0, and larger values round to inf); got {{value}} at index {{index}} ({{count}} "
            f"such weights).")
  return class_weights
