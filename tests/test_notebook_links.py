"""Notebooks open in Colab from the repository named in pyproject.toml."""

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'notebooks').glob('*.ipynb'))


def repository_url() -> str:
  text = (ROOT / 'pyproject.toml').read_text()
  urls = text.split('[project.urls]', 1)[1].split('\n[', 1)[0]
  return re.search(r'^Repository\s*=\s*"([^"]+)"', urls, re.M).group(1)


def test_there_are_notebooks():
  assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_badge_and_clone_use_the_project_url(path):
  url = repository_url()
  owner_repo = url.removeprefix('https://github.com/')
  cells = json.loads(path.read_text())['cells']
  intro, setup = (''.join(c['source']) for c in cells[:2])
  badge = (f'https://colab.research.google.com/github/{owner_repo}/blob/main/'
           f'notebooks/{path.name}')
  assert f']({badge})' in intro
  assert f'REPO = "{url}"' in setup
