"""experiments/walkthrough.py runs from top to bottom (its cells assert what they show)."""

import pathlib
import re
import runpy

import numpy as np

PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "walkthrough.py"


def test_walkthrough_runs_and_shows_the_text(capsys):
  namespace = runpy.run_path(str(PATH), run_name="walkthrough")
  out = capsys.readouterr().out
  assert "W (4, 3), b (3,): 12 weights + 3 biases" in out
  assert "uniform over 3 classes: 1.0986 nats = 1.5850 bits" in out
  assert "one nat = 1.4427 bits" in out
  assert "before fit:" in out  # the unfitted encoder's error is shown
  assert namespace["W"].shape == (4, 3) and namespace["b"].shape == (3,)
  assert namespace["final_accuracy"] > 0.9
  np.testing.assert_allclose(namespace["autodiff"], namespace["closed"], rtol=1e-6, atol=1e-7)
  assert 0 < namespace["bits_per_label"] < np.log2(10)
  assert namespace["num_params"] == {"toy": 15, "digits": 650}


def test_walkthrough_is_a_percent_script_on_the_public_api():
  source = PATH.read_text(encoding="utf-8")
  cells = re.split(r"^# %%.*$", source, flags=re.M)
  headers = re.findall(r"^# %%.*$", source, flags=re.M)
  assert source.startswith("# %% [markdown]")
  assert len(headers) >= 16 and len(cells) == len(headers) + 1
  for header, body in zip(headers, cells[1:], strict=True):
    lines = [line for line in body.splitlines() if line.strip()]
    if header == "# %% [markdown]":  # markdown cells are comments only
      assert lines and all(line.startswith("#") for line in lines), body[:80]
    else:
      assert header == "# %%"
      assert any("assert" in line for line in lines) or "import" in body, body[:80]
  # Only the public API: `import softmax_jax as sj`, never a submodule or a private name.
  imports = re.findall(r"^(?:from|import) .*$", source, flags=re.M)
  assert [i for i in imports if "softmax_jax" in i] == ["import softmax_jax as sj"]
  assert not re.search(r"\bsj(\.\w+)*\._", source)
