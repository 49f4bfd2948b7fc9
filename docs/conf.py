"""Sphinx configuration of the optax_clr documentation.

Build it (warnings are errors, as in CI) and open it:

  pip install -e ".[docs,flax,plot]"
  python -m sphinx -W --keep-going -b html docs docs/_build/html
  python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest
  python -m webbrowser docs/_build/html/index.html
"""

import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # optax_clr without an install.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import optax_clr  # pylint: disable=g-import-not-at-top,wrong-import-position

project = 'optax_clr'
author = 'The optax_clr authors'
copyright = '2026, The optax_clr authors'  # pylint: disable=redefined-builtin
release = optax_clr.__version__
version = release

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.doctest',
    'myst_parser',
]

source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
root_doc = 'index'
# The committed result tables are fragments: the report pages include them.
exclude_patterns = [
    '_build',
    'README.md',
    'compare/*.md',
    'find_lr_report/*.md',
    'lm/*.md',
    'saddle_point/*.md',
]

# Google-style docstrings; the formulas are ``.. math::`` blocks (MathJax).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_default_options = {'members': False}
add_module_names = False

myst_enable_extensions = ['dollarmath', 'colon_fence']
myst_heading_anchors = 3

# Doctests: the docstrings' examples run as written, on the CPU.
doctest_global_setup = """
import os
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
"""
doctest_test_doctest_blocks = 'default'

html_theme = 'furo'
html_title = f'optax_clr {release}'
html_static_path = []
