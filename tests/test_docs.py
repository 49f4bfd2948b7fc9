"""The API reference documents every public name."""

import pathlib
import re

import optax_clr

DOCS = pathlib.Path(__file__).resolve().parent.parent / 'docs'


def _documented(module):
  """Names given to autodoc directives under ``.. module:: module``."""
  text = (DOCS / 'api.rst').read_text(encoding='utf-8')
  sections = re.split(r'^\.\. (?:current)?module:: (\S+)$', text, flags=re.M)
  names = set()
  for name, body in zip(sections[1::2], sections[2::2]):
    if name == module:
      names |= set(re.findall(r'^\.\. auto(?:function|class):: (\w+)$', body,
                              flags=re.M))
  return names


def test_every_public_name_is_in_the_api_reference():
  assert set(optax_clr.__all__) <= _documented('optax_clr')


def test_every_nnx_name_is_in_the_api_reference():
  # The names are read from the source: importing optax_clr.nnx needs Flax.
  source = (DOCS.parent / 'optax_clr' / 'nnx.py').read_text(encoding='utf-8')
  public = set(re.findall(r"'(\w+)'", re.search(
      r'^__all__ = \((.*?)\)', source, flags=re.M | re.S).group(1)))
  assert {'range_test', 'split_loss', 'sweep', 'merge'} <= public
  assert public <= _documented('optax_clr.nnx')


def test_the_guard_sees_a_missing_name():
  assert 'not_a_name' not in _documented('optax_clr')
  assert 'triangular_schedule' in _documented('optax_clr')
  assert 'triangular_schedule' not in _documented('optax_clr.nnx')
