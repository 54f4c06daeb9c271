"""Test-session settings: strict broadcasting, deterministic hypothesis, an x64 switch."""

import hypothesis
import jax
import pytest
from absl.testing import flagsaver

# Silent rank-promoting broadcasts are bugs: make them fail (as nanodo and equinox do).
jax.config.update("jax_numpy_rank_promotion", "raise")
# The library multiplies at full float32 precision on every backend (softmax_jax/_precision.py);
# the tests' own reference products (x @ W in a test) must too, or on a GPU they would be TF32.
jax.config.update("jax_default_matmul_precision", "highest")

hypothesis.settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, print_blob=True)
hypothesis.settings.load_profile("ci")


def enable_x64():
  """Context manager turning on float64 for a block (jax.enable_x64 or its older home)."""
  if hasattr(jax, "enable_x64") and callable(jax.enable_x64):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64 as old  # jax < 0.8
  return old()


@pytest.fixture
def x64():
  with enable_x64():
    yield


@pytest.fixture(autouse=True)
def _no_leaked_x64():
  yield
  assert not jax.config.jax_enable_x64, "a test left jax_enable_x64 on"




def run_main(module, capsys, **flag_values) -> str:
  """Runs an absl script's ``main`` with ``flag_values`` set (and restored after); its stdout."""
  with flagsaver.flagsaver(**flag_values):
    module.FLAGS.mark_as_parsed()
    module.main([module.__name__])
  return capsys.readouterr().out
