"""The README's commands and code are what CI and users run."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / 'README.md').read_text(encoding='utf-8')


def _blocks(language):
  return re.findall(rf'```{language}\n(.*?)```', README, flags=re.DOTALL)


def test_ci_runs_the_readme_install_and_test_commands():
  setup = _blocks('bash')[0].strip().splitlines()
  ci_script = (ROOT / '.ci' / 'run').read_text(encoding='utf-8')
  ci_lines = [line.strip() for line in ci_script.splitlines()]
  assert setup, 'the first bash block of the README holds the set-up commands'
  for command in setup:
    assert command.strip() in ci_lines, command


@pytest.mark.parametrize(
    'source',
    [block for block in _blocks('python') if 'optax_clr' in block],
    ids=lambda block: block.strip().splitlines()[0][:40],
)
def test_python_blocks_run(source, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  exec(compile(source, 'README.md', 'exec'), {'__name__': '__readme__'})


def test_every_public_name_has_a_readme_row_and_a_doctest():
  import optax_clr

  for name in optax_clr.__all__:
    obj = getattr(optax_clr, name)
    assert f'`{name}' in README, f'{name} is missing from the README'
    if callable(obj) and not isinstance(obj, type):
      assert obj.__doc__ and '>>>' in obj.__doc__, f'{name} has no doctest'
