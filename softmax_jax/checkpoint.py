"""Atomic files and checkpoints of a pytree.

Every write goes to a temporary file in the destination's directory, is flushed to disk, and then
renamed over the destination (``os.replace`` is atomic on POSIX). A reader therefore sees either
the old file or the new one, never a partial file, even if the writer is killed with SIGKILL.

A checkpoint is one ``.npz`` file: the pytree's leaves as ``leaf_00000``… and a JSON ``meta``
entry (format version, the treedef's text, each leaf's shape and dtype, and caller metadata such
as the epoch and the run's config). Restoring needs a template pytree of the same structure, so
a checkpoint from an incompatible model or optimizer is refused with an error naming the
difference instead of being loaded into the wrong slots.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

FORMAT = "softmax_jax.checkpoint/1"


def _file_mode() -> int:
  """The mode an ordinary ``open`` would give a new file (mkstemp's is 0600)."""
  umask = os.umask(0)
  os.umask(umask)
  return 0o666 & ~umask


class CheckpointError(ValueError):
  """A checkpoint is missing, corrupt, or does not fit the model being restored."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
  """Opens a temporary file that replaces ``path`` only when the block exits without error."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                             suffix=".tmp")
  try:
    os.chmod(tmp, _file_mode())
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
  with contextlib.suppress(OSError):  # make the rename itself durable
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(dir_fd)
    finally:
      os.close(dir_fd)


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save(path: str | os.PathLike, tree: Any, *, meta: dict[str, Any] | None = None) -> None:
  """Saves the pytree ``tree`` (arrays as leaves) and JSON-able ``meta`` to ``path`` atomically."""
  leaves, treedef = jax.tree.flatten(tree)
  arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
  header = {"format": FORMAT, "treedef": str(treedef),
            "leaves": [[list(a.shape), a.dtype.str] for a in arrays.values()],
            "meta": meta or {}}
  buf = io.BytesIO()
  np.savez(buf, meta=np.asarray(json.dumps(header)), **arrays)
  with atomic_open(path, "wb") as f:
    f.write(buf.getvalue())


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
  """The caller metadata of the checkpoint at ``path``."""
  return _read(path)[0]["meta"]


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise CheckpointError(f"no checkpoint at {path}.")
  try:
    with np.load(path, allow_pickle=False) as npz:
      header = json.loads(str(npz["meta"]))
      arrays = {k: npz[k] for k in npz.files if k != "meta"}
  except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as e:
    raise CheckpointError(f"checkpoint {path} is corrupt or not a softmax_jax checkpoint: "
                          f"{type(e).__name__}: {e}") from None
  if header.get("format") != FORMAT:
    raise CheckpointError(f"checkpoint {path} has format {header.get('format')!r}; this version "
                          f"reads {FORMAT!r}.")
  return header, arrays


def restore(path: str | os.PathLike, template: Any) -> tuple[Any, dict[str, Any]]:
  """Restores the pytree saved at ``path`` into the structure of ``template``.

  Returns:
    ``(tree, meta)``: the restored pytree (leaves as ``jax.Array``) and the caller metadata.

  Raises:
    CheckpointError: the file is missing or corrupt, or its structure, a leaf's shape or a leaf's
      dtype differs from ``template``'s (the message names the first difference).
  """
  header, arrays = _read(path)
  leaves, treedef = jax.tree.flatten(template)
  if header["treedef"] != str(treedef):
    raise CheckpointError(f"checkpoint {path} holds a different structure (another model or "
                          f"optimizer?):\n  saved:    {header['treedef']}\n  expected: {treedef}")
  if len(arrays) != len(leaves):
    raise CheckpointError(f"checkpoint {path} has {len(arrays)} arrays; expected {len(leaves)}.")
  out = []
  for i, leaf in enumerate(leaves):
    saved = arrays[f"leaf_{i:05d}"]
    want = np.asarray(leaf)
    if saved.shape != want.shape or saved.dtype != want.dtype:
      raise CheckpointError(f"checkpoint {path}: array {i} has shape {saved.shape} and dtype "
                            f"{saved.dtype}; the model expects {want.shape} {want.dtype}.")
    out.append(jax.numpy.asarray(saved))
  return jax.tree.unflatten(treedef, out), header["meta"]
