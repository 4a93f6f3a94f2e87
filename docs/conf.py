"""Sphinx configuration of the mimuon_optax documentation (`make docs`).

Pages are MyST Markdown; the notebooks are rendered with their stored
outputs and never executed here (the test suite executes them); the API
reference is generated from the docstrings by autodoc/autosummary, and
their doctests run under pytest (`--doctest-modules`), not in this build.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # The package, from this checkout.
sys.path.insert(0, str(ROOT / 'docs' / 'ext'))

import mimuon_optax  # pylint: disable=g-import-not-at-top,wrong-import-position


def _repository_url() -> str:
  """The repository URL from pyproject.toml's [project.urls] (one place)."""
  text = (ROOT / 'pyproject.toml').read_text()
  return re.search(r'^Repository\s*=\s*"([^"]+)"', text, re.M).group(1)


project = 'mimuon_optax'
author = 'The mimuon_optax authors'
copyright = '2026, The mimuon_optax authors'  # pylint: disable=redefined-builtin
version = release = mimuon_optax.__version__
REPOSITORY = _repository_url()

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.mathjax',
    # MathJax from the docs build, not from a CDN: the site's math renders on
    # a machine without internet (ours, CI, clusters). The package ships
    # MathJax 3.2.2 (tex-chtml and its fonts, ~24 MB) in its wheel, copies it
    # to _static/mathjax/ and points mathjax_path there; it needs nothing at
    # build time. sphinxcontrib-katex ships KaTeX's scripts but takes its CSS
    # and fonts from a CDN, and its prerendering needs node; Debian's
    # libjs-mathjax needs apt (root) and is MathJax 2.
    'sphinx-mathjax-offline',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
    'myst_nb',
    'coverage_check',
]

source_suffix = {'.md': 'myst-nb', '.ipynb': 'myst-nb', '.rst': 'restructuredtext'}
master_doc = 'index'
# snippets/: text included in several pages (the verdict), never a page.
exclude_patterns = ['_build', 'README.md', 'notebooks/.ipynb_checkpoints',
                    'snippets']

# Markdown: $...$ and $$...$$ math, ::: fences, anchors for ## and ###, and
# `repo:PATH` links to files of the repository (results, COMMAND.md files).
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence']
myst_heading_anchors = 3
myst_url_schemes = {
    'http': None, 'https': None, 'mailto': None,
    'repo': f'{REPOSITORY}/blob/main/{{{{path}}}}',
}

# Notebooks: rendered from what is stored (outputs are stripped in git).
nb_execution_mode = 'off'

# API reference.
autosummary_generate = True
# Types are in the docstrings' prose; chex's unions would flood the pages.
autodoc_typehints = 'none'
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
add_module_names = False

html_theme = 'sphinx_book_theme'
html_title = 'mimuon_optax'
html_theme_options = {
    'repository_url': REPOSITORY,
    'use_repository_button': True,
    'show_toc_level': 2,
}
