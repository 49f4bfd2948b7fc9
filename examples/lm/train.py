r"""Trains the byte-level transformer on standard-library Python code.

One jitted ``train_step`` (the batch is gathered from the on-device text
inside it, the schedule evaluated by the optimizer); the loss and the rate
each update used stay on the device and are fetched once per log window,
with the validation bits per byte. An Orbax checkpoint every
``--checkpoint-every`` steps (the log travels in its record); running again
in the same ``--workdir`` resumes bit for bit, from the newest intact
checkpoint (a damaged one is moved aside, as in the digits trainer).
``--cooldown-from`` continues a ``constant`` run from one of its
checkpoints with a cooldown::

  python -m examples.lm.train --schedule wsd --decay-shape 1-sqrt
  python -m examples.lm.train --schedule cosine --peak-lr 0.006 --quick
  python -m examples.lm.train --schedule constant --steps 240 \
      --checkpoint-every 120 --workdir runs/lm-constant
  python -m examples.lm.train --schedule wsd --steps 150 --workdir runs/cd \
      --cooldown-from runs/lm-constant/checkpoints/120

Every numeric flag is checked before any work (:mod:`examples.lm.config`);
``metrics.jsonl`` is strict JSON (a NaN is ``null``), replaced atomically
each log window; a failure (a full disk) ends in one line on stderr.
"""

import argparse
from collections.abc import Sequence
import dataclasses
import os
import sys
import time
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from examples import checkpointing
from examples import metrics_log
from examples import storage_errors
from examples.lm import data
from examples.lm import model as model_lib
from examples.lm import schedules
# Re-exported: the comparison and the tests read them here.
from examples.lm.config import check_config
from examples.lm.config import Config
from examples.lm.config import QUICK


# What a cooldown run must share with the constant run it continues.
_SHARED = ('decay_shape', 'peak_lr', 'warmup_steps', 'batch_size', 'context',
           'd_model', 'num_layers', 'num_heads', 'weight_decay', 'seed',
           'eval_windows')


def make_schedule(config: Config, cooldown_start: int | None = None):
  """The run's schedule; with ``cooldown_start``, a constant run's cooldown."""
  if cooldown_start is not None:
    return schedules.cooldown(config.peak_lr, config.schedule_config(),
                              cooldown_start)
  return schedules.make_schedule(config.peak_lr, config.schedule_config())


@nnx.jit
def train_step(model, optimizer, text, offsets):
  """One update on the windows of ``text`` at ``offsets``: (loss, rate)."""
  tokens = data.windows(text, offsets, model.config.context)
  loss, grads = nnx.value_and_grad(model_lib.loss_fn)(model, tokens)
  optimizer.update(model, grads)  # The schedule runs here.
  return loss, optimizer.opt_state[1].hyperparams['learning_rate']


@nnx.jit
def eval_step(model, tokens):
  return model_lib.bits_per_byte(model, tokens)


def _build(config: Config, cooldown_start: int | None):
  model = model_lib.make_model(config.model_config(), seed=config.seed)
  tx = model_lib.make_optimizer(make_schedule(config, cooldown_start),
                                weight_decay=config.weight_decay)
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def _load(model, optimizer, pure_state) -> None:
  """Puts a restored state (a pure dict) into the modules."""
  state = nnx.state((model, optimizer))
  # Orbax returns arrays committed to a device; a fresh model's are not, and
  # jit keys its cache on that: uncommitted copies let the continued run
  # reuse the compiled steps instead of compiling each twice.
  nnx.replace_by_pure_dict(state, jax.tree.map(
      lambda x: jnp.asarray(np.asarray(x)), pure_state))
  nnx.update((model, optimizer), state)


def _restore(path: str, model, optimizer) -> dict[str, Any]:
  """Reads checkpoint ``path`` (digest checked) into the modules; its record."""
  try:
    checkpointing.check_digests(path)
  except ValueError as error:
    raise checkpointing.CheckpointError(f'{path}: {error}') from error
  orbax = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  try:
    restored = orbax.restore(path, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(
            nnx.to_pure_dict(nnx.state((model, optimizer)))),
        record=ocp.args.JsonRestore()))
  finally:
    orbax.close()
  _load(model, optimizer, restored.state)
  return dict(restored.record)


def _resume(config: Config, checkpointer: checkpointing.Checkpointer, model,
            optimizer) -> dict[str, Any] | None:
  """Restores the workdir's newest intact checkpoint; its record, or None.

  As in the digits trainer (the same :class:`checkpointing.Checkpointer`):
  a checkpoint whose digest differs, or whose record names another step
  than its directory, is moved aside and the next older one is used; the
  config is compared with the record before any array is read.
  """

  def target(record: dict[str, Any]) -> Any:
    if record.get('config') != dataclasses.asdict(config):
      raise ValueError(f'{checkpointer.workdir} holds another run:'
                       f' {record.get("config")}.')
    return nnx.to_pure_dict(nnx.state((model, optimizer)))

  restored = checkpointer.restore(target, step_key='step')
  if restored is None:
    return None
  pure_state, record = restored
  _load(model, optimizer, pure_state)
  return record


def _read_record(path: str) -> dict[str, Any]:
  """The JSON record of checkpoint ``path``, without its arrays."""
  orbax = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  try:
    return dict(orbax.restore(path, args=ocp.args.Composite(
        record=ocp.args.JsonRestore())).record)
  finally:
    orbax.close()


def _cooldown_start(config: Config, cooldown_from: str) -> int:
  """Checks that ``cooldown_from`` is a checkpoint this run can continue."""
  record = _read_record(cooldown_from)
  saved, start = record['config'], record['step']
  if saved['schedule'] != 'constant' or config.schedule != 'wsd':
    raise ValueError('--cooldown-from continues a constant run with'
                     ' --schedule wsd.')
  changed = [f'{k}: {saved[k]!r} -> {getattr(config, k)!r}' for k in _SHARED
             if k != 'decay_shape' and saved[k] != getattr(config, k)]
  if changed or not config.warmup_steps <= start < config.steps:
    raise ValueError(f'{cooldown_from} (step {start}) cannot be continued'
                     f' by this run: {"; ".join(changed) or "step range"}.')
  return start


def train_and_evaluate(config: Config, workdir: str, *,
                       cooldown_from: str | None = None,
                       stop_at: int | None = None,
                       progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) a run in ``workdir``; returns its final metrics.

  Args:
    config: the run.
    workdir: checkpoints and ``metrics.jsonl``; reuse it to resume.
    cooldown_from: a checkpoint directory of a ``constant`` run of the same
      model, peak and seed: this run starts from it, with the constant
      schedule cooled down to 0 at ``config.steps`` (``decay_shape``).
    stop_at: stop after this many updates, as a kill would (tests).
    progress: show a progress bar.

  Returns:
    ``log`` (one record per window: ``step`` of its last update, that
    update's ``lr``, the window's mean ``loss`` and ``val_bpb`` after it),
    ``val_bpb`` and ``step`` of the last record.

  Raises:
    ValueError: a flag is out of range (named), or does not match the
      workdir's checkpoint or ``cooldown_from``'s.
    checkpointing.CheckpointError: the workdir's checkpoints are all
      damaged.
    checkpointing.WorkdirError: another run holds the workdir.
    OSError: a write failed (a full disk); no partial file or checkpoint
      is left behind.
  """
  check_config(config)
  corpus = data.load_corpus()
  longest = min(len(corpus.train), len(corpus.validation)) - 2
  if config.context > longest:
    raise ValueError(f'--context must be at most {longest} (the held-out'
                     f' text less 2 bytes), got {config.context}.')
  lock = checkpointing.lock_workdir(workdir)
  try:
    return _train(config, workdir, corpus, cooldown_from, stop_at, progress)
  finally:
    lock.release()


def _train(config: Config, workdir: str, corpus: data.Corpus,
           cooldown_from: str | None, stop_at: int | None,
           progress: bool) -> dict[str, Any]:
  """:func:`train_and_evaluate` once the workdir is locked."""
  text = jnp.asarray(corpus.train)
  val = data.validation_windows(corpus, config.context, config.eval_windows)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=2,
                                            log=tqdm.tqdm.write)
  try:
    start = _cooldown_start(config, cooldown_from) if cooldown_from else None
    model, optimizer = _build(config, start)
    record = _resume(config, checkpointer, model, optimizer)
    if record is None and cooldown_from:  # The constant run's state and log.
      record = _restore(cooldown_from, model, optimizer)
    step, log = (record['step'], record['log']) if record else (0, [])
    _write_metrics(metrics_path, log)  # The log of the state resumed.
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    bar = tqdm.tqdm(range(step, end), disable=not progress, file=sys.stdout,
                    desc=config.schedule_config().name, dynamic_ncols=True)
    pending = []
    for t in bar:
      offsets = data.batch_offsets(len(corpus.train), config.context,
                                   config.batch_size, config.seed, [t])[0]
      pending.append(train_step(model, optimizer, text, offsets))
      if (t + 1) % config.log_every == 0 or t + 1 == config.steps:
        losses, lrs = zip(*jax.device_get(pending))  # One fetch a window.
        pending = []
        log.append({'step': t, 'lr': float(lrs[-1]),
                    'loss': float(np.mean(losses)),
                    'val_bpb': float(eval_step(model, val))})
        bar.set_postfix(loss=f'{log[-1]["loss"]:.3f}',
                        bpb=f'{log[-1]["val_bpb"]:.3f}', refresh=False)
        _write_metrics(metrics_path, log)
      if (t + 1) % config.checkpoint_every == 0 or t + 1 == config.steps:
        checkpointer.save(t + 1, nnx.to_pure_dict(nnx.state(
            (model, optimizer))), {'step': t + 1, 'log': log,
                                   'config': dataclasses.asdict(config)})
    bar.close()
  finally:
    checkpointer.close()
  return {'log': log, 'val_bpb': log[-1]['val_bpb'] if log else None,
          'step': log[-1]['step'] + 1 if log else 0}


def _write_metrics(path: str, log: list[dict[str, Any]]) -> None:
  """Replaces ``metrics.jsonl`` atomically: strict JSON, a NaN as null."""
  metrics_log.write_atomically(
      path, ''.join(metrics_log.dumps(r) + '\n' for r in log))


def build_parser() -> argparse.ArgumentParser:
  """One flag per :class:`Config` field, plus the run's options."""
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n', 1)[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  for field in dataclasses.fields(Config):
    kwargs = {'type': type(field.default), 'default': field.default}
    if field.name == 'schedule':
      kwargs['choices'] = schedules.FAMILIES
    if field.name == 'decay_shape':
      kwargs['choices'] = schedules.DECAY_SHAPES
    parser.add_argument('--' + field.name.replace('_', '-'), **kwargs)
  parser.add_argument('--quick', action='store_true',
                      help=f'a smoke test: {QUICK}')
  parser.add_argument('--cooldown-from', default=None,
                      help='a checkpoint of a constant run to cool down')
  parser.add_argument('--workdir', default=None,
                      help='default runs/lm-<time>; reuse it to resume')
  parser.add_argument('--no-progress', action='store_true')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the trainer from the command line; returns the exit status.

  A flag out of range is an argparse error naming it (status 2); a run
  that fails (a damaged workdir, a full disk) prints one line on stderr
  (status 1).
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
  if args.quick:  # The preset, under any flag given.
    defaults = dataclasses.asdict(Config())
    values.update({k: v for k, v in QUICK.items() if values[k] == defaults[k]})
  config = Config(**values)
  try:
    check_config(config)
  except ValueError as error:
    parser.error(str(error))
  workdir = args.workdir or os.path.join(
      'runs', time.strftime('lm-%Y%m%d-%H%M%S'))
  # Orbax's echoes of a failed write would bury the one-line error.
  with storage_errors.echoes_held() as echoes:
    try:
      final = train_and_evaluate(
          config, workdir, cooldown_from=args.cooldown_from,
          progress=not args.no_progress)
    except (checkpointing.CheckpointError, checkpointing.WorkdirError,
            ValueError, OSError) as error:
      echoes.drop()
      print(f'error: {storage_errors.message(error)}', file=sys.stderr)
      return 1
  print(metrics_log.dumps({k: v for k, v in final.items() if k != 'log'}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
