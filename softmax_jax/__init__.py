"""softmax_jax: softmax regression (D2L §4.1) in JAX, with exact numerics.

The public API, one name per line. Where things live:
  softmax.py   logsumexp, softmax, log_softmax, softmax_hessian
  losses.py    cross_entropy, cross_entropy_grad, sigmoid_cross_entropy
  linear_ce.py linear_cross_entropy: xW + b and its cross-entropy, never forming the logits
  info.py      entropy, surprisal, cross-entropy and KL between distributions (softmax_jax.info)
  model.py     Params, init_params, logits, predict, predict_proba
  encoding.py  one_hot, CategoryEncoder
  train.py     TrainState, train_step, train_epoch (lax.scan), evaluate, fit
  run.py       a training run in a workdir: metrics, curves, checkpoints, resume
  checkpoint.py, plots.py   atomic files and checkpoints; figures
  parallel.py  data parallel (Mesh), class parallel (shard_map), multi-process
  solve.py     the exact L2-regularised optimum: Newton or L-BFGS in float64
  data.py      digits (the embedded default), fashion_mnist, mnist, toy, user files
For the research experiments (experiments/, EXPERIMENTS.md):
  temperature.py  P^α as a change of temperature; fit_temperature (temperature scaling)
  calibration.py  expected calibration error, reliability-diagram bins
  probit.py    the probit alternative: stable log Φ, multinomial probit by quadrature
  multilabel.py   digit tags, the label powerset, F1 / Hamming / subset accuracy
  layers.py    compressed output layers: dense, low-rank, PHM, Fastfood (fwht)
  mlp.py       a one-hidden-layer perceptron (the distillation teacher)
  minimize.py  a generic optax lax.scan loop for any loss
"""

from softmax_jax import calibration
from softmax_jax import data
from softmax_jax import info
from softmax_jax import layers
from softmax_jax import minimize
from softmax_jax import mlp
from softmax_jax import multilabel
from softmax_jax import parallel
from softmax_jax import probit
from softmax_jax import solve
from softmax_jax import temperature
from softmax_jax import train
from softmax_jax._validation import checked
from softmax_jax.encoding import CategoryEncoder
from softmax_jax.encoding import one_hot
from softmax_jax.linear_ce import linear_cross_entropy
from softmax_jax.losses import cross_entropy
from softmax_jax.losses import cross_entropy_grad
from softmax_jax.losses import sigmoid_cross_entropy
from softmax_jax.model import Params
from softmax_jax.model import init_params
from softmax_jax.model import logits
from softmax_jax.model import predict
from softmax_jax.model import predict_proba
from softmax_jax.softmax import log_softmax
from softmax_jax.softmax import logsumexp
from softmax_jax.softmax import softmax
from softmax_jax.softmax import softmax_hessian

__version__ = "0.1.0"

__all__ = (
    "CategoryEncoder",
    "Params",
    "calibration",
    "checked",
    "cross_entropy",
    "cross_entropy_grad",
    "data",
    "info",
    "init_params",
    "layers",
    "linear_cross_entropy",
    "log_softmax",
    "logits",
    "logsumexp",
    "minimize",
    "mlp",
    "multilabel",
    "one_hot",
    "parallel",
    "predict",
    "predict_proba",
    "probit",
    "sigmoid_cross_entropy",
    "softmax",
    "softmax_hessian",
    "solve",
    "temperature",
    "train",
)
