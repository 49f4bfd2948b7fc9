"""The task suite of the suggestion benchmark: data, models, optimizers.

Every task is scikit-learn bundled data (no download) or a synthetic least
squares problem, features standardized with the training split's statistics,
scored on a held-out split: accuracy (classification) or mean squared error
(regression). Models are Flax NNX modules, so the CNN's BatchNorm statistics
and dropout go through :mod:`optax_clr.nnx`. A batch is a vector of row
indices into the training split, so K models with K data orders cost K index
arrays, not K copies of the data.
"""

from collections.abc import Callable, Sequence
import dataclasses
import functools
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets as sk_datasets
from sklearn import model_selection

import optax_clr.nnx
from benchmarks import _suggest_lm as lm

DEV, HELD_OUT = 'dev', 'held-out'
TEST_FRACTION = 0.3
# find_lr's validation split: this fraction of the training rows.
VALIDATION_FRACTION = 0.2
# digits_noisy: this fraction of the training labels drawn at random.
LABEL_NOISE = 0.3


@dataclasses.dataclass(frozen=True)
class Data:
  """A standardized train/test split; ``classes`` is 0 for regression."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  classes: int
  optimal_lr: float | None = None  # known in closed form (least squares)


@dataclasses.dataclass(frozen=True)
class Task:
  """One row of the suite.

  Attributes:
    name: a short unique name.
    half: ``"dev"`` (used to choose the rules) or ``"held-out"`` (reported,
      never used to choose).
    data: ``digits``, ``digits_noisy`` (30 % of the training labels drawn
      at random), ``wine``, ``breast_cancer``, ``iris``, ``diabetes``,
      ``lsq`` (synthetic least squares) or ``text`` (bytes of Python source).
    model: ``mlp``, ``cnn`` (BatchNorm + dropout), ``deepcnn`` (four
      convolutions), ``linear`` or ``lm`` (a byte-level transformer).
    optimizer: ``sgd``, ``momentum`` (SGD, 0.9), ``adam``, ``adamw`` or
      ``adamw_lm`` (AdamW, decay 0.1 on matrices only, gradients clipped
      to norm 1).
    batch_size: rows per step, or None for the whole training split.
    num_steps: the training budget (updates).
    grid: ``(low, high)``: the log10 range of the fixed-rate grid.
    hidden: hidden widths of the MLP.
    warmup_steps: a linear warmup from 0 to the rate over these steps in
      front of every schedule trained (the rate is the peak).
  """

  name: str
  half: str
  data: str
  model: str
  optimizer: str
  batch_size: int | None
  num_steps: int
  grid: tuple[float, float]
  hidden: tuple[int, ...] = (64,)
  warmup_steps: int = 0


TASKS = (
    Task('digits-mlp-adam-b32', DEV, 'digits', 'mlp', 'adam', 32, 300,
         (-5.0, 0.0)),
    Task('digits-cnn-momentum-b32', DEV, 'digits', 'cnn', 'momentum', 32, 300,
         (-4.0, 1.0)),
    Task('breast_cancer-mlp-sgd-b32', DEV, 'breast_cancer', 'mlp', 'sgd', 32,
         200, (-3.0, 2.0)),
    # 60 steps (6 epochs): longer, its held-out MSE measures overfitting
    # (two regimes, the grid-best at lr = 1 after 300 steps), not the rate.
    Task('diabetes-mlp-adamw-b32', DEV, 'diabetes', 'mlp', 'adamw', 32, 60,
         (-4.5, 1.0), (32,)),
    Task('lsq-linear-sgd-full', DEV, 'lsq', 'linear', 'sgd', None, 100,
         (-3.0, 1.0)),
    Task('digits-deepmlp-adamw-b128', HELD_OUT, 'digits', 'mlp', 'adamw', 128,
         200, (-5.0, 0.0), (128, 128, 128)),
    Task('digits-cnn-adam-b128', HELD_OUT, 'digits', 'cnn', 'adam', 128, 200,
         (-5.0, 0.0)),
    Task('wine-mlp-momentum-b16', HELD_OUT, 'wine', 'mlp', 'momentum', 16, 150,
         (-4.0, 1.0), (32,)),
    Task('iris-mlp-adam-b16', HELD_OUT, 'iris', 'mlp', 'adam', 16, 150,
         (-5.0, 0.0), (32,)),
    Task('diabetes-linear-sgd-b64', HELD_OUT, 'diabetes', 'linear', 'sgd', 64,
         200, (-4.0, 1.0)),
    Task('lsq-linear-momentum-b32', HELD_OUT, 'lsq', 'linear', 'momentum', 32,
         300, (-4.0, 1.0)),
    Task('text-lm-adamw-b16', HELD_OUT, 'text', 'lm', 'adamw_lm', 16, 300,
         (-4.5, 0.5), warmup_steps=30),
    Task('digits_noisy-mlp-adam-b32', HELD_OUT, 'digits_noisy', 'mlp', 'adam',
         32, 300, (-5.0, 0.0)),
    Task('digits-mlp-sgd-b512', HELD_OUT, 'digits', 'mlp', 'sgd', 512, 150,
         (-3.0, 2.0)),
    Task('digits-deepcnn-momentum-b64', HELD_OUT, 'digits', 'deepcnn',
         'momentum', 64, 200, (-4.0, 1.0)),
)

QUICK_TASKS = ('digits-mlp-adam-b32', 'lsq-linear-sgd-full')


# --- data -------------------------------------------------------------------

LSQ_DIM, LSQ_TRAIN, LSQ_TEST, LSQ_NOISE = 20, 400, 2000, 0.5
LSQ_EIGENVALUES = np.geomspace(0.01, 1.0, LSQ_DIM)  # population covariance


def _standardize(train, test):
  mean, std = train.mean(0), train.std(0)
  std = np.where(std > 0, std, 1.0)
  return (train - mean) / std, (test - mean) / std


def lsq_optimal_lr(x_train, y_train, w0, num_steps):
  r"""The fixed rate of full-batch GD that minimizes the population risk.

  For :math:`\ell(w) = \text{mean}((Xw - y)^2)` the Hessian is
  :math:`H = 2 X^\top X / n`, gradient descent from :math:`w_0` gives
  :math:`w_T = \hat w + (I - \eta H)^T (w_0 - \hat w)` with :math:`\hat w`
  the least-squares solution, and the population excess risk is
  :math:`(w_T - w^*)^\top \Sigma (w_T - w^*)`: minimized over a fine grid
  of :math:`\eta`, averaged over the initializations ``w0`` (rows).
  """
  n = x_train.shape[0]
  hessian = 2.0 * x_train.T @ x_train / n
  w_hat = np.linalg.lstsq(x_train, y_train, rcond=None)[0]
  lam, vecs = np.linalg.eigh(hessian)
  etas = np.geomspace(1e-3, 2.0 / lam.max(), 4000)
  w_star = _lsq_w_star()
  risks = np.zeros_like(etas)
  for w in np.atleast_2d(w0):
    start = vecs.T @ (w - w_hat)
    factor = (1.0 - etas[:, None] * lam[None, :]) ** num_steps
    w_t = w_hat[None, :] + (factor * start[None, :]) @ vecs.T
    diff = w_t - w_star[None, :]
    risks += np.einsum('ki,i,ki->k', diff, LSQ_EIGENVALUES, diff)
  return float(etas[int(np.argmin(risks))])


def _lsq_w_star():
  return np.random.default_rng(1).normal(size=LSQ_DIM)


@functools.lru_cache(maxsize=None)
def load(name: str) -> Data:
  """A standardized split of ``name`` (see :class:`Task`)."""
  if name == 'lsq':
    rng = np.random.default_rng(0)
    scale = np.sqrt(LSQ_EIGENVALUES)
    w_star = _lsq_w_star()
    def draw(n):
      x = rng.normal(size=(n, LSQ_DIM)) * scale
      return x, x @ w_star + LSQ_NOISE * rng.normal(size=n)
    x_train, y_train = draw(LSQ_TRAIN)
    x_test, y_test = draw(LSQ_TEST)
    # Not standardized: the spectrum is the point. Targets kept raw too.
    return Data(x_train.astype(np.float32), y_train.astype(np.float32),
                x_test.astype(np.float32), y_test.astype(np.float32), 0)
  if name == 'text':  # no features or labels: rows are windows of bytes
    train, test = lm.load()
    return Data(train, np.zeros(len(train), np.float32), test,
                np.zeros(len(test), np.float32), 0)
  if name == 'digits_noisy':
    clean = load('digits')
    rng = np.random.default_rng(0)
    y = clean.y_train.copy()
    flip = rng.random(y.size) < LABEL_NOISE
    y[flip] = rng.integers(0, clean.classes, int(flip.sum()))
    return dataclasses.replace(clean, y_train=y)
  loaders = {
      'digits': sk_datasets.load_digits,
      'wine': sk_datasets.load_wine,
      'breast_cancer': sk_datasets.load_breast_cancer,
      'iris': sk_datasets.load_iris,
      'diabetes': sk_datasets.load_diabetes,
  }
  x, y = loaders[name](return_X_y=True)
  classes = 0 if name == 'diabetes' else int(y.max()) + 1
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
      x, y, test_size=TEST_FRACTION, random_state=0,
      stratify=y if classes else None)
  x_train, x_test = _standardize(x_train, x_test)
  if classes:
    y_train, y_test = y_train.astype(np.int32), y_test.astype(np.int32)
  else:
    mean, std = y_train.mean(), y_train.std()
    y_train = ((y_train - mean) / std).astype(np.float32)
    y_test = ((y_test - mean) / std).astype(np.float32)
  return Data(x_train.astype(np.float32), y_train, x_test.astype(np.float32),
              y_test, classes)


# --- models -----------------------------------------------------------------


class MLP(nnx.Module):
  """ReLU layers, then a linear head."""

  def __init__(self, sizes, outputs, *, rngs):
    self.layers = nnx.List(
        [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
    self.head = nnx.Linear(sizes[-1], outputs, rngs=rngs)

  def __call__(self, x):
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return self.head(x)


class Conv3x3(nnx.Module):
  """A 3x3 'SAME' convolution as one matmul over the nine shifted images.

  Equal to ``nnx.Conv(..., (3, 3))``; written as a matmul because a
  ``jax.vmap`` over K models' kernels turns ``lax.conv`` into a grouped
  convolution, which XLA:CPU runs far slower than a batched matmul.
  """

  def __init__(self, features_in, features_out, *, rngs):
    init = nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(init(rngs.params(), (9 * features_in,
                                                 features_out)))
    self.bias = nnx.Param(jnp.zeros((features_out,)))

  def __call__(self, x):
    height, width = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([
        padded[:, i:i + height, j:j + width, :]
        for i in range(3) for j in range(3)], axis=-1)
    return patches @ self.kernel[...] + self.bias[...]


class CNN(nnx.Module):
  """The example CNN's shape, smaller, with BatchNorm and dropout.

  Two 3x3 convolutions each followed by BatchNorm and ReLU, average pooling
  to a 4x4 grid, dropout, a dense hidden layer and the head, on 8x8 images.
  """

  def __init__(self, classes, *, features=(8, 16), hidden=32,
               dropout=0.2, rngs):
    self.conv1 = Conv3x3(1, features[0], rngs=rngs)
    self.bn1 = nnx.BatchNorm(features[0], momentum=0.9, rngs=rngs)
    self.conv2 = Conv3x3(features[0], features[1], rngs=rngs)
    self.bn2 = nnx.BatchNorm(features[1], momentum=0.9, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.dense = nnx.Linear(features[1] * 16, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, classes, rngs=rngs)

  def __call__(self, x):
    x = x.reshape((x.shape[0], 8, 8, 1))
    x = nnx.relu(self.bn1(self.conv1(x)))
    x = nnx.relu(self.bn2(self.conv2(x)))
    x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = self.dropout(x.reshape((x.shape[0], -1)))
    return self.head(nnx.relu(self.dense(x)))


class DeepCNN(nnx.Module):
  """Four 3x3 convolutions with BatchNorm: two at 8x8, pooling, two at 4x4."""

  def __init__(self, classes, *, features=(16, 16, 32, 32), hidden=64,
               dropout=0.2, rngs):
    sizes = (1, *features)
    self.convs = nnx.List([Conv3x3(a, b, rngs=rngs)
                           for a, b in zip(sizes, sizes[1:])])
    self.norms = nnx.List([nnx.BatchNorm(b, momentum=0.9, rngs=rngs)
                           for b in features])
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.dense = nnx.Linear(features[-1] * 16, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, classes, rngs=rngs)

  def __call__(self, x):
    x = x.reshape((x.shape[0], 8, 8, 1))
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = nnx.relu(norm(conv(x)))
      if i == 1:
        x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = self.dropout(x.reshape((x.shape[0], -1)))
    return self.head(nnx.relu(self.dense(x)))


def make_model(task: Task, seed: int) -> nnx.Module:
  data = load(task.data)
  rngs = nnx.Rngs(params=seed, dropout=seed + 1000)
  outputs = data.classes or 1
  if task.model == 'lm':
    return lm.TransformerLM(rngs=rngs)
  if task.model == 'deepcnn':
    return DeepCNN(outputs, rngs=rngs)
  if task.model == 'cnn':
    return CNN(outputs, rngs=rngs)
  if task.model == 'linear':
    return nnx.Linear(data.x_train.shape[1], 1,
                      use_bias=task.data != 'lsq', rngs=rngs)
  return MLP((data.x_train.shape[1], *task.hidden), outputs, rngs=rngs)


def optimizer(task: Task) -> Callable[[Any], optax.GradientTransformation]:
  """``make(lr) -> GradientTransformation`` (lr a number or a schedule)."""
  return {
      'sgd': optax.sgd,
      'momentum': functools.partial(optax.sgd, momentum=0.9),
      'adam': optax.adam,
      'adamw': functools.partial(optax.adamw, weight_decay=1e-2),
      'adamw_lm': _adamw_lm,
  }[task.optimizer]


def _adamw_lm(learning_rate):
  """AdamW as transformers are trained: decay on matrices, clipping."""
  matrices = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.adamw(learning_rate, b2=0.99, weight_decay=0.1, mask=matrices))


def metric(task: Task) -> str:
  """``accuracy`` (higher is better), ``mse`` or ``bpb`` (lower)."""
  if task.model == 'lm':
    return 'bpb'
  return 'accuracy' if load(task.data).classes else 'mse'


def with_warmup(task: Task, schedule: Callable[[Any], Any], peak) -> Any:
  """``schedule`` behind the task's linear warmup from 0 to ``peak``."""
  if not task.warmup_steps:
    return schedule
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, task.warmup_steps), schedule],
      [task.warmup_steps])


# --- losses, batches, evaluation ---------------------------------------------


def loss_and_eval(task: Task):
  """``(loss_fn(model, idx), eval_fn(model) -> {"score", "loss"})``.

  ``score`` is higher-is-better on the test split: accuracy in percent, or
  minus the mean squared error.
  """
  data = load(task.data)
  x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

  if task.model == 'lm':  # rows are windows; the targets are in them
    def objective(model, x, y):
      del y
      bits = lm.bits_per_byte(model, x)
      return bits * jnp.log(2.0), bits

    def score(bits, y):
      del y
      return -bits
  elif data.classes:
    def objective(model, x, y):
      logits = model(x)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, logits

    def score(logits, y):
      return 100.0 * jnp.mean(jnp.argmax(logits, -1) == y)
  else:
    def objective(model, x, y):
      pred = model(x)[:, 0]
      return jnp.mean((pred - y) ** 2), pred

    def score(pred, y):
      return -jnp.mean((pred - y) ** 2)

  def loss_fn(model, idx):
    return objective(model, x_train[idx], y_train[idx])[0]

  def eval_fn(model):
    model.eval()
    loss, out = objective(model, x_test, y_test)
    return {'score': score(out, y_test), 'loss': loss}

  return loss_fn, eval_fn


def validation_split(task: Task) -> tuple[np.ndarray, np.ndarray]:
  """``(fit_rows, validation_rows)``: training rows, 20 % held out.

  What a user of ``find_lr`` holds out: ``find_lr`` trains on the first and
  scores on the second; the test split is never seen.
  """
  data = load(task.data)
  rows = np.arange(data.x_train.shape[0])
  fit, validation = model_selection.train_test_split(
      rows, test_size=VALIDATION_FRACTION, random_state=1,
      stratify=data.y_train if data.classes else None)
  return np.sort(fit).astype(np.int32), np.sort(validation).astype(np.int32)


def validation_loss(task: Task, rows: np.ndarray):
  """``eval_fn(model) -> the training objective on training rows``."""
  data = load(task.data)
  x, y = jnp.asarray(data.x_train[rows]), jnp.asarray(data.y_train[rows])

  def eval_fn(model):
    model.eval()
    if task.model == 'lm':
      return lm.bits_per_byte(model, x) * jnp.log(2.0)
    logits = model(x)
    if data.classes:
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return jnp.mean((logits[:, 0] - y) ** 2)

  return eval_fn


def batches(task: Task, seed: int, num_steps: int,
            rows: np.ndarray | None = None) -> np.ndarray:
  """Row indices ``[num_steps, batch]``: shuffled epochs, one order per seed.

  Drawn from ``rows`` of the training split (all of them by default).
  """
  rows = (np.arange(load(task.data).x_train.shape[0], dtype=np.int32)
          if rows is None else np.asarray(rows, np.int32))
  n = rows.size
  if task.batch_size is None:
    return np.broadcast_to(rows, (num_steps, n))
  rng = np.random.default_rng(10_000 + seed)
  size = task.batch_size
  epochs = -(-num_steps * size // n)
  order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
  return rows[order[: num_steps * size]].reshape(num_steps, size)


def baseline_score(task: Task) -> float:
  """The score of a model that learned nothing: the majority class, or
  predicting the training mean. Diverged runs are scored this way."""
  data = load(task.data)
  if task.model == 'lm':
    return -8.0  # a uniform guess over 256 bytes
  if data.classes:
    majority = np.bincount(data.y_train).argmax()
    return float(100.0 * np.mean(data.y_test == majority))
  return float(-np.mean((data.y_test - data.y_train.mean()) ** 2))


def known_optimal_lr(task: Task, seeds, num_steps: int) -> float | None:
  """The closed-form best fixed rate of the full-batch least-squares task."""
  if task.data != 'lsq' or task.batch_size is not None:
    return None
  data = load('lsq')
  w0 = np.stack([
      np.asarray(make_model(task, s).kernel[...])[:, 0] for s in seeds])
  return lsq_optimal_lr(data.x_train.astype(np.float64),
                        data.y_train.astype(np.float64), w0, num_steps)


def stack_states(models):
  """``(graphdef, params, model_state)`` stacked along a new leading axis."""
  splits = [nnx.split(m, nnx.Param, ...) for m in models]
  stack = lambda trees: jax.tree.map(lambda *x: jnp.stack(x), *trees)
  return (splits[0][0], stack([s[1] for s in splits]),
          stack([s[2] for s in splits]))


# --- what every training program of a task shares ----------------------------


class Training(NamedTuple):
  """K models of a task, one seed each, stacked for :func:`optax_clr.sweep`.

  Attributes:
    loss: the sweep's ``loss_fn``: ``loss(params, model_state, batch,
      key=None) -> (loss, model_state)``, or ``loss(params, batch, key=None)``
      when the model has no state.
    evaluate: ``evaluate(params, model_state) -> {"score", "loss"}`` on the
      test split (:func:`loss_and_eval`); ``model_state`` is ignored (None)
      without one.
    params: the initial ``nnx.Param`` state, stacked along a leading K axis.
    model_state: the rest of the modules' state (batch statistics, random
      streams), stacked, or None when the model has none.
    batches: row indices ``[K, num_steps, batch]``, one data order per seed.
    keys: K ``jax.random`` keys, one per seed (dropout).
    graphdef: the modules' graph definition.
    stateful_loss: ``stateful_loss(params, model_state, batch, key=None) ->
      (loss, model_state)`` even when ``loss`` drops the state.
    model_loss: ``loss_fn(model, batch)`` of :func:`loss_and_eval`, held
      here because :func:`optax_clr.nnx.split_loss` holds it weakly.
  """

  loss: Callable[..., Any]
  evaluate: Callable[..., Any]
  params: Any
  model_state: Any
  batches: jax.Array
  keys: jax.Array
  graphdef: Any
  stateful_loss: Callable[..., Any]
  model_loss: Callable[..., Any]


def training(task: Task, seeds: Sequence[int], num_steps: int) -> Training:
  """Model k starts from ``seeds[k]``'s initialization, data order and key.

  The grid, the rules and the rate-free baselines all train from these, so
  seed ``s`` means the same initialization, batches and dropout key in every
  program of the suite.
  """
  loss_fn, eval_fn = loss_and_eval(task)
  modules = {s: make_model(task, s) for s in dict.fromkeys(seeds)}
  data = {s: batches(task, s, num_steps) for s in modules}
  stacked_batches = jnp.asarray(np.stack([data[s] for s in seeds]))
  keys = jax.vmap(jax.random.key)(jnp.asarray(list(seeds)))
  graphdef, params, state = stack_states([modules[s] for s in seeds])
  first = modules[seeds[0]]
  pure_loss, _, _ = optax_clr.nnx.split_loss(first, loss_fn)
  if jax.tree.leaves(state):
    return Training(
        pure_loss,
        lambda p, st: eval_fn(nnx.merge(graphdef, p, st, copy=True)),
        params, state, stacked_batches, keys, graphdef, pure_loss, loss_fn)
  # No batch statistics nor random streams: no model state.
  empty = nnx.split(first, nnx.Param, ...)[2]
  return Training(
      lambda p, batch, key=None: pure_loss(p, empty, batch, key)[0],
      lambda p, _: eval_fn(nnx.merge(graphdef, p, empty, copy=True)),
      params, None, stacked_batches, keys, graphdef,
      lambda p, _, batch, key=None: pure_loss(p, empty, batch, key), loss_fn)


def final_scores(task: Task, scores, losses) -> np.ndarray:
  """Test scores as the suite reports them: a diverged run learned nothing.

  A run whose test score or test loss is not finite scores
  :func:`baseline_score` (NaN logits would otherwise score the accuracy of
  always predicting class 0); a regression model worse than predicting the
  mean scores the same.
  """
  scores = np.asarray(scores, np.float64)
  finite = np.isfinite(scores) & np.isfinite(np.asarray(losses, np.float64))
  baseline = baseline_score(task)
  if not load(task.data).classes:
    scores = np.maximum(scores, baseline)
  return np.where(finite, scores, baseline)
