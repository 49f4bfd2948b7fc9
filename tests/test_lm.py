"""examples/lm: the byte-level transformer, its data, trainer and comparison."""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from examples import checkpointing
from tests import file_size_limit
from examples.lm import compare
from examples.lm import data
from examples.lm import model as model_lib
from examples.lm import schedules
from examples.lm import train

QUICK = train.Config(**train.QUICK)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two updates, a log window each, one checkpoint: seconds, mostly compiling.
TINY = ('--quick', '--steps', '2', '--warmup-steps', '0', '--log-every', '1',
        '--checkpoint-every', '2', '--no-progress')


def wsd_1_sqrt(step, peak, total, decay, warmup):
  """Warmup-stable-decay with a 1-sqrt cooldown (Hägele et al. 2024), NumPy."""
  step = np.asarray(step, np.float64)
  cool = np.clip((step - (total - decay)) / decay, 0.0, 1.0)
  value = np.where(step < total - decay, peak, peak * (1 - np.sqrt(cool)))
  value = np.where(step >= total, 0.0, value)
  return np.where(step < warmup, peak * step / warmup, value)


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
  """The trainer's ``--quick`` run, from the command line."""
  workdir = str(tmp_path_factory.mktemp('quick'))
  assert train.main(['--quick', '--workdir', workdir, '--no-progress']) == 0
  return workdir, train.train_and_evaluate(QUICK, workdir, progress=False)


def test_attention_is_causal():
  config = model_lib.ModelConfig(context=16, d_model=32, num_heads=4)
  model = model_lib.make_model(config, seed=0)
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 256)
  logits = model(tokens)
  for i in (0, 5, 14):
    future = tokens.at[:, i + 1:].set((tokens[:, i + 1:] + 7) % 256)
    changed = model(future)
    # Masked scores weigh the future exactly 0: the past is bitwise unchanged.
    np.testing.assert_array_equal(changed[:, :i + 1], logits[:, :i + 1])
    assert not np.allclose(changed[:, i + 1:], logits[:, i + 1:])


def test_data_is_split_by_file():
  corpus = data.load_corpus()
  train_files, validation_files = set(corpus.train_files), set(
      corpus.validation_files)
  assert not train_files & validation_files
  assert train_files | validation_files == set(data.FILES)
  assert len(validation_files) == len(data.FILES) // data.VALIDATION_EVERY
  # The training text is exactly the training files: no validation byte in it.
  root = data.stdlib_dir()
  parts = []
  for name in corpus.train_files:
    with open(os.path.join(root, name), 'rb') as f:
      parts.append(f.read())
  expected = b''.join(parts)
  assert corpus.train.tobytes() == expected
  assert len(corpus.validation) > 10 * QUICK.eval_windows * QUICK.context


def test_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='argparse.py'):
    data.load_corpus(str(tmp_path))


def test_batches_are_a_function_of_seed_and_step():
  a = data.batch_offsets(10_000, 64, 8, seed=3, steps=range(5, 10))
  b = data.batch_offsets(10_000, 64, 8, seed=3, steps=[7])
  np.testing.assert_array_equal(a[2], b[0])
  windows = data.windows(np.arange(10_000) % 256, a, 64)
  assert windows.shape == (5, 8, 65)
  np.testing.assert_array_equal(windows[..., 0], a % 256)


def test_logged_lr_is_the_schedule(quick):
  log = quick[1]['log']
  steps = np.array([r['step'] for r in log])
  assert steps.tolist() == list(range(9, 60, 10))
  expected = wsd_1_sqrt(steps, QUICK.peak_lr, QUICK.steps,
                        round(QUICK.decay_fraction * QUICK.steps),
                        QUICK.warmup_steps)
  np.testing.assert_allclose([r['lr'] for r in log], expected, rtol=1e-6,
                             atol=1e-9)


def test_loss_falls(quick):
  log = quick[1]['log']
  assert log[-1]['loss'] < 0.75 * log[0]['loss']
  assert log[-1]['val_bpb'] < log[0]['val_bpb'] - 0.5
  assert log[-1]['val_bpb'] < 8.0  # Uniform bytes.


def _state(workdir, step):
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  return jax.tree.leaves(ocp.StandardCheckpointer().restore(path))


def test_resume_is_bit_for_bit(quick, tmp_path):
  reference, final = quick
  workdir = str(tmp_path)
  stopped = train.train_and_evaluate(QUICK, workdir, stop_at=35,
                                     progress=False)
  assert stopped['step'] == 30  # Killed after step 35, checkpoint at 30.
  resumed = train.train_and_evaluate(QUICK, workdir, progress=False)
  assert resumed == final
  for got, want in zip(_state(workdir, 60), _state(reference, 60),
                       strict=True):
    np.testing.assert_array_equal(got, want)
  changed = dataclasses.replace(QUICK, peak_lr=0.02)
  with pytest.raises(ValueError, match='another run'):
    train.train_and_evaluate(changed, workdir, progress=False)


def test_cooldown_from_a_checkpoint_lands_on_the_planned_run(quick, tmp_path):
  constant = str(tmp_path / 'constant')
  train.train_and_evaluate(dataclasses.replace(
      QUICK, schedule='constant', steps=48, checkpoint_every=24), constant,
                           progress=False)
  cooled = train.train_and_evaluate(
      QUICK, str(tmp_path / 'cooled'), progress=False,
      cooldown_from=os.path.join(constant, 'checkpoints', '48'))
  assert cooled['log'][-1] == quick[1]['log'][-1]
  with pytest.raises(ValueError, match='peak_lr'):
    train.train_and_evaluate(
        dataclasses.replace(QUICK, peak_lr=0.02), str(tmp_path / 'other'),
        cooldown_from=os.path.join(constant, 'checkpoints', '24'))


def test_traced_schedules_are_the_families():
  steps = 120
  specs = compare.specs(steps, 10)
  assert len(specs) == 13
  branches = tuple(sorted({dataclasses.replace(s, decay_fraction=0.2)
                           for s in specs}, key=repr))
  index = jnp.array([branches.index(dataclasses.replace(
      s, decay_fraction=0.2)) for s in specs])
  peaks = jnp.linspace(0.001, 0.01, len(specs))
  fractions = jnp.array([s.decay_fraction for s in specs])
  t = jnp.arange(steps + 5)
  traced = jax.jit(jax.vmap(lambda i, p, f: schedules.traced_schedule(
      branches, i, p, f)(t)))(index, peaks, fractions)
  for k, spec in enumerate(specs):
    np.testing.assert_allclose(
        traced[k], schedules.make_schedule(float(peaks[k]), spec)(t),
        rtol=1e-5, err_msg=spec.name)  # jit fuses: a few ulps.


def test_rows_of_the_comparison():
  setup = compare.Setup()
  rows = compare.make_rows(setup, suggested=0.005)
  grid = [r for r in rows if r.role == 'grid']
  assert len(grid) == 13 * 3 * 3
  assert len({r.spec.name for r in grid}) == 13
  short = [r for r in rows if r.role == 'short']
  assert [r.spec.total_steps for r in short] == [150] * 2 * 5 * 3
  assert sorted({r.peak for r in short}) == [0.0015, 0.003, 0.006, 0.012,
                                             0.024]
  assert {r.peak for r in rows if r.role == 'suggested'} == {0.005}


def test_sweeps_in_chunks_equal_one_sweep():
  setup = dataclasses.replace(
      compare.QUICK, config=dataclasses.replace(QUICK, steps=12,
                                                warmup_steps=2))
  rows = compare.make_rows(setup, suggested=0.005)[::6]  # 5 of the 28 rows.
  corpus = data.load_corpus()
  whole = compare.run_sweep(dataclasses.replace(
      setup, models_per_sweep=len(rows)), corpus, rows)
  chunked = compare.run_sweep(dataclasses.replace(
      setup, models_per_sweep=2), corpus, rows)  # 2 + 2 + 1 (padded to 2).
  assert chunked.losses.shape == (5, 12) and chunked.evals.shape == (5, 6)
  np.testing.assert_array_equal(chunked.eval_steps, whole.eval_steps)
  for got, want in zip(chunked[:3], whole[:3]):
    np.testing.assert_allclose(got, want, rtol=1e-5)


# The trainer's reliability (docs/trainer_reliability.md, "The LM trainer").

_BAD_FLAGS = [
    (['--batch-size', '0'], '--batch-size', '0'),
    (['--quick', '--batch-size', '0'], '--batch-size', '0'),
    (['--eval-windows', '0'], '--eval-windows', '0'),
    (['--log-every', '0'], '--log-every', '0'),
    (['--checkpoint-every', '0'], '--checkpoint-every', '0'),
    (['--context', '0'], '--context', '0'),
    (['--steps', '0'], '--steps', '0'),
    (['--d-model', '-8'], '--d-model', '-8'),
    (['--num-layers', '0'], '--num-layers', '0'),
    (['--num-heads', '3'], '--num-heads', '3'),
    (['--peak-lr', 'nan'], '--peak-lr', 'nan'),
    (['--peak-lr', '0'], '--peak-lr', '0'),
    (['--warmup-steps', '-1'], '--warmup-steps', '-1'),
    (['--warmup-steps', '300'], '--warmup-steps', '300'),
    (['--decay-fraction', '1.5'], '--decay-fraction', '1.5'),
    (['--decay-fraction', '0.95'], '--decay-fraction', '0.95'),
    (['--weight-decay', 'inf'], '--weight-decay', 'inf'),
    (['--seed', '-1'], '--seed', '-1'),
]


@pytest.mark.parametrize('flags,name,value', _BAD_FLAGS,
                         ids=[' '.join(f) for f, _, _ in _BAD_FLAGS])
def test_bad_flag_is_refused_by_name(tmp_path, capsys, flags, name, value):
  workdir = tmp_path / 'run'
  with pytest.raises(SystemExit) as info:
    train.main([*flags, '--workdir', str(workdir), '--no-progress'])
  assert info.value.code == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert 'error: ' in error and name in error and value in error, error
  assert not workdir.exists()


def test_bad_config_is_refused_before_the_workdir(tmp_path):
  with pytest.raises(ValueError, match='--log-every must be a whole number'):
    train.train_and_evaluate(dataclasses.replace(QUICK, log_every=0),
                             str(tmp_path / 'run'), progress=False)
  with pytest.raises(ValueError, match='--context must be at most'):
    train.train_and_evaluate(dataclasses.replace(QUICK, context=10**9),
                             str(tmp_path / 'run'), progress=False)
  assert not (tmp_path / 'run').exists()


def _strict_json(text):
  def refuse(constant):
    raise ValueError(f'{constant} is not JSON')
  return json.loads(text, parse_constant=refuse)


def test_metrics_are_json_when_the_loss_is_nan(tmp_path, capsys):
  workdir = tmp_path / 'run'
  assert train.main([*TINY, '--peak-lr', '1e30', '--workdir',
                     str(workdir)]) == 0  # diverges at once
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  records = [_strict_json(line) for line in lines]
  assert [r['step'] for r in records] == [0, 1]
  assert records[-1]['loss'] is None and records[-1]['val_bpb'] is None
  final = _strict_json(capsys.readouterr().out.strip().splitlines()[-1])
  assert final == {'val_bpb': None, 'step': 2}


def test_damaged_newest_checkpoint_falls_back(quick, tmp_path, capsys):
  reference, final = quick
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  state = os.path.join(workdir, 'checkpoints', '60', 'state')
  largest = max((os.path.join(folder, name)
                 for folder, _, names in os.walk(state) for name in names),
                key=os.path.getsize)
  with open(largest, 'r+b') as f:
    f.seek(os.path.getsize(largest) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))

  resumed = train.train_and_evaluate(QUICK, workdir, progress=False)

  output = capsys.readouterr().out
  assert 'checkpoints/60 is damaged' in output and 'does not match' in output
  assert resumed == final  # steps 30-59 again, from checkpoint 30
  with open(os.path.join(workdir, 'metrics.jsonl')) as f, open(
      os.path.join(reference, 'metrics.jsonl')) as g:
    assert f.read() == g.read()
  moved, = os.listdir(os.path.join(workdir, checkpointing.CORRUPT_SUBDIR))
  assert moved.startswith('60-')




def test_full_disk_is_one_line_and_leaves_nothing_partial(tmp_path):
  # 64 KiB: the metrics fit, the checkpoint's arrays (180 KB) do not.
  workdir = str(tmp_path / 'run')
  result = file_size_limit.run(64 * 1024, 'examples.lm.train', *TINY,
                               '--workdir', workdir)

  assert result.returncode == 1, result.stderr
  assert result.stderr.count('\n') == 1, result.stderr
  assert result.stderr.startswith(
      f'error: Cannot write {workdir}/checkpoints/staging-2: file too large')
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'metrics.jsonl',
                                         checkpointing.LOCK_FILE]
  assert not os.listdir(os.path.join(workdir, 'checkpoints'))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert [_strict_json(line)['step'] for line in f] == [0, 1]
