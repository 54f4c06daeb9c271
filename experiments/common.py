"""Flags shared by the experiment scripts, defined once so that they can share a process."""

from absl import flags

from softmax_jax import data

DATASET = flags.DEFINE_enum("dataset", "digits", sorted(data.DATASETS), "Data set.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Read the data set's files from this directory "
                               "instead of the download cache.")
WORKDIR = flags.DEFINE_string("workdir", None, "Where the outputs are written.")
SEED = flags.DEFINE_integer("seed", 0, "Seed.")


def load_dataset(name: str | None = None):
  """The data set named by ``--dataset`` (or ``name``), read from ``--data_dir`` if given."""
  kwargs = {"data_dir": DATA_DIR.value} if DATA_DIR.value else {}
  return data.load(name or DATASET.value, **kwargs)
