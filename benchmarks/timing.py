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
