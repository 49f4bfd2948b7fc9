"""LR range test on scikit-learn's digits with a small MLP in plain JAX.

Five sweeps (five initialisations, five batch orders) run as one vmapped,
compiled program; the script prints the suggestions and the CLR bounds read
off their median and saves the plot (under ``runs/`` unless ``--out`` says
otherwise; the committed figure is regenerated with the second command)::

  python -m examples.find_lr
  python -m examples.find_lr --out docs/images/range_test_digits.png
"""

import argparse
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import optax_clr
from examples import compile_cache

LAYERS = (64, 128, 10)
# optax_clr.suggest_lr's methods; the first is its default.
METHODS = ('robust', 'steepest', 'valley', 'minimum')


def init_mlp(key: jax.Array, layers=LAYERS) -> list[dict[str, jax.Array]]:
  """He-initialised dense layers as a list of ``{"w", "b"}`` dicts."""
  params = []
  for layer_key, (fan_in, fan_out) in zip(
      jax.random.split(key, len(layers) - 1), zip(layers[:-1], layers[1:])
  ):
    w = jax.random.normal(layer_key, (fan_in, fan_out))
    w = w * jnp.sqrt(2.0 / fan_in)
    params.append({'w': w, 'b': jnp.zeros(fan_out)})
  return params


def apply_mlp(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer['w'] + layer['b'])
  return x @ params[-1]['w'] + params[-1]['b']


def loss_fn(params, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
  logits = apply_mlp(params, batch['x'])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['y'])
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['y'])
  return jnp.mean(loss), {'accuracy': accuracy}


def digits_batches(
    num_steps: int, batch_size: int, seed: int
) -> dict[str, np.ndarray]:
  """``num_steps`` random batches stacked on a leading axis."""
  digits = load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  index = np.stack([
      rng.choice(len(x), batch_size, replace=False) for _ in range(num_steps)
  ])
  return {'x': x[index], 'y': y[index]}


def find_lr(
    *,
    num_steps: int = 100,
    batch_size: int = 128,
    sweeps: int = 5,
    start_lr: float = 1e-4,
    end_lr: float = 10.0,
    smoothing: float = 0.9,
    out: str | None = None,
) -> dict[str, Any]:
  """Runs ``sweeps`` range tests as one program; returns what it found."""
  optimizer = functools.partial(optax.sgd, momentum=0.9)
  params = jax.vmap(init_mlp)(jax.random.split(jax.random.key(0), sweeps))
  batches = [digits_batches(num_steps, batch_size, seed) for seed in
             range(sweeps)]
  batches = jax.tree.map(lambda *b: np.stack(b), *batches)

  def sweep(params, batches):
    return optax_clr.range_test(
        loss_fn, params, optimizer, batches, start_lr=start_lr,
        end_lr=end_lr, num_steps=num_steps, smoothing=smoothing,
        has_aux=True)

  result = jax.jit(jax.vmap(sweep))(params, batches)
  found = {
      method: optax_clr.suggest_lr(result, method=method)
      for method in METHODS
  }
  found['clr_bounds'] = optax_clr.suggest_clr_bounds(result)
  found['clr_bounds_accuracy'] = optax_clr.suggest_clr_bounds(
      result, metric='accuracy')
  steps = np.asarray(result.diverged_step)
  found['diverged_lr'] = float(np.asarray(result.lrs)[0, steps.min()]) if (
      steps.min() < num_steps) else None
  found['result'] = result
  if out is not None:
    optax_clr.plot_range_test(result, path=out)
  return found


def main(argv=None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num-steps', type=int, default=100)
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--sweeps', type=int, default=5,
                      help='range tests read through their median')
  # The moving average lags by about smoothing / (1 - smoothing) steps:
  # fastai's 0.98 is half of a 100-step sweep, 0.9 is 9 steps.
  parser.add_argument('--smoothing', type=float, default=0.9)
  parser.add_argument('--out', default='runs/range_test_digits.png')
  compile_cache.add_flag(parser)
  args = parser.parse_args(argv)
  compile_cache.enable(args.compilation_cache)
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  found = find_lr(num_steps=args.num_steps, batch_size=args.batch_size,
                  sweeps=args.sweeps, smoothing=args.smoothing, out=args.out)
  for method in METHODS:
    print(f'suggest_lr(method={method!r}): {found[method]:.3g}')
  base_lr, max_lr = found['clr_bounds']
  print(f'suggest_clr_bounds: base_lr={base_lr:.3g}, max_lr={max_lr:.3g}')
  base_lr, max_lr = found['clr_bounds_accuracy']
  print(f"suggest_clr_bounds(metric='accuracy'): base_lr={base_lr:.3g},"
        f' max_lr={max_lr:.3g}')
  print(f"diverged at lr={found['diverged_lr']:.3g}" if found['diverged_lr']
        else 'did not diverge')
  print(f'plot saved to {args.out}')
  return found


if __name__ == '__main__':
  main()
