r"""Epoch throughput: the scan epoch against a per-step Python loop, PyTorch, and the bound.

Command:

  python -m benchmarks.epoch                     # 60,000 × 784, 10 classes, batch 256, SGD

On Fashion-MNIST-shaped synthetic data, in one process, the median of ``--repeats`` epochs after
a warm-up epoch (compile time apart; ``scan``, ``per-step`` and ``bound`` timed in turn, round by
round) of:

* ``scan``: :func:`softmax_jax.train.train_epoch`, the whole epoch one compiled ``lax.scan``;
* ``per-step``: the same shuffle, then the same jitted ``train_step`` called from Python once per
  minibatch, as D2L's trainer does;
* ``torch``: a plain PyTorch loop (``nn.Linear``, ``F.cross_entropy``, ``optim.SGD``), if
  installed;
* ``bound``: two passes over the data, timed as one ``X @ W`` and one ``Xᵀ @ G`` over all of it:
  an epoch must read the data for the forward and again for the weight gradient. ``Xᵀ @ G`` is
  timed in two layouts, as written and as ``(Gᵀ X)ᵀ`` (see ``softmax_jax/model.py``), and the
  bound takes the faster.

It also times ``sj.logits`` (written per example and vmapped) against the hand-batched
``X @ W + b``, to show that vmap costs nothing.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from absl import logging

import softmax_jax as sj
from benchmarks.timing import REPEATS
from benchmarks.timing import interleaved_median_seconds
from benchmarks.timing import median_seconds
from benchmarks.timing import torch_device
from benchmarks.timing import torch_synchronized
from softmax_jax import _precision
from softmax_jax import train

_N = flags.DEFINE_integer("examples", 60000, "Training examples.")
_D = flags.DEFINE_integer("features", 784, "Features.")
_Q = flags.DEFINE_integer("classes", 10, "Classes.")
_BATCH = flags.DEFINE_integer("minibatch", 256, "Minibatch size.")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  n, d, q, bs, reps = _N.value, _D.value, _Q.value, _BATCH.value, REPEATS.value
  rng = np.random.default_rng(0)
  x_np = rng.random((n, d), dtype=np.float32)
  y_np = rng.integers(0, q, n).astype(np.int32)
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  opt = train.make_optimizer("sgd", 0.1)
  fresh = functools.partial(train.create_train_state, jax.random.PRNGKey(0), d, q, opt)

  state = [fresh()]

  def scan_epoch():
    state[0], m = train.train_epoch(state[0], x, y, jnp.int32(0), batch_size=bs, optimizer=opt,
                                    check_grad_every=0)
    jax.block_until_ready(m["loss"])

  step = jax.jit(functools.partial(train.train_step, optimizer=opt), donate_argnums=(0,))
  shuffle = jax.jit(train.make_batches, static_argnums=(2,))
  epoch_key = jax.random.PRNGKey(1)

  def python_loop():  # the same shuffle per epoch, then one dispatch per minibatch
    batches = shuffle(x, y, bs, train.shuffle(epoch_key, n))
    s = state[0]
    for i in range(batches.y.shape[0]):
      s, _ = step(s, jax.tree.map(lambda a, i=i: a[i], batches))
    state[0] = s
    jax.block_until_ready(s.params)

  W = jnp.zeros((d, q))
  G = jnp.ones((n, q)) / n
  # At the library's precision (full float32 products; see softmax_jax/_precision.py).
  fwd = jax.jit(lambda x, W: _precision.dot(x, W))
  # Xᵀ G in either layout (see softmax_jax/model.py): the bound takes the faster.
  barrier = jax.lax.optimization_barrier
  bwds = {"Xᵀ G": jax.jit(lambda x, G: _precision.dot(x.T, G)),
          "(Gᵀ X)ᵀ": jax.jit(lambda x, G: barrier(_precision.dot(barrier(G.T), x)).T)}
  np.testing.assert_allclose(*(f(x, G) for f in bwds.values()), rtol=1e-4, atol=1e-6)
  bwd_s = {name: median_seconds(lambda f=f: jax.block_until_ready(f(x, G)), reps)
           for name, f in bwds.items()}
  bwd = bwds[min(bwd_s, key=bwd_s.get)]

  def two_passes():
    jax.block_until_ready(fwd(x, W))
    jax.block_until_ready(bwd(x, G))

  # In turn, round by round, so that the machine's slow spells hit the epoch and its bound alike.
  no_args = tuple
  rows = interleaved_median_seconds({"scan": (scan_epoch, no_args),
                                     "per-step": (python_loop, no_args),
                                     "bound": (two_passes, no_args)}, reps)
  torch_s = None
  try:
    import torch

    device = torch_device(torch)
    xt = torch.tensor(x_np, device=device)
    yt = torch.tensor(y_np.astype(np.int64), device=device)
    model = torch.nn.Linear(d, q).to(device)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    perm = torch.randperm(n, device=device)

    def torch_epoch():
      for i in range(0, n, bs):
        idx = perm[i:i + bs]
        sgd.zero_grad()
        torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
        sgd.step()

    torch_s = median_seconds(torch_synchronized(torch, device, torch_epoch), reps)
  except ImportError:
    pass
  if torch_s is not None:
    rows["torch"] = torch_s

  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {n} × {d}, {q} classes, batch "
        f"{bs}, SGD; median of {reps} epochs after warm-up")
  print("weight-gradient product over all the data: " +
        ", ".join(f"{name} {sec * 1e3:.1f} ms" for name, sec in bwd_s.items()))
  print(f"{'variant':>10} {'epoch ms':>9} {'examples/s':>11} {'× bound':>8} {'scan speedup':>12}")
  for name, sec in rows.items():
    print(f"{name:>10} {sec * 1e3:9.1f} {n / sec:11.0f} {sec / rows['bound']:8.2f} "
          f"{sec / rows['scan']:12.2f}")

  params = sj.init_params(jax.random.PRNGKey(0), d, q)
  vmapped = jax.jit(sj.logits)
  batched = jax.jit(lambda p, x: _precision.dot(x, p.W) + p.b[None, :])
  np.testing.assert_allclose(vmapped(params, x[:512]), batched(params, x[:512]), rtol=1e-5,
                             atol=1e-6)
  tv = median_seconds(lambda: jax.block_until_ready(vmapped(params, x)), reps)
  tb = median_seconds(lambda: jax.block_until_ready(batched(params, x)), reps)
  print(f"sj.logits (per example, vmapped) {tv * 1e3:.1f} ms vs hand-batched X @ W + b "
        f"{tb * 1e3:.1f} ms: ratio {tv / tb:.2f}")


if __name__ == "__main__":
  app.run(main)
