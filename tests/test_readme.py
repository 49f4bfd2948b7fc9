"""The README's commands and code are what CI and users run."""

import ast
import collections
import pathlib
import re
import sys

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


PYTHON_BLOCKS = [block for block in _blocks('python') if 'optax_clr' in block]
# ``print(...)  # (3, 8000)``: a trailing comment that is a Python literal is
# the output the README shows for that line; prose comments are not literals.
SHOWN = re.compile(r'^\s*print\(.*\)\s*#\s*(?P<shown>.+?)\s*$')


def shown_outputs(source):
  """``{line number: shown value}`` for every print line that shows one."""
  shown = {}
  for number, line in enumerate(source.splitlines(), start=1):
    match = SHOWN.match(line)
    if not match:
      continue
    try:
      shown[number] = ast.literal_eval(match.group('shown'))
    except (ValueError, SyntaxError):
      continue  # prose, not an output
  return shown


def run_capturing_prints(source):
  """Runs a README block; returns ``{line number: [printed text, ...]}``."""
  printed = collections.defaultdict(list)

  def capture(*args, sep=' ', end='\n', **kwargs):
    del end, kwargs
    line = sys._getframe(1).f_lineno  # pylint: disable=protected-access
    printed[line].append(sep.join(str(arg) for arg in args))

  namespace = {'__name__': '__readme__', 'print': capture}
  exec(compile(source, 'README.md', 'exec'), namespace)
  return printed


def test_shown_outputs_are_found():
  # Guards the parser: the quickstart shows the sweep's shape.
  assert {(3, 8000)} <= {
      value for block in PYTHON_BLOCKS for value in shown_outputs(block)
      .values()}
  assert shown_outputs('print(x)  # the rate used\nprint(y)  # 0.5\n') == {
      2: 0.5}


@pytest.mark.parametrize(
    'source', PYTHON_BLOCKS,
    ids=lambda block: block.strip().splitlines()[0][:40],
)
def test_python_blocks_run_and_print_what_they_show(source, tmp_path,
                                                     monkeypatch):
  monkeypatch.chdir(tmp_path)
  printed = run_capturing_prints(source)
  for line, shown in shown_outputs(source).items():
    assert len(printed[line]) == 1, (line, printed[line])
    text = printed[line][0]
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      assert text == str(shown), (line, text, shown)
    else:
      assert value == pytest.approx(shown, rel=1e-6), (line, text, shown)


def test_every_public_name_has_a_readme_row_and_a_doctest():
  import optax_clr

  for name in optax_clr.__all__:
    obj = getattr(optax_clr, name)
    assert f'`{name}' in README, f'{name} is missing from the README'
    if callable(obj) and not isinstance(obj, type):
      assert obj.__doc__ and '>>>' in obj.__doc__, f'{name} has no doctest'
