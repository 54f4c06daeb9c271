"""Timing shared by the benchmark scripts: the median of repeated calls after a warm-up."""

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import flags

# Shared by every benchmark script, so that they can share a process (and a test session).
REPEATS = flags.DEFINE_integer("repeats", 7, "Timed runs per entry (the median is reported).",
                               lower_bound=5)


def median_seconds(call: Callable[..., Any], repeats: int,
                   setup: Callable[[], tuple] | None = None) -> float:
  """Median wall time of ``call(*setup())`` over ``repeats`` runs, after one warm-up run.

  ``setup`` (untimed) makes fresh arguments for every run, e.g. copies of buffers to donate.
  Results are waited for with ``jax.block_until_ready``.
  """
  args = setup() if setup else ()
  jax.block_until_ready(call(*args))
  times = []
  for _ in range(repeats):
    args = setup() if setup else ()
    jax.block_until_ready(args)
    t0 = time.perf_counter()
    jax.block_until_ready(call(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def interleaved_median_seconds(calls: dict[str, tuple[Callable[..., Any], Callable[[], tuple]]],
                               repeats: int) -> dict[str, float]:
  """Median wall time of each ``call(*setup())`` in ``calls``, the candidates run in turn.

  One warm-up run each, then ``repeats`` rounds that time every candidate once, in a new random
  order each round (seeded, so reproducible): on a shared, noisy machine a slow spell then hits
  all candidates alike instead of whichever happened to be timed during it. The order is shuffled
  rather than rotated so that no candidate always runs right after the same one: the buffers a
  call frees decide whether the next call's fresh outputs are page-faulted in, and with a rotation
  that effect fell on the same candidate every round.
  """
  names = list(calls)
  for call, setup in calls.values():
    jax.block_until_ready(call(*setup()))
  times: dict[str, list[float]] = {name: [] for name in names}
  rng = np.random.default_rng(0)
  for _ in range(repeats):
    for name in rng.permutation(names):
      call, setup = calls[name]
      args = setup()
      jax.block_until_ready(args)
      t0 = time.perf_counter()
      jax.block_until_ready(call(*args))
      times[name].append(time.perf_counter() - t0)
  return {name: float(np.median(t)) for name, t in times.items()}


def torch_device(torch: Any) -> str:
  """``"cuda"`` when JAX runs on a GPU and PyTorch sees one too, else ``"cpu"``: the anchors run
  on the same kind of device as JAX."""
  on_gpu = jax.devices()[0].platform == "gpu"
  return "cuda" if on_gpu and torch.cuda.is_available() else "cpu"


def torch_synchronized(torch: Any, device: str, call: Callable[[], Any]) -> Callable[[], Any]:
  """``call`` followed by ``torch.cuda.synchronize()`` on a GPU, so that its time is complete."""
  if device != "cuda":
    return call

  def synced():
    out = call()
    torch.cuda.synchronize()
    return out

  return synced
