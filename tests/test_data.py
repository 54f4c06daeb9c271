"""Tests for softmax_jax.data.

The download path (fetch, verify, cache, load) runs for real against a loopback HTTP server
that each test starts on 127.0.0.1; a guard fails any test that tries to reach another host.
"""

import gzip
import hashlib
import http.server
import inspect
import os
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np
import pytest

from softmax_jax import data

_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


# ------------------------------------------------------------------------------------------------
# Fixtures: tiny IDX files, a loopback server, and no way out to the network.


def _idx(array, *, ndim=None, payload=None):
  """The IDX bytes of a uint8 array; ``payload`` overrides the bytes after the header."""
  array = np.asarray(array, np.uint8)
  ndim = array.ndim if ndim is None else ndim
  header = bytes([0, 0, 0x08, ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
  return header + (array.tobytes() if payload is None else payload)


def _gz(raw):
  return gzip.compress(raw, mtime=0)


def _sha(raw):
  return hashlib.sha256(raw).hexdigest()


@pytest.fixture(scope="module")
def arrays():
  rng = np.random.default_rng(0)
  return {"x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
          "y_train": rng.integers(0, 10, 20, dtype=np.uint8),
          "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
          "y_test": rng.integers(0, 10, 10, dtype=np.uint8)}


@pytest.fixture(scope="module")
def files(arrays):
  """filename -> gzipped IDX bytes, as the real data sets publish them."""
  return dict(zip(_FILES, (_gz(_idx(arrays[k])) for k in ("x_train", "y_train", "x_test",
                                                            "y_test")), strict=True))


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path):
  """No cache outside tmp_path, no proxy, and any URL but loopback fails the test."""
  monkeypatch.delenv(data.CACHE_ENV_VAR, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setenv("no_proxy", "*")
  real_urlopen = urllib.request.urlopen

  def loopback_only(url, *args, **kwargs):
    host = urllib.parse.urlsplit(url).hostname
    assert host == "127.0.0.1", f"a test tried to reach the network: {url}"
    return real_urlopen(url, *args, **kwargs)

  monkeypatch.setattr(urllib.request, "urlopen", loopback_only)


class _Handler(http.server.BaseHTTPRequestHandler):
  """Serves ``server.routes``: path -> (body, mode); mode "half" sends half and hangs up."""

  def do_GET(self):
    self.server.requests.append(self.path)
    if self.path not in self.server.routes:
      self.send_error(404)
      return
    body, mode = self.server.routes[self.path]
    self.send_response(200)
    self.send_header("Content-Length", str(len(body)))  # the full length, even for "half"
    self.end_headers()
    self.wfile.write(body[:len(body) // 2] if mode == "half" else body)
    self.close_connection = True

  def log_message(self, *args):
    pass


class _Server:

  def __init__(self):
    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    self.httpd.routes, self.httpd.requests = {}, []
    self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                   daemon=True)
    self.thread.start()
    self.running = True

  @property
  def routes(self):
    return self.httpd.routes

  @property
  def requests(self):
    return self.httpd.requests

  def url(self, prefix):
    return f"http://127.0.0.1:{self.httpd.server_address[1]}/{prefix}"

  def serve(self, prefix, files, *, modes=None):
    for name, body in files.items():
      self.routes[f"/{prefix}{name}"] = (body, (modes or {}).get(name, "ok"))

  def stop(self):
    if self.running:
      self.httpd.shutdown()
      self.httpd.server_close()
      self.thread.join(timeout=5)
      self.running = False


@pytest.fixture
def server():
  s = _Server()
  yield s
  s.stop()


def _closed_port_url():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  return f"http://127.0.0.1:{port}/"


def _register(monkeypatch, dataset, files, mirrors, **overrides):
  """Points the registry entry of ``dataset`` at ``mirrors`` with the hashes of ``files``."""
  spec = data._IDX_SPECS[dataset]
  sources = tuple(
      data._Source(s.name, s.filename, overrides.get(s.filename, _sha(files[s.filename])),
                   len(files[s.filename])) for s in spec.sources)
  monkeypatch.setitem(data._IDX_SPECS, dataset, spec._replace(mirrors=tuple(mirrors),
                                                              sources=sources))


def _check_arrays(ds, arrays):
  assert ds.x_train.shape == (20, 784) and ds.x_test.shape == (10, 784)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.image_shape == (28, 28) and ds.num_classes == 10
  np.testing.assert_array_equal(ds.x_train, arrays["x_train"].reshape(20, -1) / np.float32(255))
  np.testing.assert_array_equal(ds.x_test, arrays["x_test"].reshape(10, -1) / np.float32(255))
  np.testing.assert_array_equal(ds.y_train, arrays["y_train"])
  np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
  assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1


# ------------------------------------------------------------------------------------------------
# Download -> verify -> cache -> load.


def test_first_load_downloads_and_caches_second_reads_the_cache(server, files, arrays,
                                                                monkeypatch, tmp_path):
  server.serve("fm/", files)
  _register(monkeypatch, "fashion_mnist", files, [server.url("fm/")])
  ds = data.load_fashion_mnist(cache_dir=tmp_path / "cache")
  _check_arrays(ds, arrays)
  assert ds.class_names[0] == "T-shirt/top" and ds.class_names[-1] == "Ankle boot"
  assert ds.source.startswith(server.url("fm/"))
  assert sorted(server.requests) == sorted(f"/fm/{f}" for f in _FILES)
  cache = tmp_path / "cache" / "fashion_mnist"
  assert sorted(os.listdir(cache)) == sorted(_FILES)  # no temporary files left behind
  for f in _FILES:
    assert _sha((cache / f).read_bytes()) == _sha(files[f])

  server.stop()
  again = data.load_fashion_mnist(cache_dir=tmp_path / "cache")
  _check_arrays(again, arrays)
  offline = data.load_fashion_mnist(cache_dir=tmp_path / "cache", download=False)
  np.testing.assert_array_equal(offline.y_test, ds.y_test)
  assert len(server.requests) == 4  # nothing was requested after the first load


def test_checksum_mismatch_raises_and_caches_nothing(server, files, monkeypatch, tmp_path):
  server.serve("fm/", files)
  wrong = "0" * 64
  _register(monkeypatch, "fashion_mnist", files, [server.url("fm/")],
            **{"train-images-idx3-ubyte.gz": wrong})
  with pytest.raises(data.ChecksumError) as e:
    data.load_fashion_mnist(cache_dir=tmp_path)
  msg = str(e.value)
  assert "train-images-idx3-ubyte.gz" in msg and server.url("fm/train-images") in msg
  assert wrong in msg and _sha(files["train-images-idx3-ubyte.gz"]) in msg
  assert os.listdir(tmp_path / "fashion_mnist") == []


def test_truncated_file_passes_its_checksum_and_fails_the_idx_check(server, files, arrays,
                                                                    monkeypatch, tmp_path):
  short = _gz(_idx(arrays["x_train"], payload=arrays["x_train"].tobytes()[:-100]))
  served = {**files, "train-images-idx3-ubyte.gz": short}
  server.serve("fm/", served)
  _register(monkeypatch, "fashion_mnist", served, [server.url("fm/")])
  with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: IDX payload is truncated.*"
                                       r"15,680 bytes .*got 15,580"):
    data.load_fashion_mnist(cache_dir=tmp_path)


def test_interrupted_download_leaves_no_partial_file(server, files, monkeypatch, tmp_path):
  server.serve("fm/", files, modes={"train-images-idx3-ubyte.gz": "half"})
  _register(monkeypatch, "fashion_mnist", files, [server.url("fm/")])
  size = len(files["train-images-idx3-ubyte.gz"])
  with pytest.raises(data.DownloadError, match=f"received {size // 2:,} of {size:,} bytes"):
    data.load_fashion_mnist(cache_dir=tmp_path)
  assert os.listdir(tmp_path / "fashion_mnist") == []


def test_a_download_interrupted_by_any_exception_deletes_its_temporary_file(monkeypatch,
                                                                           tmp_path):

  class Response:
    calls = 0

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

    def read(self, n):
      Response.calls += 1
      if Response.calls > 1:
        raise KeyboardInterrupt
      return b"\0" * 10

  monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response())
  source = data._Source("train_images", "f.gz", "0" * 64, 100)
  with pytest.raises(KeyboardInterrupt):
    data._fetch("http://127.0.0.1:1/f.gz", source, tmp_path / "f.gz")
  assert os.listdir(tmp_path) == []


def test_falls_back_to_the_next_mirror(server, files, arrays, monkeypatch, tmp_path):
  server.serve("good/", files)
  server.serve("bad/", {f: b"not the file" for f in _FILES})  # wrong bytes: checksum mismatch
  _register(monkeypatch, "mnist", files,
            [server.url("missing/"), server.url("bad/"), server.url("good/")])
  ds = data.load_mnist(cache_dir=tmp_path)
  _check_arrays(ds, arrays)
  assert ds.class_names == tuple("0123456789")
  assert ds.source.startswith(server.url("good/"))
  for f in _FILES:
    tried = [r for r in server.requests if r.endswith(f)]
    assert tried == [f"/missing/{f}", f"/bad/{f}", f"/good/{f}"]


def test_offline_error_says_which_files_go_where(files, monkeypatch, tmp_path):
  _register(monkeypatch, "mnist", files, [_closed_port_url()])
  with pytest.raises(data.DownloadError) as e:
    data.load_mnist(cache_dir=tmp_path)
  msg = str(e.value)
  assert "every mirror failed" in msg and "127.0.0.1" in msg
  assert f"To work offline, put these mnist files in {tmp_path / 'mnist'}:" in msg
  for f in _FILES:
    assert f in msg and _sha(files[f]) in msg
  assert "data_dir=" in msg and "SOFTMAX_JAX_DATA" in msg
  assert os.listdir(tmp_path / "mnist") == []


def test_download_false_never_downloads(server, files, monkeypatch, tmp_path):
  server.serve("fm/", files)
  _register(monkeypatch, "fashion_mnist", files, [server.url("fm/")])
  with pytest.raises(FileNotFoundError, match="not cached and download=False") as e:
    data.load_fashion_mnist(cache_dir=tmp_path, download=False)
  assert all(f in str(e.value) for f in _FILES)
  assert server.requests == []


def test_a_corrupted_cached_file_is_reported(server, files, monkeypatch, tmp_path):
  server.serve("fm/", files)
  _register(monkeypatch, "fashion_mnist", files, [server.url("fm/")])
  data.load_fashion_mnist(cache_dir=tmp_path)
  cached = tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz"
  cached.write_bytes(b"x" * len(files["t10k-labels-idx1-ubyte.gz"]))
  with pytest.raises(data.ChecksumError, match=f"Cached file {cached} differs.*Delete it"):
    data.load_fashion_mnist(cache_dir=tmp_path)


def test_cache_location_argument_then_env_var_then_home(server, files, monkeypatch, tmp_path):
  assert data.cache_directory("mnist") == tmp_path / "home" / ".cache" / "softmax_jax" / "mnist"
  monkeypatch.setenv("SOFTMAX_JAX_DATA", str(tmp_path / "env"))
  assert data.cache_directory("mnist") == tmp_path / "env" / "mnist"
  assert data.cache_directory("mnist", cache_dir=tmp_path / "arg") == tmp_path / "arg" / "mnist"

  server.serve("m/", files)
  _register(monkeypatch, "mnist", files, [server.url("m/")])
  data.load_mnist()
  assert sorted(os.listdir(tmp_path / "env" / "mnist")) == sorted(_FILES)


# ------------------------------------------------------------------------------------------------
# data_dir: the user's own copy of the files.


def _write(directory, files):
  directory.mkdir(exist_ok=True)
  for name, body in files.items():
    (directory / name).write_bytes(body)
  return directory


def test_data_dir_is_read_as_is_and_never_downloaded_into(files, arrays, monkeypatch, tmp_path):
  _register(monkeypatch, "fashion_mnist", files, [_closed_port_url()])
  d = _write(tmp_path / "mine", {**files, "t10k-images-idx3-ubyte.gz": b""})
  (d / "t10k-images-idx3-ubyte.gz").unlink()  # this one unpacked: also accepted
  (d / "t10k-images-idx3-ubyte").write_bytes(gzip.decompress(files["t10k-images-idx3-ubyte.gz"]))
  ds = data.load_fashion_mnist(data_dir=d)
  _check_arrays(ds, arrays)
  assert ds.source == str(d)

  (d / "train-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(FileNotFoundError, match=f"data_dir {d} lacks train-labels-idx1-ubyte.gz"):
    data.load_fashion_mnist(data_dir=d)
  with pytest.raises(FileNotFoundError, match="is not a directory"):
    data.load_fashion_mnist(data_dir=tmp_path / "nowhere")


@pytest.mark.parametrize("replace,match", [
    ({"train-labels-idx1-ubyte.gz": np.zeros(19, np.uint8)}, "has 19 labels but its images file "
                                                             "has 20 images"),
    ({"t10k-labels-idx1-ubyte.gz": np.array([3] * 9 + [10], np.uint8)},
     "labels must be < 10; got 10 at index 9"),
    ({"t10k-images-idx3-ubyte.gz": np.zeros((10, 27, 28), np.uint8)},
     r"images must be 28×28; got shape \(10, 27, 28\)"),
    ({"train-images-idx3-ubyte.gz": np.zeros(20, np.uint8)}, "gives 1 dimension"),
])
def test_loader_checks_the_files_agree(files, tmp_path, replace, match):
  d = _write(tmp_path, {**files, **{k: _gz(_idx(v)) for k, v in replace.items()}})
  with pytest.raises(ValueError, match=match) as e:
    data.load_mnist(data_dir=d)
  assert str(d / next(iter(replace))) in str(e.value)


def test_registry_lists_the_published_files():
  for name, spec in data._IDX_SPECS.items():
    assert data.DATASETS[name] in (data.load_fashion_mnist, data.load_mnist)
    assert tuple(s.filename for s in spec.sources) == _FILES
    assert [s.name for s in spec.sources] == ["train_images", "train_labels", "test_images",
                                              "test_labels"]
    for s in spec.sources:
      assert len(s.sha256) == 64 and int(s.sha256, 16) >= 0 and s.size > 0
    assert len(spec.class_names) == 10
  assert data._IDX_SPECS["fashion_mnist"].mirrors[0] == (
      "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")
  assert data._IDX_SPECS["mnist"].mirrors[:2] == (
      "https://ossci-datasets.s3.amazonaws.com/mnist/",
      "https://storage.googleapis.com/cvdf-datasets/mnist/")


# ------------------------------------------------------------------------------------------------
# read_idx.


def test_read_idx_reads_bytes_gzip_and_paths(arrays, tmp_path):
  raw = _idx(arrays["x_train"])
  (tmp_path / "a.gz").write_bytes(_gz(raw))
  for source in (raw, _gz(raw), tmp_path / "a.gz", str(tmp_path / "a.gz")):
    x = data.read_idx(source)
    assert x.dtype == np.uint8 and x.flags.writeable
    np.testing.assert_array_equal(x, arrays["x_train"])
  np.testing.assert_array_equal(data.read_idx(_idx(arrays["y_train"]), ndim=1), arrays["y_train"])


@pytest.mark.parametrize("raw,kwargs,match", [
    (b"\x01\x02\x08\x03" + bytes(12), {}, "not an IDX file: magic number 0x01020803"),
    (b"\x00\x00\x0d\x03" + bytes(12), {}, "data type code 0x0D"),
    (_idx(np.zeros((2, 3), np.uint8)), {}, r"0x00000802 gives 2 dimension\(s\); expected 1 or 3"),
    (_idx(np.zeros((2, 3, 3), np.uint8)), {"ndim": 1}, r"gives 3 dimension\(s\); expected 1 "
                                                       r"\(magic 0x00000801\)"),
    (b"\x00\x00\x08", {}, "3 bytes is too short"),
    (b"\x00\x00\x08\x03" + bytes(6), {}, "truncated IDX header: 3 dimension"),
    (_idx(np.zeros((2, 4, 4), np.uint8)) + b"\x00", {},
     r"has trailing bytes: dimensions \(2, 4, 4\) need 32 bytes after the 16-byte header; got 33"),
    (_idx(np.zeros(5, np.uint8), payload=bytes(3)), {}, "is truncated.*need 5 bytes.*got 3"),
])
def test_read_idx_rejects_malformed_files(raw, kwargs, match):
  with pytest.raises(ValueError, match=match) as e:
    data.read_idx(raw, name="f.idx", **kwargs)
  assert str(e.value).startswith("f.idx: ")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_read_idx_rejects_a_corrupt_gzip_stream(arrays, tmp_path, damage):
  gz = bytearray(_gz(_idx(arrays["x_test"])))
  if damage == "flip":
    gz[len(gz) // 2:len(gz) // 2 + 16] = bytes(b ^ 0xFF for b in gz[len(gz) // 2:len(gz) // 2 + 16])
  else:
    gz = gz[:len(gz) // 2]
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(bytes(gz))
  with pytest.raises(ValueError, match="corrupt gzip stream") as e:
    data.read_idx(path)
  assert str(path) in str(e.value)


# ------------------------------------------------------------------------------------------------
# The toy data set.


def test_toy_shapes_and_determinism():
  ds = data.load_toy(num_train=31, num_test=7, seed=3)
  assert ds.x_train.shape == (31, 4) and ds.x_test.shape == (7, 4)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.class_names == ("cat", "chicken", "dog") and ds.image_shape == (2, 2)
  assert ds.num_features == 4 and ds.num_classes == 3
  assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1
  np.testing.assert_array_equal(np.bincount(ds.y_train), [11, 10, 10])  # balanced
  again = data.load_toy(num_train=31, num_test=7, seed=3)
  for a, b in zip(ds[:4], again[:4], strict=True):
    np.testing.assert_array_equal(a, b)
  other = data.load_toy(num_train=31, num_test=7, seed=4)
  assert not np.array_equal(ds.x_train, other.x_train)
  # The train set does not depend on the size of the test set.
  np.testing.assert_array_equal(data.load_toy(num_train=31, num_test=50, seed=3).x_train,
                                ds.x_train)


def test_toy_classes_have_distinct_mean_images():
  clean = data.load_toy(num_train=9, num_test=3, noise=0.0)
  means = np.stack([clean.x_train[clean.y_train == c][0] for c in range(3)])
  assert len({tuple(m) for m in means}) == 3
  for c in range(3):  # without noise every image is its class's mean
    np.testing.assert_array_equal(clean.x_train[clean.y_train == c], means[c][None].repeat(3, 0))
  noisy = data.load_toy(num_train=600, num_test=3, seed=1)
  for c in range(3):
    np.testing.assert_allclose(noisy.x_train[noisy.y_train == c].mean(0), means[c], atol=0.05)
  # Nearest class mean classifies the noisy images well: the classes are learnable.
  nearest = np.argmin(((noisy.x_train[:, None] - means[None]) ** 2).sum(-1), axis=1)
  assert np.mean(nearest == noisy.y_train) > 0.95


@pytest.mark.parametrize("kwargs,match", [
    ({"num_train": 0}, "num_train must be a positive int; got 0"),
    ({"num_test": 2.5}, "num_test must be a positive int; got 2.5"),
    ({"noise": -0.1}, "noise must be a finite number >= 0; got -0.1"),
    ({"seed": -1}, "seed must be an int >= 0; got -1"),
])
def test_toy_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.load_toy(**kwargs)


# ------------------------------------------------------------------------------------------------
# The user's files.


def test_npz_with_x_and_y_is_split_stratified_and_kept_unscaled(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.uniform(-50, 100, (40, 3))
  y = np.repeat([0, 1, 2, 3], 10)
  np.savez(tmp_path / "d.npz", X=x, y=y)
  ds = data.load_npz(tmp_path / "d.npz", test_fraction=0.3, seed=1)
  assert ds.x_train.shape == (28, 3) and ds.x_test.shape == (12, 3)
  np.testing.assert_array_equal(np.bincount(ds.y_test), [3, 3, 3, 3])
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.x_train.min() < 0 and ds.x_train.max() > 1  # not rescaled
  np.testing.assert_allclose(np.sort(np.concatenate([ds.x_train, ds.x_test]), 0),
                             np.sort(x.astype(np.float32), 0))
  assert ds.class_names == ("0", "1", "2", "3") and ds.image_shape == (3,)
  assert ds.source == str(tmp_path / "d.npz")

  np.savez(tmp_path / "lower.npz", x=x, y=y.astype(float),
           class_names=np.array(["a", "b", "c", "d"]))
  lower = data.load_npz(tmp_path / "lower.npz", test_fraction=0.3, seed=1)
  np.testing.assert_array_equal(lower.x_test, ds.x_test)
  assert lower.class_names == ("a", "b", "c", "d")


def test_npz_pre_split_is_used_as_is(tmp_path):
  x_train, x_test = np.eye(4, dtype=np.float32), np.ones((2, 4), np.float32)
  np.savez(tmp_path / "s.npz", x_train=x_train, y_train=[0, 1, 2, 1], x_test=x_test,
           y_test=[2, 0])
  ds = data.load_npz(tmp_path / "s.npz")
  np.testing.assert_array_equal(ds.x_train, x_train)
  np.testing.assert_array_equal(ds.y_test, [2, 0])
  assert ds.num_classes == 3


@pytest.mark.parametrize("arrays_,error,match", [
    ({"X": np.ones((4, 2))}, ValueError, r"must hold X \(or x\) and y.*found \['X'\]"),
    ({"X": np.ones((4, 2)), "x": np.ones((4, 2)), "y": np.zeros(4)}, ValueError,
     "must hold X"),
    ({"x_train": np.ones((4, 2)), "y_train": np.zeros(4)}, ValueError,
     r"missing \['x_test', 'y_test'\]"),
    ({"X": np.ones(4), "y": np.zeros(4)}, ValueError,
     r"X must be a non-empty 2-D array \(examples × features\); got shape \(4,\)"),
    ({"X": np.array([[1.0, np.nan], [0, 0]]), "y": [0, 1]}, ValueError,
     r"X \(shape \(2, 2\)\) must be finite in float32; got nan at row 0, column 1"),
    ({"X": np.array([[1e300], [0]]), "y": [0, 1]}, ValueError, "must be finite in float32"),
    ({"X": np.array([["a"], ["b"]]), "y": [0, 1]}, TypeError, "X must be numbers; got dtype <U1"),
    ({"X": np.ones((3, 2)), "y": [0, 1.5, 1]}, ValueError,
     r"y \(shape \(3,\)\) must be whole-number class ids; got 1.5 at index 1"),
    ({"X": np.ones((3, 2)), "y": [0, -1, 1]}, ValueError, r"class ids in \[0, 2\*\*31\); got -1"),
    ({"X": np.ones((3, 2)), "y": ["a", "b", "a"]}, TypeError, "y must be integer class ids"),
    ({"X": np.ones((3, 2)), "y": np.zeros((3, 1))}, ValueError, r"got shape \(3, 1\)"),
    ({"X": np.ones((3, 2)), "y": [0, 1]}, ValueError,
     r"X has 3 rows \(shape \(3, 2\)\) but y has 2 labels"),
    ({"x_train": np.ones((2, 2)), "y_train": [0, 1], "x_test": np.ones((2, 3)),
      "y_test": [0, 1]}, ValueError, "x_train has 2 features"),
    ({"X": np.ones((4, 2)), "y": [0, 1, 2, 3]}, ValueError,
     "test_fraction=0.2 splits 4 examples into 4 train and 0 test; both must be non-empty"),
    ({"X": np.ones((20, 2)), "y": np.arange(20) % 4, "class_names": np.array(["a", "b"])},
     ValueError, "class_names must be a 1-D string array with at least 4 entries"),
])
def test_npz_rejects_bad_contents(tmp_path, arrays_, error, match):
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays_)
  with pytest.raises(error, match=match) as e:
    data.load_npz(path)
  assert str(path) in str(e.value)


def test_npz_rejects_unreadable_files(tmp_path):
  np.savez(tmp_path / "obj.npz", X=np.array([[1], [2]], dtype=object), y=[0, 1])
  with pytest.raises(ValueError, match="not a readable .npz archive.*pickle"):
    data.load_npz(tmp_path / "obj.npz")
  (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
  with pytest.raises(ValueError, match=f"{tmp_path / 'junk.npz'} is not a readable"):
    data.load_npz(tmp_path / "junk.npz")
  np.save(tmp_path / "single.npy", np.ones(3))
  with pytest.raises(ValueError, match=r"single array of shape \(3,\)"):
    data.load_npz(tmp_path / "single.npy")
  with pytest.raises(FileNotFoundError, match="No such .npz file"):
    data.load_npz(tmp_path / "absent.npz")


def _csv(tmp_path, text, name="d.csv"):
  path = tmp_path / name
  path.write_text(text)
  return path


def test_csv_with_header_and_string_labels(tmp_path):
  rows = [f"{i},{i * 10},{['dog', 'cat', 'chicken'][i % 3]}" for i in range(30)]
  path = _csv(tmp_path, "width,height,animal\n" + "\n".join(rows) + "\n\n")
  ds = data.load_csv(path, test_fraction=0.2)
  assert ds.class_names == ("cat", "chicken", "dog")  # sorted unique labels
  assert ds.x_train.shape == (24, 2) and ds.x_test.shape == (6, 2) and ds.image_shape == (2,)
  x = np.concatenate([ds.x_train, ds.x_test])
  y = np.concatenate([ds.y_train, ds.y_test])
  names = np.array(ds.class_names)[y]
  np.testing.assert_array_equal(names, np.array(["dog", "cat", "chicken"])[x[:, 0].astype(int) % 3])
  np.testing.assert_array_equal(x[:, 1], 10 * x[:, 0])  # features as given, not rescaled
  by_name = data.load_csv(path, label_column="animal", test_fraction=0.2)
  np.testing.assert_array_equal(by_name.y_test, ds.y_test)


def test_csv_without_header_label_first_and_numeric_labels(tmp_path):
  path = _csv(tmp_path, "".join(f"{i % 2},{i / 10},{1 - i / 10}\n" for i in range(10)))
  ds = data.load_csv(path, label_column=0, test_fraction=0.2)
  assert ds.class_names == ("0", "1") and ds.num_features == 2
  assert len(ds.y_train) + len(ds.y_test) == 10  # the first row is data, not a header
  np.testing.assert_allclose(ds.x_train.sum(1), 1, rtol=1e-6)
  signed = _csv(tmp_path, "".join(f"{i},{2 * (i % 2) - 1}\n" for i in range(10)), "signed.csv")
  ds = data.load_csv(signed)
  assert ds.class_names == ("-1", "1")
  np.testing.assert_array_equal(ds.x_train[:, 0] % 2, ds.y_train)  # -1 -> id 0, 1 -> id 1


@pytest.mark.parametrize("text,kwargs,match", [
    ("", {}, "has no rows"),
    ("a,b,label\n", {}, "has a header but no data rows"),
    ("1,2,0\n3,x,1\n", {}, r"line 2, column '1': feature 'x' is not a number"),
    ("a,b,label\n1,2,0\n3,nan,1\n", {}, "line 3, column 'b': feature 'nan' is not finite"),
    ("1,2,0\n3,4\n", {}, r"line 2: 2 fields; expected 3 \(as on line 1\)"),
    ("a,b,label\n1,2,0\n", {"label_column": "class"}, r"'class' is not a column.*\['a', 'b', 'label'\]"),
    ("1,2,0\n", {"label_column": 5}, "label_column=5 is out of range.*3 columns"),
    ("1,2,0\n", {"label_column": "label", "header": False}, "needs a header row"),
    ("1\n2\n", {}, "needs at least one feature column"),
])
def test_csv_rejects_bad_files(tmp_path, text, kwargs, match):
  path = _csv(tmp_path, text)
  with pytest.raises(ValueError, match=match) as e:
    data.load_csv(path, **kwargs)
  assert str(path) in str(e.value)


def test_load_user_data_dispatches_on_the_suffix(tmp_path):
  np.savez(tmp_path / "d.npz", X=np.ones((10, 2)), y=np.arange(10) % 2)
  assert data.load_user_data(tmp_path / "d.npz").num_features == 2
  path = _csv(tmp_path, "".join(f"{i},{i % 2}\n" for i in range(10)), "D.CSV")
  assert data.load_user_data(path, test_fraction=0.4).y_test.shape == (4,)
  with pytest.raises(ValueError, match=r"suffix '.txt' is not one of \['.csv', '.npz'\]"):
    data.load_user_data(tmp_path / "d.txt")


# ------------------------------------------------------------------------------------------------
# The registry.


def test_registry_and_load():
  assert sorted(data.DATASETS) == ["digits", "fashion_mnist", "mnist", "toy"]
  for loader in data.DATASETS.values():  # keyword-only options, callable with none
    params = inspect.signature(loader).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty
               for p in params)
  toy = data.load("toy", num_train=5, num_test=5, seed=2)
  np.testing.assert_array_equal(toy.x_train, data.load_toy(num_train=5, num_test=5,
                                                           seed=2).x_train)
  with pytest.raises(ValueError, match="Unknown dataset 'cifar10'; known: digits, fashion_mnist, "
                                       "mnist, toy"):
    data.load("cifar10")


def test_digits_split():
  ds = data.load_digits()
  assert ds.num_features == 64 and ds.num_classes == 10 and ds.image_shape == (8, 8)
  assert len(ds.y_train) + len(ds.y_test) == 1797
  assert 0.19 < len(ds.y_test) / 1797 < 0.21
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1
  # Stratified: every class keeps its share of the test split (within one example).
  counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
  np.testing.assert_allclose(np.bincount(ds.y_test), 0.2 * counts, atol=1)
  again = data.load_digits()
  np.testing.assert_array_equal(ds.y_test, again.y_test)
  with pytest.raises(ValueError, match="test_fraction"):
    data.stratified_split(ds.y_train, test_fraction=1.5, seed=0)
