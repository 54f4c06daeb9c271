r"""Memory and time of ``value_and_grad`` of linear + cross-entropy: dense vs chunked.

Command (defaults: n=2048, d=256, q in {32768, 131072}, float32, 5 timed runs each):

  python -m benchmarks.linear_cross_entropy

For each q it compiles ``jax.value_and_grad`` w.r.t. ``(x, W, b)`` of

* ``dense``: ``sj.cross_entropy(x @ W + b, y, reduction="mean")``, the n × q logits in memory;
* ``optax``: the same with ``optax.softmax_cross_entropy_with_integer_labels`` (a lean dense
  baseline, for context);
* ``recompute``: ``linear_cross_entropy(x, W, b, y, chunk_size=...)`` (softmax_jax.linear_ce):
  blocks of classes, no n × q array, the logits recomputed in the backward pass;
* ``liger``: a reference of Liger Kernel's fused linear cross-entropy, written here: blocks of
  ``--liger_rows`` rows with all q logits, the gradients computed in the forward pass (three
  matmuls, nothing recomputed) and ``dW`` accumulated block by block. It was measured slower than
  ``recompute`` on CPU, so the library does not offer it.

and reports XLA's temporary memory (``compiled.memory_analysis().temp_size_in_bytes``), the
compile time, and the median wall and CPU time of ``--repeats`` runs after a warm-up. Runs are
interleaved round-robin, so a machine shared with other jobs slows every variant alike; CPU time
(all threads of this process) is the steadier measure there. With ``--rss`` (the default) each
variant also runs once more in a fresh subprocess that reports the growth of its peak resident
memory during one call (Linux: VmHWM after resetting it through /proc/self/clear_refs); it
includes the outputs, of which ``dW`` is d × q (128 MiB at q = 131072).

Expected on 2 CPU cores: ``recompute`` (chunk_size 1024) needs about 18 MiB of temporaries
against dense's 512 MiB (q = 32768) and 2 GiB (q = 131072), and is about 1.5× (q = 32768) and
1.7× (q = 131072) faster than ``dense``; ``liger`` is slower than ``recompute``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags

import softmax_jax as sj
from benchmarks.timing import REPEATS
from softmax_jax.linear_ce import DEFAULT_CHUNK_SIZE
from softmax_jax.linear_ce import linear_cross_entropy

_N = flags.DEFINE_integer("n", 2048, "Examples (rows of x).", lower_bound=1)
_D = flags.DEFINE_integer("d", 256, "Features (columns of x, rows of W).", lower_bound=1)
_Q = flags.DEFINE_list("q", ["32768", "131072"], "Class counts to run (columns of W).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Dtype of x, W and b.")
_CHUNK = flags.DEFINE_integer("chunk_size", DEFAULT_CHUNK_SIZE,
                              "chunk_size of the chunked variants.", lower_bound=1)
_VARIANTS = flags.DEFINE_list("variants", ["dense", "optax", "recompute", "liger"],
                              "Variants to run; the first is the baseline of the ratios.")
_LIGER_ROWS = flags.DEFINE_integer("liger_rows", 256, "Rows per block of the liger variant.",
                                   lower_bound=1)
_RSS = flags.DEFINE_bool("rss", True, "Also measure peak-RSS growth, each variant in a fresh "
                         "subprocess.")
_CHILD = flags.DEFINE_string("child", None, "Internal: 'variant:q', run once and print JSON.")


def _dense_loss(x, W, b, y):
  return sj.cross_entropy(x @ W + b[None, :], y, reduction="mean")


def _optax_loss(x, W, b, y):
  logits = (x @ W + b[None, :]).astype(jnp.float32)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def _recompute_loss(x, W, b, y):
  return linear_cross_entropy(x, W, b, y, chunk_size=_CHUNK.value)


def _liger_forward(x, W, b, y, rows):
  """Mean loss and its gradients, by blocks of ``rows`` rows (``rows`` divides n)."""
  n, q = x.shape[0], W.shape[1]

  def body(k, carry):
    total, dx, dW, db = carry
    x_r = jax.lax.dynamic_slice_in_dim(x, k * rows, rows)
    y_r = jax.lax.dynamic_slice_in_dim(y, k * rows, rows)
    o = x_r @ W + b[None, :]
    m = jnp.max(o, axis=1)
    e = jnp.exp(o - m[:, None])
    s = jnp.sum(e, axis=1)
    o_y = jnp.take_along_axis(o, y_r[:, None], axis=1)[:, 0]
    total = total + jnp.sum(m + jnp.log(s) - o_y) / n
    hit = y_r[:, None] == jnp.arange(q)[None, :]
    g = (e / s[:, None] - hit) / n
    dx = jax.lax.dynamic_update_slice_in_dim(dx, g @ W.T, k * rows, axis=0)
    return total, dx, dW + x_r.T @ g, db + jnp.sum(g, axis=0)

  init = (jnp.zeros(()), jnp.zeros_like(x), jnp.zeros_like(W), jnp.zeros_like(b))
  return jax.lax.fori_loop(0, n // rows, body, init)


@jax.custom_vjp
def _liger_loss(x, W, b, y):
  return _liger_forward(x, W, b, y, _LIGER_ROWS.value)[0]


def _liger_fwd(x, W, b, y):
  total, dx, dW, db = _liger_forward(x, W, b, y, _LIGER_ROWS.value)
  return total, (dx, dW, db)


def _liger_bwd(grads, ct):
  return (*(ct * g for g in grads), None)


_liger_loss.defvjp(_liger_fwd, _liger_bwd)


VARIANTS = {
    "dense": _dense_loss,
    "optax": _optax_loss,
    "recompute": _recompute_loss,
    "liger": _liger_loss,
}


def _problem(q: int):
  dtype = jnp.dtype(_DTYPE.value)
  kx, kw, ky = jax.random.split(jax.random.PRNGKey(0), 3)
  n, d = _N.value, _D.value
  x = jax.random.normal(kx, (n, d)).astype(dtype)
  W = (jax.random.normal(kw, (d, q)) / np.sqrt(d)).astype(dtype)
  b = jnp.zeros((q,), dtype)
  y = jax.random.randint(ky, (n,), 0, q)
  return x, W, b, y


def _compile(name: str, args):
  fn = jax.jit(jax.value_and_grad(VARIANTS[name], argnums=(0, 1, 2)))
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  seconds = time.perf_counter() - start
  return compiled, seconds, compiled.memory_analysis().temp_size_in_bytes


def _status_kib(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise KeyError(field)


def _child(spec: str) -> None:
  """Runs one variant once in this fresh process; prints its peak-RSS growth as JSON."""
  name, q = spec.split(":")
  args = _problem(int(q))
  compiled, _, _ = _compile(name, args)
  jax.block_until_ready(args)
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")  # resets VmHWM (the peak RSS) to the current RSS
    before = _status_kib("VmRSS")
    jax.block_until_ready(compiled(*args))
    growth = _status_kib("VmHWM") - before
  except OSError:  # not Linux: ru_maxrss is the peak over the process (compile included)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    jax.block_until_ready(compiled(*args))
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
  print(json.dumps({"rss_growth_kib": growth}))


def _rss_growth(name: str, q: int) -> float | None:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  flags_ = [f"--n={_N.value}", f"--d={_D.value}", f"--dtype={_DTYPE.value}",
            f"--chunk_size={_CHUNK.value}", f"--liger_rows={_LIGER_ROWS.value}",
            f"--child={name}:{q}"]
  out = subprocess.run([sys.executable, "-m", "benchmarks.linear_cross_entropy", *flags_],
                       cwd=root, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    print(f"  (rss subprocess for {name} failed: {out.stderr.strip().splitlines()[-1:]})")
    return None
  return json.loads(out.stdout.strip().splitlines()[-1])["rss_growth_kib"] / 1024


def _bench(q: int) -> list[dict]:
  args = _problem(q)
  names = _VARIANTS.value
  rows = {}
  for name in names:
    compiled, compile_s, temp = _compile(name, args)
    jax.block_until_ready(compiled(*args))  # warm-up
    rows[name] = dict(name=name, fn=compiled, compile_s=compile_s, temp=temp, wall=[], cpu=[])
  values = {}
  for _ in range(REPEATS.value):  # round-robin: background load hits every variant alike
    for name in names:
      row = rows[name]
      wall, cpu = time.perf_counter(), time.process_time()
      out = jax.block_until_ready(row["fn"](*args))
      row["wall"].append(time.perf_counter() - wall)
      row["cpu"].append(time.process_time() - cpu)
      values[name] = float(out[0])
  base = values[names[0]]
  for name in names:
    row = rows[name]
    row["loss_diff"] = abs(values[name] - base)
    row["rss"] = _rss_growth(name, q) if _RSS.value else None
  return [rows[name] for name in names]


def _table(q: int, rows: list[dict]) -> str:
  base = rows[0]
  base_wall, base_cpu = statistics.median(base["wall"]), statistics.median(base["cpu"])
  lines = [f"n={_N.value} d={_D.value} q={q} {_DTYPE.value} chunk_size={_CHUNK.value} "
           f"(median of {REPEATS.value}; ratios vs {base['name']})",
           f"{'variant':<10} {'temp MiB':>9} {'mem ratio':>9} {'RSS MiB':>8} {'compile s':>9} "
           f"{'wall s':>7} {'speedup':>7} {'cpu s':>7} {'cpu spdup':>9} {'|dloss|':>8}"]
  for row in rows:
    wall, cpu = statistics.median(row["wall"]), statistics.median(row["cpu"])
    rss = "-" if row["rss"] is None else f"{row['rss']:.0f}"
    lines.append(
        f"{row['name']:<10} {row['temp'] / 2**20:>9.1f} {row['temp'] / base['temp']:>9.4f} "
        f"{rss:>8} {row['compile_s']:>9.2f} {wall:>7.3f} {base_wall / wall:>6.2f}x {cpu:>7.2f} "
        f"{base_cpu / cpu:>8.2f}x {row['loss_diff']:>8.1e}")
  return "\n".join(lines)


def main(argv):
  del argv
  if _CHILD.value:
    _child(_CHILD.value)
    return
  unknown = set(_VARIANTS.value) - set(VARIANTS)
  if unknown:
    raise app.UsageError(f"unknown variants {sorted(unknown)}; choose from {sorted(VARIANTS)}.")
  if "liger" in _VARIANTS.value and _N.value % _LIGER_ROWS.value:
    raise app.UsageError(f"--liger_rows={_LIGER_ROWS.value} must divide --n={_N.value}.")
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
  for q in map(int, _Q.value):
    start = time.perf_counter()
    rows = _bench(q)
    print(_table(q, rows))
    print(f"({time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f})\n",
          flush=True)


if __name__ == "__main__":
  app.run(main)
