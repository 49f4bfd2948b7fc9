"""Benchmark 6: against PyTorch, the same MLP, data and steps.

Needs the ``[compare]`` extra (torch, torch-lr-finder); skipped with a
message without torch. Both frameworks train the example MLP (64-128-10,
ReLU) from the same initial weights on the same digits batches with SGD
(momentum 0.9), so their losses agree to float32 rounding.

* K-config sweep: torch's ``CyclicLR`` run K times, one after another (the
  way a PyTorch sweep goes on one device), vs our K configurations as one
  vmapped, compiled program. Target >= 15x.
* LR range test: ``torch_lr_finder.LRFinder.range_test`` (construct, run,
  reset, as its README shows) vs ``optax_clr.range_test``, warm (compiled
  program cached) and cold (``jax.clear_caches()`` first). Targets >= 10x
  warm, ours cold within 2x of torch.
"""

import contextlib
import io
import warnings

import jax
import numpy as np

from benchmarks import _harness
from benchmarks import _models
from benchmarks import bench_range
from benchmarks import bench_sweep

TITLE = 'against PyTorch: CyclicLR sweep and torch-lr-finder'
# One intra-op thread is torch's fastest setting for this small MLP on a
# loaded 2-core host: with 2 threads its step times swing 10x (the threads
# spin against each other and against XLA's). Pinned so torch is at its best.
TORCH_THREADS = 1
SKIP_MESSAGE = (
    'torch is not installed; install the comparison extra with'
    ' `pip install -e ".[compare]"` (torch, torch-lr-finder) to run it.'
)


def _torch_mlp(torch, params):
  """The example MLP in torch, with the JAX model's initial weights."""
  layer = params['layers'][0]
  model = torch.nn.Sequential(
      torch.nn.Flatten(),
      torch.nn.Linear(*layer['kernel'].shape),
      torch.nn.ReLU(),
      torch.nn.Linear(*params['head']['kernel'].shape),
  )
  weights = {
      '1.weight': layer['kernel'], '1.bias': layer['bias'],
      '3.weight': params['head']['kernel'], '3.bias': params['head']['bias'],
  }
  state = {
      name: torch.tensor(np.array(value[...]).T.copy() if 'weight' in name
                         else np.array(value[...]))
      for name, value in weights.items()
  }
  model.load_state_dict(state)
  return model


def _torch_sweep(torch, model, init_state, lrs, batches):
  """K CyclicLR runs one after another; the per-step losses, [K, steps]."""
  loss_fn = torch.nn.CrossEntropyLoss()
  losses = []
  for max_lr in lrs:
    model.load_state_dict(init_state)
    opt = torch.optim.SGD(model.parameters(), lr=bench_sweep.BASE_LR,
                          momentum=bench_sweep.MOMENTUM)
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt, base_lr=bench_sweep.BASE_LR, max_lr=float(max_lr),
        step_size_up=bench_sweep.STEP_SIZE, cycle_momentum=False)
    run = []
    for images, labels in batches:
      opt.zero_grad()
      loss = loss_fn(model(images), labels)
      loss.backward()
      opt.step()
      sched.step()
      run.append(loss.detach())
    losses.append(torch.stack(run))
  return torch.stack(losses)


def _torch_finder(torch, lr_finder, model, loader, num_steps):
  """torch-lr-finder as its README runs it; returns its recorded LRs."""
  opt = torch.optim.SGD(model.parameters(), lr=bench_range.START_LR,
                        momentum=bench_range.MOMENTUM)
  finder = lr_finder.LRFinder(model, opt, torch.nn.CrossEntropyLoss(),
                              device='cpu')
  quiet = io.StringIO()
  with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
    with warnings.catch_warnings():
      # The finder reads its scheduler with get_lr(), which torch warns about.
      warnings.filterwarnings('ignore', message='.*get_last_lr.*')
      finder.range_test(loader, start_lr=bench_range.START_LR,
                        end_lr=bench_range.END_LR, num_iter=num_steps,
                        step_mode='exp', diverge_th=float('inf'))
  lrs = list(finder.history['lr'])
  finder.reset()
  return lrs


def run(settings: _harness.Settings) -> dict:
  """Times torch against ours; returns the record (or a skip)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    print(f'torch: skipped: {SKIP_MESSAGE}')
    return {'title': TITLE, 'skipped': SKIP_MESSAGE}
  threads = torch.get_num_threads()
  torch.set_num_threads(TORCH_THREADS)
  try:
    return _run(settings, torch)
  finally:
    torch.set_num_threads(threads)


def _run(settings: _harness.Settings, torch) -> dict:
  """:func:`run` with torch imported and its threads set."""
  k, num_steps = (2, 4) if settings.quick else (32, 40)
  finder_steps = 8 if settings.quick else 100
  apply, params = _models.init('mlp', seed=0)
  model = _torch_mlp(torch, params)
  init_state = {n: v.clone() for n, v in model.state_dict().items()}

  # The sweep.
  images, labels = _models.batches(bench_sweep.BATCH_SIZE, num_steps)
  torch_batches = [
      (torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y),
                                                 dtype=torch.long))
      for x, y in zip(images, labels)
  ]
  init, _, scan_run = bench_sweep.make_functions(apply)
  lrs = bench_sweep.max_lrs(k)
  stacked = _models.stack([params] * k)
  states = jax.jit(jax.vmap(init))(stacked, lrs)
  v_run = jax.jit(jax.vmap(scan_run, in_axes=(0, 0, 0, None)))
  ours_sweep = f'ours: K={k} vmapped (lax.scan)'
  torch_sweep = f'torch: K={k} CyclicLR runs'
  sweep_fns = {
      ours_sweep: lambda: v_run(stacked, states, lrs, (images, labels)),
      torch_sweep: lambda: _torch_sweep(torch, model, init_state,
                                        np.asarray(lrs), torch_batches),
  }
  warm = _harness.time_interleaved(sweep_fns, repeats=settings.repeats)
  ours_losses = np.asarray(sweep_fns[ours_sweep]()[2])
  torch_losses = sweep_fns[torch_sweep]().numpy()
  checks = {'sweep_losses_max_abs_diff': float(
      np.max(np.abs(ours_losses - torch_losses)))}
  ratios = [_harness.ratio(warm, torch_sweep, ours_sweep, metric='warm',
                           target=('>=', 15.0))]
  timings = {'warm': warm}
  notes = [
      f'Sweep: K={k} configurations x {num_steps} steps of batch'
      f' {bench_sweep.BATCH_SIZE}, triangular CLR with step_size'
      f' {bench_sweep.STEP_SIZE} and max_lr log-spaced in [0.01, 0.3];'
      f' torch pinned to {torch.get_num_threads()} intra-op thread(s),'
      ' its fastest setting on this host.',
  ]

  # The range test.
  try:
    import torch_lr_finder  # pylint: disable=import-outside-toplevel
  except ImportError:
    notes.append('torch-lr-finder is not installed: its comparison is'
                 ' skipped.')
    return {'title': TITLE, 'params': {'k': k, 'num_steps': num_steps,
                                       'torch_threads': TORCH_THREADS},
            'timings': timings, 'ratios': ratios, 'checks': checks,
            'notes': notes}
  images, labels = _models.batches(bench_range.BATCH_SIZE, finder_steps)
  flat = lambda x: np.asarray(x).reshape((-1,) + x.shape[2:])
  dataset = torch.utils.data.TensorDataset(
      torch.tensor(flat(images)), torch.tensor(flat(labels), dtype=torch.long))
  loader = torch.utils.data.DataLoader(
      dataset, batch_size=bench_range.BATCH_SIZE, shuffle=False)
  sweep = bench_range.make_range_test(_models.loss_fn(apply), finder_steps)
  ours_finder = 'ours: optax_clr.range_test'
  torch_finder = 'torch: torch-lr-finder'
  finder_fns = {
      ours_finder: lambda: sweep(params, (images, labels)),
      torch_finder: lambda: _torch_finder(torch, torch_lr_finder, model,
                                          loader, finder_steps),
  }
  warm.update(_harness.time_interleaved(finder_fns, repeats=settings.repeats))
  ours_lrs = np.asarray(finder_fns[ours_finder]().lrs)
  checks['finder_lrs_max_rel_diff'] = float(np.max(
      np.abs(ours_lrs - np.asarray(finder_fns[torch_finder]())) / ours_lrs))
  cold = _harness.time_interleaved(
      {ours_finder: bench_range.cold(finder_fns[ours_finder]),
       torch_finder: finder_fns[torch_finder]},
      repeats=settings.compile_repeats, warmup=0)
  timings['cold'] = cold
  ratios.append(_harness.ratio(warm, torch_finder, ours_finder,
                               metric='warm', target=('>=', 10.0)))
  ratios.append(_harness.ratio(cold, ours_finder, torch_finder,
                               metric='cold', target=('<=', 2.0)))
  notes.append(
      f'Range test: {finder_steps} steps from {bench_range.START_LR:g} to'
      f' {bench_range.END_LR:g}, divergence stop off on both sides so both'
      ' run every step. Cold: ours after `jax.clear_caches()` (tracing and'
      ' compiling included); torch has nothing to compile, its cold column'
      ' is a plain call.')
  return {
      'title': TITLE,
      'params': {'k': k, 'num_steps': num_steps, 'finder_steps': finder_steps,
                 'torch_threads': torch.get_num_threads(),
                 'repeats': settings.repeats},
      'timings': timings,
      'ratios': ratios,
      'checks': checks,
      'notes': notes,
  }
