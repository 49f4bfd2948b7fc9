"""The fast path: an NNX MLP on digits, a triangular CLR, one compiled step.

The learning rate lives in the optimizer state (``optax.inject_hyperparams``),
so the step returns the rate its update used. Metrics stay on the device and
are fetched once every ``log_every`` steps: the host never waits on a step
just to log it. Run ``python examples/minimal.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import optax_clr


class MLP(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(64, 128, rngs=rngs)
    self.out = nnx.Linear(128, 10, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.hidden(x)))


def loss_fn(model, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
  loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
  optimizer.update(model, grads)  # Evaluates the schedule at this step.
  return loss, optimizer.opt_state.hyperparams['learning_rate']


def main(*, epochs=8, batch_size=32, log_every=50, seed=0):
  digits = load_digits()
  x, y = (digits.data / 16).astype(np.float32), digits.target
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(y))
  train, test = order[:1500], order[1500:]
  steps_per_epoch = len(train) // batch_size
  schedule = optax_clr.triangular_schedule(  # Smith 2015: 2 epochs up, 2 down.
      0.05, 0.2, step_size=2 * steps_per_epoch)
  model = MLP(nnx.Rngs(seed))
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=0.9)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  num_steps = epochs * steps_per_epoch
  log, pending = [], []  # pending: (step, loss, lr) still on the device.
  for step in range(num_steps):
    batch = rng.choice(train, batch_size, replace=False)
    pending.append((step, *train_step(model, optimizer, x[batch], y[batch])))
    if (step + 1) % log_every == 0 or step + 1 == num_steps:
      # One transfer for the window; the steps since the last one ran ahead.
      steps, losses, lrs = zip(*jax.device_get(pending))
      log.append({'step': steps[-1], 'lr': float(lrs[-1]),
                  'loss': float(np.mean(losses))})
      print(f"step {log[-1]['step']:4d}  lr {log[-1]['lr']:.4f}"
            f"  loss {log[-1]['loss']:.4f}")
      pending = []
  correct = jnp.mean(jnp.argmax(model(x[test]), -1) == y[test])
  accuracy = float(jax.device_get(correct))
  print(f'test accuracy {accuracy:.4f}')
  return {'log': log, 'test_accuracy': accuracy}


if __name__ == '__main__':
  main()
