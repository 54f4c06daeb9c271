"""Data sets as host arrays: features flattened to ``(n, d)`` float32, labels int32.

The named data sets are in :data:`DATASETS` (what an absl ``--dataset`` flag enumerates); get one
with :func:`load`:

* ``digits``, the embedded default: the 1,797 real 8×8 handwritten digits (10 classes) that ship
  inside scikit-learn, so it works offline. It is split 80/20, stratified, deterministically.
* ``fashion_mnist`` and ``mnist``: 28×28 greyscale images, 60,000 train and 10,000 test, read from
  the four gzipped IDX files their authors publish. The files are downloaded once, with nothing
  but the standard library, checked against their published size and SHA-256, and cached.
* ``toy``: D2L §4.1's running example, 2×2 greyscale images of a cat, a chicken or a dog,
  generated from a seed.

Your own data: :func:`load_user_data` reads a ``.npz`` (:func:`load_npz`) or a ``.csv``
(:func:`load_csv`) file.

Scaling: the pixels of the image data sets (digits, Fashion-MNIST, MNIST) are scaled to
``[0, 1]``. Features read from your own files are kept exactly as given (cast to float32): they
are validated, never silently rescaled, so standardise them yourself if they need it.

Cache: downloads go to ``<root>/<dataset>/``, where ``<root>`` is the ``cache_dir`` argument,
else the environment variable ``SOFTMAX_JAX_DATA``, else ``~/.cache/softmax_jax``. Each file is
written to a temporary file in that directory, verified, then renamed into place, so an
interrupted download never leaves a partial file under the final name. To work offline, put the
four files in that directory yourself, or pass ``data_dir=`` to read them from any directory.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import http.client
import logging
import math
import numbers
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import NamedTuple

import numpy as np

_log = logging.getLogger(__name__)

CACHE_ENV_VAR = "SOFTMAX_JAX_DATA"
"""Environment variable naming the cache root; data set ``name`` is cached in ``$VAR/name``."""

_DEFAULT_CACHE_ROOT = Path("~/.cache/softmax_jax")
_TIMEOUT_S = 60.0  # per blocking socket operation, not per file
_CHUNK_BYTES = 1 << 20


class Dataset(NamedTuple):
  """A train/test split with its metadata.

  Attributes:
    x_train: ``(n_train, d)`` float32 features (in ``[0, 1]`` for the image data sets; as given
      for user files).
    y_train: ``(n_train,)`` int32 class ids.
    x_test: ``(n_test, d)`` float32.
    y_test: ``(n_test,)`` int32.
    class_names: one name per class.
    image_shape: the shape of one image before flattening (``(d,)`` for user files).
    source: where the data came from (a URL, a directory or a file).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  class_names: tuple[str, ...]
  image_shape: tuple[int, ...]
  source: str

  @property
  def num_features(self) -> int:
    return self.x_train.shape[1]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def stratified_split(y: np.ndarray, *, test_fraction: float, seed: int) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
  """Indices of a stratified split: each class keeps its share in train and test.

  Deterministic for a given ``seed``: every class is shuffled with its own generator stream and
  ``round(test_fraction · n_class)`` of it goes to test.
  """
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}.")
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    n_test = int(round(test_fraction * idx.size))
    test.append(idx[:n_test])
    train.append(idx[n_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """The scikit-learn digits: 1,797 8×8 images of 0–9, pixels 0–16 scaled to [0, 1].

  Args:
    test_fraction: the share of each class held out for test.
    seed: the split's seed.

  Returns:
    A :class:`Dataset` of 64 features and 10 classes (1,438 train and 359 test at the defaults).

  References:
    Alpaydin & Kaynak, Optical Recognition of Handwritten Digits, UCI, 1998 (as shipped by
    scikit-learn's ``load_digits``).
  """
  from sklearn.datasets import load_digits as _sk_load_digits  # a heavy import; only here

  bunch = _sk_load_digits()
  x = (bunch.data / 16.0).astype(np.float32)
  y = bunch.target.astype(np.int32)
  train, test = stratified_split(y, test_fraction=test_fraction, seed=seed)
  return Dataset(x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test],
                 class_names=tuple(str(c) for c in bunch.target_names), image_shape=(8, 8),
                 source="sklearn.datasets.load_digits (bundled with scikit-learn)")


# ------------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST): parsing.

_IDX_UBYTE = 0x08
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # labels, images


def read_idx(source: str | os.PathLike | bytes, *, ndim: int | None = None,
             name: str | None = None) -> np.ndarray:
  """Parses an IDX file of unsigned bytes, gzipped or not.

  The header is two zero bytes, a data-type code (``0x08``: unsigned byte, the only one
  accepted), the number of dimensions, then each dimension as a big-endian uint32; the payload
  follows, row-major. MNIST's images have magic number ``0x00000803`` (3 dimensions) and its
  labels ``0x00000801`` (1 dimension). The payload must be exactly as long as the dimensions say:
  a truncated file or one with trailing bytes is an error.

  Args:
    source: a path, or the file's bytes. Gzip is detected by its magic bytes ``1f 8b``.
    ndim: the number of dimensions required; ``None`` accepts 1 (labels) or 3 (images).
    name: what to call the data in error messages (default: the path, or ``<bytes>``).

  Returns:
    A ``uint8`` array of the header's shape.

  Raises:
    ValueError: naming the file, for a corrupt gzip stream, a bad magic number, an unsupported
      data type or number of dimensions, or a payload whose length differs from the product of
      the dimensions.

  References:
    LeCun, Cortes & Burges, The MNIST database of handwritten digits ("file formats"), 1998.
  """
  if isinstance(source, (bytes, bytearray, memoryview)):
    raw, label = bytes(source), name or "<bytes>"
  else:
    path = Path(source)
    label = name or str(path)
    raw = path.read_bytes()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
      raise ValueError(f"{label}: corrupt gzip stream ({e}). Delete the file and fetch it "
                       f"again.") from None
  if len(raw) < 4:
    raise ValueError(f"{label}: {len(raw)} bytes is too short for an IDX header (4 bytes of "
                     f"magic number, then 4 per dimension).")
  magic = int.from_bytes(raw[:4], "big")
  code, nd = raw[2], raw[3]
  expected_ndims = (1, 3) if ndim is None else (ndim,)
  wanted = " or ".join(f"0x{_IDX_MAGIC.get(d, (_IDX_UBYTE << 8) | d):08X}"
                       for d in expected_ndims)
  if raw[:2] != b"\x00\x00":
    raise ValueError(f"{label}: not an IDX file: magic number 0x{magic:08X} does not start with "
                     f"two zero bytes (expected {wanted}).")
  if code != _IDX_UBYTE:
    raise ValueError(f"{label}: IDX data type code 0x{code:02X} (magic number 0x{magic:08X}) is "
                     f"not supported; only unsigned bytes (0x08) are (expected {wanted}).")
  if nd not in expected_ndims:
    raise ValueError(f"{label}: IDX magic number 0x{magic:08X} gives {nd} dimension(s); expected "
                     f"{' or '.join(map(str, expected_ndims))} (magic {wanted}).")
  header = 4 + 4 * nd
  if len(raw) < header:
    raise ValueError(f"{label}: truncated IDX header: {nd} dimension(s) need a {header}-byte "
                     f"header; the file has {len(raw)} bytes.")
  dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(nd))
  expected, actual = math.prod(dims), len(raw) - header
  if actual != expected:
    what = "is truncated" if actual < expected else "has trailing bytes"
    raise ValueError(f"{label}: IDX payload {what}: dimensions {dims} need {expected:,} bytes "
                     f"after the {header}-byte header; got {actual:,}.")
  return np.frombuffer(raw, np.uint8, count=expected, offset=header).reshape(dims).copy()


# ------------------------------------------------------------------------------------------------
# IDX files: where they come from, downloading and caching.


class _Source(NamedTuple):
  """One published file: its role, file name, SHA-256 and size in bytes."""

  name: str
  filename: str
  sha256: str
  size: int


class _IdxSpec(NamedTuple):
  """An IDX data set: mirrors tried in order, its four files, its class names, a reference."""

  mirrors: tuple[str, ...]
  sources: tuple[_Source, ...]  # train_images, train_labels, test_images, test_labels
  class_names: tuple[str, ...]
  reference: str


# Sizes and SHA-256 as recorded by tensorflow_datasets (tensorflow_datasets/url_checksums/
# fashion_mnist.txt and mnist.txt); every mirror serves the same bytes.
_IDX_SPECS: dict[str, _IdxSpec] = {
    "fashion_mnist": _IdxSpec(
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        sources=(
            _Source("train_images", "train-images-idx3-ubyte.gz",
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
            _Source("train_labels", "train-labels-idx1-ubyte.gz",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
            _Source("test_images", "t10k-images-idx3-ubyte.gz",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
            _Source("test_labels", "t10k-labels-idx1-ubyte.gz",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
        ),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
        reference="Xiao, Rasul & Vollgraf, Fashion-MNIST, arXiv:1708.07747, 2017"),
    "mnist": _IdxSpec(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",  # the original; often down
        ),
        sources=(
            _Source("train_images", "train-images-idx3-ubyte.gz",
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
            _Source("train_labels", "train-labels-idx1-ubyte.gz",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
            _Source("test_images", "t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
            _Source("test_labels", "t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        ),
        class_names=tuple(str(d) for d in range(10)),
        reference="LeCun, Bottou, Bengio & Haffner, Proc. IEEE 86(11), 1998"),
}


class DownloadError(OSError):
  """No mirror delivered a file: offline, connection refused, HTTP error or interrupted."""


class ChecksumError(ValueError):
  """A file's size or SHA-256 differs from the published value."""


class _TransferError(Exception):
  """One mirror failed to deliver one file (a network failure, not a local one)."""


def cache_directory(dataset: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
  """Where ``dataset``'s downloaded files are cached: ``<root>/<dataset>``.

  ``<root>`` is ``cache_dir`` if given, else ``$SOFTMAX_JAX_DATA`` if set (and not empty), else
  ``~/.cache/softmax_jax``. Nothing is created.
  """
  root = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV_VAR) or None
  return Path(root if root is not None else _DEFAULT_CACHE_ROOT).expanduser() / dataset


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK_BYTES):
      h.update(chunk)
  return h.hexdigest()


def _url(base: str, filename: str) -> str:
  return base.rstrip("/") + "/" + filename


def _describe(e: BaseException) -> str:
  if isinstance(e, urllib.error.HTTPError):
    return f"HTTP {e.code} {e.reason}"
  if isinstance(e, urllib.error.URLError):
    return f"{e.reason}"
  return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _fetch(url: str, source: _Source, dest: Path) -> None:
  """Downloads ``url`` into ``dest`` atomically, verifying its size and SHA-256.

  The bytes go to a temporary file beside ``dest``, which is renamed to ``dest`` only once
  verified, and deleted on any failure (including KeyboardInterrupt).
  """
  fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
  try:
    h, n = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as f:
      try:
        response = urllib.request.urlopen(url, timeout=_TIMEOUT_S)
      except (OSError, http.client.HTTPException) as e:
        if isinstance(e, urllib.error.HTTPError):
          e.close()  # an HTTPError holds the connection open
        raise _TransferError(_describe(e)) from e
      with response:
        while True:
          try:
            chunk = response.read(_CHUNK_BYTES)
          except (OSError, http.client.HTTPException) as e:
            raise _TransferError(f"interrupted after {n:,} bytes ({_describe(e)})") from e
          if not chunk:
            break
          n += len(chunk)
          if n > source.size:
            raise _TransferError(f"sent more than the expected {source.size:,} bytes")
          h.update(chunk)
          f.write(chunk)
    if n != source.size:
      raise _TransferError(f"incomplete: received {n:,} of {source.size:,} bytes")
    if h.hexdigest() != source.sha256:
      raise ChecksumError(f"SHA-256 mismatch for {source.filename} downloaded from {url}: "
                          f"expected {source.sha256}, got {h.hexdigest()}. Nothing was cached.")
    os.replace(tmp, dest)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def _download(source: _Source, directory: Path,
              mirrors: Sequence[str]) -> tuple[str | None, list[str]]:
  """Tries each mirror in turn; returns the URL that worked, or ``None`` and the failures.

  A checksum mismatch from one mirror moves on to the next; if no mirror delivers a verified
  file, the mismatch (the most telling failure) is raised.
  """
  failures, mismatch = [], None
  for base in mirrors:
    url = _url(base, source.filename)
    _log.info("Downloading %s to %s", url, directory)
    try:
      _fetch(url, source, directory / source.filename)
      if failures:
        _log.warning("Downloaded %s after these mirrors failed: %s", url, "; ".join(failures))
      return url, failures
    except _TransferError as e:
      failures.append(f"{url}: {e}")
    except ChecksumError as e:
      mismatch = e
      failures.append(f"{url}: {e}")
  if mismatch is not None:
    if len(failures) == 1:
      raise mismatch
    others = "".join(f"\n  {f}" for f in failures)
    raise ChecksumError(f"{mismatch}\nMirrors tried:{others}")
  return None, failures


def _files_help(dataset: str, mirrors: Sequence[str], sources: Sequence[_Source],
                directory: Path) -> str:
  listing = "".join(f"\n  {s.filename}  ({s.size:,} bytes, sha256 {s.sha256})" for s in sources)
  return (f"put these {dataset} files in {directory}:{listing}\n"
          f"(from any of {', '.join(mirrors)}), or pass data_dir=<a directory holding them>, "
          f"or set {CACHE_ENV_VAR}=<root> to use <root>/{dataset} as the cache.")


def _ensure_cached(dataset: str, spec: _IdxSpec, directory: Path, mirrors: Sequence[str],
                   download: bool) -> str | None:
  """Makes the four files present and verified in ``directory``; returns a URL used, if any."""
  missing = [s for s in spec.sources if not (directory / s.filename).is_file()]
  for s in spec.sources:
    if s not in missing:  # cached earlier, or put there by hand: check it is the published file
      size = (directory / s.filename).stat().st_size
      actual = _sha256(directory / s.filename) if size == s.size else None
      if actual != s.sha256:
        got = f"sha256 {actual}" if actual else f"{size:,} bytes"
        raise ChecksumError(f"Cached file {directory / s.filename} differs from the published "
                            f"{s.filename}: expected {s.size:,} bytes with sha256 {s.sha256}, "
                            f"got {got}. Delete it to download it again.")
  if not missing:
    return None
  if not download:
    raise FileNotFoundError(f"{dataset} is not cached and download=False; "
                            + _files_help(dataset, mirrors, missing, directory))
  directory.mkdir(parents=True, exist_ok=True)
  used = None
  for i, s in enumerate(missing):
    url, failures = _download(s, directory, mirrors)
    if url is None:
      tried = "".join(f"\n  {f}" for f in failures)
      raise DownloadError(f"Could not download {s.filename} for {dataset}; every mirror failed:"
                          f"{tried}\nTo work offline, "
                          + _files_help(dataset, mirrors, missing[i:], directory))
    used = used or url.rsplit("/", 1)[0] + "/"
  return used


def _load_idx(dataset: str, *, data_dir: str | os.PathLike | None,
              cache_dir: str | os.PathLike | None, download: bool,
              mirrors: str | Sequence[str] | None) -> Dataset:
  spec = _IDX_SPECS[dataset]
  if mirrors is None:
    mirrors = spec.mirrors
  elif isinstance(mirrors, str):
    mirrors = (mirrors,)
  mirrors = tuple(mirrors)
  if not mirrors or not all(isinstance(m, str) and m for m in mirrors):
    raise ValueError(f"mirrors must be a non-empty sequence of base URLs; got {mirrors!r}.")
  if data_dir is not None:
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
      raise FileNotFoundError(f"data_dir {directory} is not a directory. It should hold the "
                              f"{dataset} files {', '.join(s.filename for s in spec.sources)}.")
    paths = {}
    for s in spec.sources:  # the published .gz, or the same file unpacked
      candidates = [directory / s.filename, directory / s.filename.removesuffix(".gz")]
      found = [p for p in candidates if p.is_file()]
      paths[s.name] = found[0] if found else None
    absent = [s for s in spec.sources if paths[s.name] is None]
    if absent:
      raise FileNotFoundError(
          f"data_dir {directory} lacks {', '.join(s.filename for s in absent)} (gzipped or not). "
          f"data_dir is read as is and never downloaded into; omit it to download {dataset} into "
          f"the cache ({cache_directory(dataset, cache_dir=cache_dir)}).")
    source = str(directory)
  else:
    directory = cache_directory(dataset, cache_dir=cache_dir)
    url = _ensure_cached(dataset, spec, directory, mirrors, download)
    source = f"{url or mirrors[0]} (cached in {directory})"
    paths = {s.name: directory / s.filename for s in spec.sources}

  def images(role):
    x = read_idx(paths[role], ndim=3)
    if x.shape[1:] != (28, 28):
      raise ValueError(f"{paths[role]}: images must be 28×28; got shape {x.shape}.")
    return x

  def labels(role, n_images):
    y = read_idx(paths[role], ndim=1)
    if y.shape[0] != n_images:
      raise ValueError(f"{paths[role]} has {y.shape[0]:,} labels but its images file has "
                       f"{n_images:,} images.")
    bad = np.flatnonzero(y >= len(spec.class_names))
    if bad.size:
      raise ValueError(f"{paths[role]}: labels must be < {len(spec.class_names)}; got {y[bad[0]]} "
                       f"at index {bad[0]} ({bad.size} such labels).")
    return y.astype(np.int32)

  x_train, x_test = images("train_images"), images("test_images")
  y_train = labels("train_labels", x_train.shape[0])
  y_test = labels("test_labels", x_test.shape[0])

  def scale(x):  # pixels 0–255 -> [0, 1], flattened to 784 features
    return x.reshape(x.shape[0], -1).astype(np.float32) / np.float32(255)

  return Dataset(x_train=scale(x_train), y_train=y_train, x_test=scale(x_test), y_test=y_test,
                 class_names=spec.class_names, image_shape=(28, 28), source=source)


def load_fashion_mnist(*, data_dir: str | os.PathLike | None = None,
                       cache_dir: str | os.PathLike | None = None, download: bool = True,
                       mirrors: str | Sequence[str] | None = None) -> Dataset:
  """Fashion-MNIST: 70,000 28×28 greyscale images of 10 kinds of clothing, pixels in [0, 1].

  Files are ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``, from Zalando's site
  http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ (or its GitHub copy).

  Args:
    data_dir: a directory already holding the four files (gzipped or not); read as is, with the
      IDX format checked strictly but not the published checksums, and never downloaded into.
    cache_dir: the cache root when ``data_dir`` is not given; the files live in
      ``cache_dir/fashion_mnist``. Default: ``$SOFTMAX_JAX_DATA``, else ``~/.cache/softmax_jax``.
    download: whether to download files missing from the cache. Downloads are checked against
      the published size and SHA-256 and written atomically; cached files are re-checked on
      every load.
    mirrors: base URLs tried in order (default: the published ones).

  Returns:
    A :class:`Dataset` of 60,000 train and 10,000 test examples, 784 features, 10 classes
    (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot).

  Raises:
    DownloadError: every mirror failed for some file; the message lists the files to put in
      which directory to work offline.
    ChecksumError: a downloaded or cached file is not the published one.
    FileNotFoundError: ``data_dir`` lacks a file, or a file is missing and ``download=False``.
    ValueError: a file is not a valid IDX file of the expected shape.

  References:
    Xiao, Rasul & Vollgraf, Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
    Learning Algorithms, arXiv:1708.07747, 2017. Zhang et al., Dive into Deep Learning, §4.2.
  """
  return _load_idx("fashion_mnist", data_dir=data_dir, cache_dir=cache_dir, download=download,
                   mirrors=mirrors)


def load_mnist(*, data_dir: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None, download: bool = True,
               mirrors: str | Sequence[str] | None = None) -> Dataset:
  """MNIST: 70,000 28×28 greyscale handwritten digits, pixels in [0, 1].

  The original site (http://yann.lecun.com/exdb/mnist/) is often down, so the same files are
  fetched from mirrors, in order: ``https://ossci-datasets.s3.amazonaws.com/mnist/``,
  ``https://storage.googleapis.com/cvdf-datasets/mnist/``, then the original. Arguments, errors
  and caching are as for :func:`load_fashion_mnist` (the cache is ``<root>/mnist``).

  Returns:
    A :class:`Dataset` of 60,000 train and 10,000 test examples, 784 features, classes "0"–"9".

  References:
    LeCun, Bottou, Bengio & Haffner, Gradient-based learning applied to document recognition,
    Proc. IEEE 86(11), 1998.
  """
  return _load_idx("mnist", data_dir=data_dir, cache_dir=cache_dir, download=download,
                   mirrors=mirrors)


# ------------------------------------------------------------------------------------------------
# The text's toy example.

TOY_CLASS_NAMES = ("cat", "chicken", "dog")
# Mean 2×2 image of each class, pairwise equally far apart (distance 0.6·√2 ≈ 0.85): a cat has
# two bright ears on top, a chicken a bright left side (its head and breast), a dog a diagonal.
_TOY_MEANS = np.array([[[0.8, 0.8], [0.2, 0.2]],
                       [[0.8, 0.2], [0.8, 0.2]],
                       [[0.8, 0.2], [0.2, 0.8]]], np.float32)


def _positive_int(value: Any, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f"{name} must be a positive int; got {value!r}.")
  return int(value)


def load_toy(*, num_train: int = 300, num_test: int = 90, noise: float = 0.15,
             seed: int = 0) -> Dataset:
  """The text's 2×2 greyscale images of a cat, a chicken or a dog (4 features, 3 classes).

  Each class has its own mean 2×2 image; an example is its class's mean plus Gaussian noise of
  standard deviation ``noise``, clipped to ``[0, 1]``. Classes are balanced (they differ by at
  most one) and shuffled. Train and test come from independent streams of ``seed``, so the train
  set does not depend on ``num_test``; the same arguments always give the same arrays.

  Args:
    num_train: number of training examples.
    num_test: number of test examples.
    noise: standard deviation of the pixel noise (before clipping).
    seed: the generator's seed.

  Returns:
    A :class:`Dataset` with class names ``("cat", "chicken", "dog")`` and image shape ``(2, 2)``.

  References:
    Zhang et al., Dive into Deep Learning, §4.1.1 (classification: 2×2 images of cats,
    chickens and dogs).
  """
  num_train = _positive_int(num_train, "num_train")
  num_test = _positive_int(num_test, "num_test")
  if not (isinstance(noise, numbers.Real) and np.isfinite(noise) and noise >= 0):
    raise ValueError(f"noise must be a finite number >= 0; got {noise!r}.")
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
    raise ValueError(f"seed must be an int >= 0; got {seed!r}.")

  def draw(seq, n):
    rng = np.random.default_rng(seq)
    y = rng.permutation(np.arange(n) % len(TOY_CLASS_NAMES)).astype(np.int32)
    x = _TOY_MEANS[y].reshape(n, 4) + noise * rng.standard_normal((n, 4), dtype=np.float32)
    return np.clip(x, 0, 1).astype(np.float32), y

  train_seq, test_seq = np.random.SeedSequence(int(seed)).spawn(2)
  x_train, y_train = draw(train_seq, num_train)
  x_test, y_test = draw(test_seq, num_test)
  return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 class_names=TOY_CLASS_NAMES, image_shape=(2, 2),
                 source=f"softmax_jax.data.load_toy(seed={seed}, noise={noise})")


# ------------------------------------------------------------------------------------------------
# The user's own files.


def _features(x: Any, where: str) -> np.ndarray:
  """Validates a 2-D, finite, float-convertible feature array; returns it as float32."""
  x = np.asarray(x)
  if x.ndim != 2 or 0 in x.shape:
    raise ValueError(f"{where} must be a non-empty 2-D array (examples × features); got shape "
                     f"{x.shape}.")
  if x.dtype.kind == "c":
    raise TypeError(f"{where} must be real numbers; got dtype {x.dtype} with shape {x.shape}.")
  try:
    with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf: caught below
      x32 = x.astype(np.float32)
  except (TypeError, ValueError) as e:
    raise TypeError(f"{where} must be numbers; got dtype {x.dtype} with shape {x.shape} "
                    f"({e}).") from None
  bad = ~np.isfinite(x32)
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise ValueError(f"{where} (shape {x.shape}) must be finite in float32; got "
                     f"{x[i, j].item()!r} at row {i}, column {j} ({int(bad.sum())} such entries).")
  return x32


def _labels(y: Any, where: str) -> np.ndarray:
  """Validates 1-D, integer-like, non-negative class ids; returns them as int32."""
  y = np.asarray(y)
  if y.ndim != 1:
    raise ValueError(f"{where} must be a 1-D array of class ids; got shape {y.shape}.")
  if y.dtype.kind == "f":
    bad = ~(np.isfinite(y) & (y == np.round(y)))
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      raise ValueError(f"{where} (shape {y.shape}) must be whole-number class ids; got "
                       f"{y[i].item()!r} at index {i} ({int(bad.sum())} such labels).")
  elif y.dtype.kind not in "biu":
    raise TypeError(f"{where} must be integer class ids; got dtype {y.dtype} with shape "
                    f"{y.shape}. Map names to ids first, or use a CSV file (which does).")
  bad = (y < 0) | (y > np.iinfo(np.int32).max)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise ValueError(f"{where} (shape {y.shape}) must be class ids in [0, 2**31); got "
                     f"{y[i].item()!r} at index {i} ({int(bad.sum())} such labels).")
  return y.astype(np.int32)


def _split(x: np.ndarray, y: np.ndarray, *, test_fraction: float, seed: int,
           where: str) -> tuple[np.ndarray, ...]:
  train, test = stratified_split(y, test_fraction=test_fraction, seed=seed)
  if train.size == 0 or test.size == 0:
    raise ValueError(f"{where}: test_fraction={test_fraction} splits {y.size} examples into "
                     f"{train.size} train and {test.size} test; both must be non-empty.")
  return x[train], y[train], x[test], y[test]


def _id_class_names(*ys: np.ndarray) -> tuple[str, ...]:
  return tuple(str(c) for c in range(max(int(y.max()) for y in ys) + 1))


def load_npz(path: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Your data from a NumPy ``.npz`` archive, features kept as given (not rescaled).

  The archive holds either ``X`` (or ``x``), shape ``(n, d)``, and ``y``, shape ``(n,)``, which
  are split with :func:`stratified_split`; or the four arrays ``x_train``, ``y_train``,
  ``x_test``, ``y_test``, used as they are. Features must be finite numbers; labels whole-number
  class ids ``>= 0`` (integer, boolean, or float with whole values). An optional 1-D string array
  ``class_names`` names the classes; otherwise they are ``"0"``, ``"1"``, …. The archive is read
  without pickle.

  Args:
    path: the ``.npz`` file.
    test_fraction: the share of each class held out for test (``X``/``y`` archives only).
    seed: the split's seed.

  Returns:
    A :class:`Dataset` with float32 features of image shape ``(d,)``.

  Raises:
    ValueError: naming the file, for missing or ambiguous arrays, or bad shapes or values.
    TypeError: for arrays of the wrong dtype.
  """
  path = Path(path)
  try:
    loaded = np.load(path, allow_pickle=False)
    if not hasattr(loaded, "files"):
      raise ValueError(f"it holds a single array of shape {loaded.shape}, not an archive")
    with loaded:
      arrays = {k: loaded[k] for k in loaded.files}
  except FileNotFoundError:
    raise FileNotFoundError(f"No such .npz file: {path}.") from None
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not a readable .npz archive of numeric arrays "
                     f"({type(e).__name__}: {e}).") from None

  split_keys = ("x_train", "y_train", "x_test", "y_test")
  found = sorted(arrays)
  if any(k in arrays for k in split_keys):
    absent = [k for k in split_keys if k not in arrays]
    if absent:
      raise ValueError(f"{path}: a pre-split archive needs all of {split_keys}; missing "
                       f"{absent} (found {found}).")
    if any(k in arrays for k in ("X", "x", "y")):
      raise ValueError(f"{path} holds both pre-split arrays and X/x/y (found {found}); keep "
                       f"one layout.")
    x_train = _features(arrays["x_train"], f"{path}: x_train")
    x_test = _features(arrays["x_test"], f"{path}: x_test")
    y_train = _labels(arrays["y_train"], f"{path}: y_train")
    y_test = _labels(arrays["y_test"], f"{path}: y_test")
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
      if x.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: x_{part} has {x.shape[0]} rows (shape {x.shape}) but y_{part} "
                         f"has {y.shape[0]} labels.")
    if x_train.shape[1] != x_test.shape[1]:
      raise ValueError(f"{path}: x_train has {x_train.shape[1]} features (shape {x_train.shape}) "
                       f"but x_test has {x_test.shape[1]} (shape {x_test.shape}).")
  else:
    x_keys = [k for k in ("X", "x") if k in arrays]
    if len(x_keys) != 1 or "y" not in arrays:
      raise ValueError(f"{path} must hold X (or x) and y, or x_train, y_train, x_test and y_test; "
                       f"found {found}.")
    x = _features(arrays[x_keys[0]], f"{path}: {x_keys[0]}")
    y = _labels(arrays["y"], f"{path}: y")
    if x.shape[0] != y.shape[0]:
      raise ValueError(f"{path}: {x_keys[0]} has {x.shape[0]} rows (shape {x.shape}) but y has "
                       f"{y.shape[0]} labels (shape {y.shape}).")
    x_train, y_train, x_test, y_test = _split(x, y, test_fraction=test_fraction, seed=seed,
                                              where=str(path))

  class_names = _id_class_names(y_train, y_test)
  if "class_names" in arrays:
    names = arrays["class_names"]
    if names.ndim != 1 or names.dtype.kind not in "US" or names.size < len(class_names):
      raise ValueError(f"{path}: class_names must be a 1-D string array with at least "
                       f"{len(class_names)} entries (the largest label + 1); got dtype "
                       f"{names.dtype} with shape {names.shape}.")
    class_names = tuple(str(n) for n in names)
  return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 class_names=class_names, image_shape=(x_train.shape[1],), source=str(path))


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def load_csv(path: str | os.PathLike, *, label_column: int | str = -1, header: bool | None = None,
             delimiter: str = ",", test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Your data from a CSV file: one example a row, numeric features, one label column.

  Features are kept exactly as given (cast to float32, not rescaled) and must be finite numbers.
  Labels that are all whole numbers ``>= 0`` are used as class ids (class names ``"0"``, …,
  ``"max"``); any other labels (strings such as ``cat``, or negative numbers) are mapped to ids
  by their sorted unique values (numerically if all are numbers), which become the class names.
  Blank lines are skipped. The rows are split with :func:`stratified_split`.

  Args:
    path: the ``.csv`` file (UTF-8, an optional byte-order mark is ignored).
    label_column: the label's column: an index (negative counts from the end) or a header name.
    header: whether the first row names the columns; ``None`` detects it: a first row with a
      non-numeric feature field is a header (always so when ``label_column`` is a name).
    delimiter: the field separator.
    test_fraction: the share of each class held out for test.
    seed: the split's seed.

  Returns:
    A :class:`Dataset` with float32 features of image shape ``(d,)``.

  Raises:
    ValueError: naming the file and line, for an empty file, a ragged row, a non-numeric or
      non-finite feature, or an unknown label column.
  """
  path = Path(path)
  if not isinstance(label_column, (numbers.Integral, str)) or isinstance(label_column, bool):
    raise TypeError(f"label_column must be a column index or a header name; got "
                    f"{label_column!r}.")
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f, delimiter=delimiter)
    rows = [(reader.line_num, [c.strip() for c in row]) for row in reader
            if any(c.strip() for c in row)]
  if not rows:
    raise ValueError(f"{path} has no rows.")
  first_line, first = rows[0]
  ncols = len(first)
  if ncols < 2:
    raise ValueError(f"{path}, line {first_line}: needs at least one feature column and a label "
                     f"column; got {ncols} column (delimiter {delimiter!r}).")
  if isinstance(label_column, str):
    if header is False:
      raise ValueError(f"label_column={label_column!r} is a name, so {path} needs a header row; "
                       f"got header=False.")
    header = True
  else:
    if not -ncols <= label_column < ncols:
      raise ValueError(f"label_column={label_column} is out of range for {path}, which has "
                       f"{ncols} columns.")
    label_idx = int(label_column) % ncols
    if header is None:
      header = not all(_is_number(c) for j, c in enumerate(first) if j != label_idx)
  names = first if header else [str(j) for j in range(ncols)]
  if isinstance(label_column, str):
    if label_column not in names:
      raise ValueError(f"label_column={label_column!r} is not a column of {path}; its header is "
                       f"{names}.")
    label_idx = names.index(label_column)
  body = rows[1:] if header else rows
  if not body:
    raise ValueError(f"{path} has a header but no data rows.")

  features, labels = [], []
  for line, row in body:
    if len(row) != ncols:
      raise ValueError(f"{path}, line {line}: {len(row)} fields; expected {ncols} (as on line "
                       f"{first_line}).")
    values = []
    for j, text in enumerate(row):
      if j == label_idx:
        continue
      try:
        v = float(text)
      except ValueError:
        raise ValueError(f"{path}, line {line}, column {names[j]!r}: feature {text!r} is not a "
                         f"number.") from None
      if not math.isfinite(v):
        raise ValueError(f"{path}, line {line}, column {names[j]!r}: feature {text!r} is not "
                         f"finite.")
      values.append(v)
    features.append(values)
    labels.append(row[label_idx])
  x = _features(np.array(features, np.float64), f"{path}: features")

  if all(_is_number(t) for t in labels):
    numeric = np.array([float(t) for t in labels])
    if np.all((numeric >= 0) & (numeric == np.round(numeric))):
      y = _labels(numeric, f"{path}: column {names[label_idx]!r}")
      class_names = _id_class_names(y)
    else:
      values, y = np.unique(numeric, return_inverse=True)
      class_names = tuple(f"{v:g}" for v in values)
  else:
    values, y = np.unique(np.array(labels, dtype=str), return_inverse=True)
    class_names = tuple(str(v) for v in values)
  y = np.asarray(y, np.int32).reshape(-1)
  x_train, y_train, x_test, y_test = _split(x, y, test_fraction=test_fraction, seed=seed,
                                            where=str(path))
  return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 class_names=class_names, image_shape=(x.shape[1],), source=str(path))


USER_FILE_LOADERS: dict[str, Callable[..., Dataset]] = {".npz": load_npz, ".csv": load_csv}


def load_user_data(path: str | os.PathLike, **kwargs: Any) -> Dataset:
  """Loads your own data file, dispatching on its suffix: ``.npz`` or ``.csv``.

  Args:
    path: the file.
    **kwargs: keyword options of :func:`load_npz` or :func:`load_csv`.

  Returns:
    A :class:`Dataset`; features are kept as given, not rescaled.
  """
  suffix = Path(path).suffix.lower()
  if suffix not in USER_FILE_LOADERS:
    raise ValueError(f"Cannot tell how to read {path}: its suffix {suffix!r} is not one of "
                     f"{sorted(USER_FILE_LOADERS)}.")
  return USER_FILE_LOADERS[suffix](path, **kwargs)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "toy": load_toy,
}
"""The named data sets: name -> loader taking keyword-only options. Your files: load_user_data."""


def load(name: str, **kwargs: Any) -> Dataset:
  """Loads the named data set of :data:`DATASETS`, passing ``kwargs`` to its loader.

  Raises:
    ValueError: for an unknown name, listing the known ones.
  """
  if not isinstance(name, str) or name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}. For your "
                     f"own .npz or .csv file use load_user_data(path).")
  return DATASETS[name](**kwargs)
