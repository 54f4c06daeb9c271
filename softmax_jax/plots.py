"""Figures, drawn with matplotlib's Agg backend (no display) and written atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

from softmax_jax import checkpoint


def _figure(ncols: int, width: float = 4.0):
  import matplotlib

  matplotlib.use("Agg", force=False)
  from matplotlib import pyplot as plt

  return plt, plt.subplots(1, ncols, figsize=(width * ncols, 3.2))


def save_figure(fig: Any, path: str | os.PathLike) -> None:
  """Writes ``fig`` as PNG to ``path`` atomically and closes it."""
  from matplotlib import pyplot as plt

  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format="png", dpi=110)
  plt.close(fig)
  with checkpoint.atomic_open(path, "wb") as f:
    f.write(buf.getvalue())


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
  """Loss and accuracy against epoch, as D2L's Animator draws them, saved to ``path``."""
  _, (fig, (ax_loss, ax_acc)) = _figure(2)
  epochs = [r["epoch"] for r in history]
  ax_loss.plot(epochs, [r["train_loss"] for r in history], "-", label="train loss")
  ax_loss.plot(epochs, [r["test_loss"] for r in history], "--", label="test loss")
  ax_loss.set_xlabel("epoch")
  ax_loss.set_ylabel("cross-entropy (nats)")
  ax_loss.set_yscale("log")
  ax_loss.legend()
  ax_loss.grid(alpha=0.3)
  ax_acc.plot(epochs, [r["test_accuracy"] for r in history], "-", color="C2",
              label="test accuracy")
  ax_acc.set_xlabel("epoch")
  ax_acc.set_ylabel("accuracy")
  ax_acc.legend(loc="lower right")
  ax_acc.grid(alpha=0.3)
  save_figure(fig, path)
