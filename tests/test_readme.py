"""The README's promises: its two commands, its notebook example, and .ci/run."""

import pathlib
import re

import jax.numpy as jnp

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _commands():
  block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
  return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_the_two_commands():
  assert README.index("```bash") < README.index("\n## ")
  main, tests = _commands()
  assert "pip install ." in main and "python -m experiments.train" in main
  assert "pip install '.[test]'" in tests and "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command():
  ci = (ROOT / ".ci" / "run").read_text()
  assert "set -euo pipefail" in ci
  assert _commands()[1] in ci.splitlines()


def test_notebook_example_runs():
  code = re.search(r"## In a notebook\n\n```python\n(.*?)```", README, re.S).group(1)
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
  err = namespace["err"]
  assert "class ids in [0, 3); got 3" in err.get()
  assert jnp.isfinite(namespace["loss"])


def test_readme_lists_every_public_name():
  import softmax_jax as sj
  for name in sj.__all__:
    if name in ("info", "train", "data", "solve", "parallel", "calibration", "layers", "minimize",
                "mlp", "multilabel", "probit", "temperature"):
      assert f"`sj.{name}`" in README, name  # submodules: named, their functions listed
      continue
    assert f"`sj.{name}" in README, name
  for name in ("entropy", "cross_entropy", "kl_divergence", "surprisal"):
    assert f"`sj.info.{name}(" in README, name
