"""Flags shared by the experiment scripts, defined once so that they can share a process."""

import json
import math
import os
from collections.abc import Sequence

from absl import flags

from softmax_jax import checkpoint
from softmax_jax import data

DATASET = flags.DEFINE_string(
    "dataset", "digits", f"A data set ({', '.join(sorted(data.DATASETS))}) or the path of your "
    f"own .npz (X, y) or .csv file.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Read the data set's files from this directory "
                               "instead of the download cache.")
CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Root of the download cache (default: "
                                f"${data.CACHE_ENV_VAR}, else ~/.cache/softmax_jax).")
WORKDIR = flags.DEFINE_string("workdir", None, "Where the outputs are written.")
SEED = flags.DEFINE_integer("seed", 0, "Seed.")


def load_dataset(name: str | None = None) -> data.Dataset:
  """The data set named by ``--dataset`` (or ``name``): a registered name or a user file.

  Raises:
    ValueError: an unknown name (listing the known ones) or an unreadable file.
    OSError: files missing and not downloadable (the message says which to put where).
  """
  name = name or DATASET.value
  if name in data.DATASETS:
    kwargs = {}
    if DATA_DIR.value:
      kwargs["data_dir"] = DATA_DIR.value
    if CACHE_DIR.value:
      kwargs["cache_dir"] = CACHE_DIR.value
    if kwargs and name in ("digits", "toy"):
      raise ValueError(f"--data_dir and --cache_dir do not apply to {name}, which is embedded.")
    return data.load(name, **kwargs)
  if os.path.splitext(name)[1].lower() in data.USER_FILE_LOADERS:
    return data.load_user_data(name)
  raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(sorted(data.DATASETS))}, or "
                   f"the path of an .npz or .csv file.")


# --- The research experiments (temperature, probit_vs_softmax, ...): one workdir each. -----------

OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the results an earlier run left in "
                              "--workdir (without it such a workdir is refused before any work).")
RESULTS = "results.json"


def require_workdir() -> str:
  """``--workdir``, checked before any work: set, and free of results unless ``--overwrite``.

  Raises:
    ValueError: ``--workdir`` unset, not a directory, or already holding ``results.json`` while
      ``--overwrite`` is false. Nothing is deleted: an overwrite replaces each file only when its
      new version is complete.
  """
  workdir = WORKDIR.value
  if not workdir:
    raise ValueError("--workdir is required: the experiment writes results.json and its figures "
                     "there.")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir!r} exists and is not a directory.")
  if os.path.exists(os.path.join(workdir, RESULTS)) and not OVERWRITE.value:
    raise ValueError(f"--workdir={workdir!r} already holds {RESULTS} from an earlier run; pass "
                     "--overwrite to replace it, or choose another --workdir.")
  os.makedirs(workdir, exist_ok=True)
  return workdir


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if hasattr(value, "tolist"):  # NumPy and JAX arrays and scalars
    return _jsonable(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # "inf", "-inf", "nan": strict JSON has no such numbers
  return value


def write_results(workdir: str, results: dict) -> str:
  """Writes ``results`` to ``workdir/results.json`` atomically; arrays become lists.

  Returns:
    The path written.
  """
  path = os.path.join(workdir, RESULTS)
  with checkpoint.atomic_open(path, "w") as f:
    json.dump(_jsonable(results), f, indent=2, allow_nan=False)
    f.write("\n")
  return path


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None, *,
                 floatfmt: str = ".4g") -> str:
  """A Markdown table of ``rows`` (dicts), in ``columns`` order (default: the first row's keys)."""
  if not rows:
    return ""
  columns = list(columns or rows[0].keys())

  def cell(v):
    if isinstance(v, float) or (hasattr(v, "dtype") and getattr(v, "ndim", 1) == 0):
      return format(float(v), floatfmt)
    return str(v)

  body = [[cell(r.get(c, "")) for c in columns] for r in rows]
  widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]

  def line(cells):
    return "| " + " | ".join(s.ljust(w) for s, w in zip(cells, widths, strict=True)) + " |"

  return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, body)])
