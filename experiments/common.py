"""Flags shared by the experiment scripts, defined once so that they can share a process."""

import os

from absl import flags

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
