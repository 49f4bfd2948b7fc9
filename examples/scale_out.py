r"""A sweep, a range test and find_lr on 2 processes x 2 CPU devices, one command.

The same code runs on one CPU, on the devices of one host and on a cluster:
only ``jax.distributed.initialize`` (and the collectives' backend) changes.
Here every process is started on this machine, talks to the others over
127.0.0.1 with gloo collectives and forces 2 CPU devices, so the global mesh
is 4 devices, as it would be on 2 hosts of 2 accelerators::

  python -m examples.scale_out                 # launches both processes
  python -m examples.scale_out --processes 1   # the same on 1 x 2 devices

Each process trains only the models of its own devices. Then

1. ``optax_clr.sweep`` of K = 8 models (a CLR ``max_lr`` grid of a digits
   softmax regression, two seeds) on a ``models x data`` mesh of 2 x 2: each
   model data-parallel over 2 devices, 4 models per ``models`` shard;
2. ``optax_clr.range_test`` data-parallel over all 4 devices;
3. ``optax_clr.find_lr`` over every device of every process (its default);

and process 0 prints what every process received (the whole records, on
every process) and checks them against the same calls on this process's
first device alone.
"""

import argparse
from collections.abc import Sequence
import os
import socket
import subprocess
import sys
import time

NUM_DEVICES = 4  # In all, over every process.
VALIDATION_ROWS = 300  # Held out of the training rows for find_lr.
PORT_TAKEN = ('Failed to add port', 'Failed to start RPC server')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('', 0))
    return s.getsockname()[1]


def launch(num_processes: int, attempts: int = 4) -> int:
  """Starts ``num_processes`` copies of this script as one JAX runtime."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count='
                      f'{NUM_DEVICES // num_processes}'}
  for _ in range(attempts):
    coordinator = f'127.0.0.1:{_free_port()}'
    processes = [
        subprocess.Popen(
            [sys.executable, '-m', 'examples.scale_out', '--worker',
             coordinator, str(num_processes), str(i)],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        for i in range(num_processes)
    ]
    errors = [p.communicate()[1] for p in processes]
    codes = [p.returncode for p in processes]
    if codes[0] and any(m in errors[0] for m in PORT_TAKEN):
      continue  # The port was taken between choosing and binding it.
    for i, (code, error) in enumerate(zip(codes, errors)):
      if code:
        print(f'process {i} failed:\n{error[-3000:]}', file=sys.stderr)
    return max(codes)
  print('the coordinator port was taken every time', file=sys.stderr)
  return 1


def _digits():
  from examples import data  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  dataset = data.load_dataset('digits')
  rng = np.random.default_rng(0)
  order = rng.permutation(len(dataset.train_images))
  images = dataset.train_images.reshape(len(order), -1)[order]
  labels = dataset.train_labels[order]
  return images.astype(np.float32), labels.astype(np.int32), dataset


def worker(coordinator: str, num_processes: int, process_id: int) -> None:
  """One process of the runtime: the three calls, checked on process 0."""
  import jax  # pylint: disable=g-import-not-at-top
  if num_processes > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator, num_processes, process_id)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  import optax_clr  # pylint: disable=g-import-not-at-top

  images, labels, dataset = _digits()
  val_x, val_y = images[-VALIDATION_ROWS:], labels[-VALIDATION_ROWS:]
  images, labels = images[:-VALIDATION_ROWS], labels[:-VALIDATION_ROWS]
  batch, steps = 32, 150
  idx = np.arange(batch * steps) % len(labels)
  batches = {'x': images[idx].reshape(steps, batch, -1),
             'y': labels[idx].reshape(steps, batch)}
  test_x = dataset.test_images.reshape(len(dataset.test_labels), -1)
  test_x, test_y = test_x.astype(np.float32), dataset.test_labels

  def loss_fn(params, b):
    logits = b['x'] @ params['w'] + params['b']
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, b['y']).mean()

  def error_rate(params, x, y):
    return jnp.mean(jnp.argmax(x @ params['w'] + params['b'], -1) != y)

  test_error = lambda params, _: error_rate(params, test_x, test_y)
  # find_lr chooses on rows held out of training, never the test split.
  validation_error = lambda params: error_rate(params, val_x, val_y)

  params = {'w': np.zeros((64, 10), np.float32),
            'b': np.zeros(10, np.float32)}

  def optimizer(hp):
    return optax.sgd(optax_clr.triangular_schedule(
        hp['max_lr'] / 4, hp['max_lr'], step_size=25), momentum=0.9)

  hp = optax_clr.grid(max_lr=[0.003, 0.01, 0.03, 0.1], seed=[0, 1])
  orders = np.stack([np.random.default_rng(int(s)).permutation(steps)
                     for s in hp['seed']])
  per_model = {k: v[orders] for k, v in batches.items()}

  devices = np.array(jax.devices()).reshape(2, 2)  # models x data
  mesh = jax.sharding.Mesh(devices, ('models', 'data'))
  data_mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  local = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ('models',))

  def sweep(mesh):
    return optax_clr.sweep(loss_fn, params, optimizer, {'max_lr': hp['max_lr']},
                           per_model, batches_axis=0,
                           eval_fn=test_error, mesh=mesh)

  def range_test(mesh):
    return optax_clr.range_test(loss_fn, params, optax.sgd, batches,
                                start_lr=1e-4, end_lr=10.0, num_steps=steps,
                                mesh=mesh)

  def find_lr(mesh):
    train = {k: v[:120] for k, v in batches.items()}
    return optax_clr.find_lr(loss_fn, params, optax.sgd, train,
                             validation_error, mesh=mesh, range_test_steps=60,
                             max_cost=None)

  start = time.perf_counter()
  swept, tested, chosen = sweep(mesh), range_test(data_mesh), find_lr(None)
  wall = time.perf_counter() - start
  own = sorted({k for s in swept.params['w'].addressable_shards
                for k in range(8)[s.index[0]]})
  print(f'process {process_id}: {jax.device_count()} devices in all; its'
        f' {jax.local_device_count()} trained the models {own}', flush=True)
  if process_id:
    return
  print(f'three calls on {num_processes} process(es) x'
        f' {jax.local_device_count()} devices: {wall:.1f} s')
  print('sweep, test error after', steps, 'steps:')
  for k in range(8):
    print(f'  max_lr={hp["max_lr"][k]:<6g} seed {int(hp["seed"][k])}:'
          f' {float(swept.evals[k, -1]):.3f}')
  suggestion = optax_clr.suggest_lr(tested)
  print(f'range test: suggest_lr {suggestion:.3g}, diverged at step'
        f' {int(tested.diverged_step)}')
  print(f'find_lr: {chosen.learning_rate:.3g} (bracket {chosen.bracket[0]:.3g}'
        f' to {chosen.bracket[1]:.3g}, {chosen.cost_steps} steps)')
  # The same calls on one device: equal to float noise (reductions split
  # over devices add in another order; the ramp's last, largest rates
  # amplify that most).
  alone = sweep(local), range_test(None)
  live = slice(0, int(tested.diverged_step))
  gaps = [np.max(np.abs(a - b) / np.abs(b)) for a, b in (
      (swept.losses, alone[0].losses),
      (tested.losses[live], alone[1].losses[live]))]
  print(f'largest relative gap to one device: sweep {gaps[0]:.1e},'
        f' range test {gaps[1]:.1e}')
  assert max(gaps) < 1e-3, gaps


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--processes', type=int, default=2,
                      help='processes to launch on this machine')
  parser.add_argument('--worker', nargs=3, metavar=('COORDINATOR', 'N', 'ID'),
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    coordinator, num, index = args.worker
    worker(coordinator, int(num), int(index))
    return 0
  if args.processes not in (1, 2, 4):
    parser.error('--processes must be 1, 2 or 4 (the mesh is 4 devices)')
  return launch(args.processes)


if __name__ == '__main__':
  sys.exit(main())
