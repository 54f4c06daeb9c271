r"""Cross-entropy forward+backward: softmax_jax against optax, jax.nn and PyTorch, in one process.

Command:

  python -m benchmarks.cross_entropy            # all shapes, float32 and bfloat16
  python -m benchmarks.cross_entropy --shapes=4096x1000 --dtypes=float32 --repeats=9
  python -m benchmarks.cross_entropy --labels=probs   # probability labels (distillation)

Each entry is the median of ``--repeats`` timed calls of a jitted ``value_and_grad`` of the mean
cross-entropy with respect to the logits, after a warm-up call; compile time is reported apart.
softmax_jax is timed twice: ``reduction="mean"``, and ``sj.cross_entropy(o, y).mean()`` (the
per-example losses reduced by the caller, as optax's are); ``optax/ours`` is optax's time over
the first, ``.mean()`` over the second.
The candidates of a row are timed in turn, round by round (`interleaved_median_seconds`), so that
the machine's slow spells hit them alike.
Two modes, since they behave differently on a CPU: ``fresh`` passes the same logits every call,
so every output is a fresh buffer; ``donated`` donates the logits (``donate_argnums``), so XLA may
write the gradient into their buffer. ``GB/s`` counts the minimal traffic, one read of the logits
and one write of the gradient, and ``copy GB/s`` is ``x * 2`` into a donated buffer measured in
the same run: the bandwidth a one-pass kernel could reach. With ``--labels=probs`` the labels
are probability rows in the logits' dtype (optax's ``softmax_cross_entropy``, PyTorch's
probability targets); ``GB/s`` still counts the logits and the gradient only.
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags
from absl import logging

import softmax_jax as sj
from benchmarks.timing import REPEATS
from benchmarks.timing import interleaved_median_seconds
from benchmarks.timing import median_seconds
from benchmarks.timing import torch_device
from benchmarks.timing import torch_synchronized

_SHAPES = flags.DEFINE_list("shapes", ["4096x10", "4096x1000", "1024x32768", "256x131072"],
                            "n x q shapes.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Logit dtypes.")
_MODES = flags.DEFINE_list("modes", ["fresh", "donated"], "fresh and/or donated.")
_LABELS = flags.DEFINE_list("labels", ["ids"], "ids (class ids, against optax's "
                            "softmax_cross_entropy_with_integer_labels) and/or probs "
                            "(probability labels, against optax's softmax_cross_entropy).")

FLAGS = flags.FLAGS


def _ours(o, y):
  return sj.cross_entropy(o, y, reduction="mean")


def _ours_none_mean(o, y):  # the per-example losses, reduced by the caller as with optax
  return sj.cross_entropy(o, y).mean()


def _optax(o, y):
  return optax.softmax_cross_entropy_with_integer_labels(o, y).mean()


def _jax_nn(o, y):
  ls = jax.nn.log_softmax(o.astype(jnp.promote_types(o.dtype, jnp.float32)))
  return -jnp.take_along_axis(ls, y[:, None], -1).mean()


def _optax_probs(o, t):
  return optax.softmax_cross_entropy(o, t).mean()


def _jax_nn_probs(o, t):
  ls = jax.nn.log_softmax(o.astype(jnp.promote_types(o.dtype, jnp.float32)))
  return -jnp.sum(t * ls, axis=-1).mean()


CANDIDATES = {"softmax_jax": _ours, "sj .mean()": _ours_none_mean, "optax": _optax,
              "jax.nn": _jax_nn}
CANDIDATES_PROBS = {"softmax_jax": _ours, "sj .mean()": _ours_none_mean, "optax": _optax_probs,
                    "jax.nn": _jax_nn_probs}


def _torch_time(logits: np.ndarray, labels: np.ndarray, repeats: int) -> float | None:
  try:
    import torch
  except ImportError:
    return None
  device = torch_device(torch)
  o = torch.tensor(logits, requires_grad=True, device=device)
  y = torch.tensor(labels if labels.ndim == 2 else labels.astype(np.int64), device=device)

  def step():
    o.grad = None
    loss = torch.nn.functional.cross_entropy(o, y)
    loss.backward()
    return loss

  return median_seconds(torch_synchronized(torch, device, step), repeats)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}), "
        f"optax {optax.__version__}; median of {REPEATS.value} calls after warm-up")
  header = (f"{'n x q':>12} {'dtype':>8} {'mode':>7} {'labels':>6} | {'softmax_jax':>11} "
            f"{'sj .mean()':>10} "
            f"{'optax':>9} {'jax.nn':>9} {'torch':>9} | {'optax/ours':>10} {'.mean()':>7} "
            f"{'GB/s':>6} {'copy GB/s':>9} {'compile':>8}")
  print(header)
  print("-" * len(header))
  for shape in _SHAPES.value:
    n, q = (int(v) for v in shape.lower().split("x"))
    for dtype_name in _DTYPES.value:
      dtype = jnp.dtype(dtype_name)
      key_o, key_y = jax.random.split(jax.random.PRNGKey(0))
      logits = (jax.random.normal(key_o, (n, q)) * 3).astype(dtype)
      nbytes = 2 * logits.size * dtype.itemsize
      for mode, kind in ((m, k) for k in _LABELS.value for m in _MODES.value):
        if kind == "ids":
          labels, candidates = jax.random.randint(key_y, (n,), 0, q), CANDIDATES
        else:  # probabilities in the logits' dtype, as a distillation target would be
          labels = jax.nn.softmax(jax.random.normal(key_y, (n, q))).astype(dtype)
          candidates = CANDIDATES_PROBS
        donate = (0,) if mode == "donated" else ()
        make = (functools.partial(lambda o, y: (jnp.array(o, copy=True), y), logits, labels)
                if donate else functools.partial(lambda o, y: (o, y), logits, labels))
        compile_s, calls = {}, {}
        for name, loss in candidates.items():
          fn = jax.jit(jax.value_and_grad(loss), donate_argnums=donate)
          t0 = time.perf_counter()
          calls[name] = (fn.lower(*make()).compile(), make)
          compile_s[name] = time.perf_counter() - t0
        calls["copy"] = (jax.jit(lambda x: x * 2, donate_argnums=(0,)),
                         functools.partial(lambda o: (jnp.array(o, copy=True),), logits))
        medians = interleaved_median_seconds(calls, REPEATS.value)
        results = {name: (compile_s[name], medians[name]) for name in candidates}
        copy_s = medians["copy"]
        torch_s = None
        if mode == "fresh" and dtype_name == "float32":
          torch_s = _torch_time(np.asarray(logits), np.asarray(labels), REPEATS.value)
        ours = results["softmax_jax"][1]
        ms = {k: f"{v[1] * 1e3:9.2f}" for k, v in results.items()}
        torch_ms = "        -" if torch_s is None else f"{torch_s * 1e3:9.2f}"
        print(f"{shape:>12} {dtype_name:>8} {mode:>7} {kind:>6} | {ms['softmax_jax']:>11} "
              f"{ms['sj .mean()']:>10} {ms['optax']} {ms['jax.nn']} {torch_ms} | "
              f"{results['optax'][1] / ours:10.2f} "
              f"{results['optax'][1] / results['sj .mean()'][1]:7.2f} {nbytes / ours / 1e9:6.1f} "
              f"{nbytes / copy_s / 1e9:9.1f} {results['softmax_jax'][0]:7.2f}s", flush=True)


if __name__ == "__main__":
  app.run(main)
