"""The committed demo results are what today's code writes, and the README
and the docs show them as committed: none of the three can drift.

`experiments/results/compare` is written by the command `make demo` runs
(`python -m experiments.compare --preset demo --out
experiments/results/compare`); results.json keeps everything results.md is
made of, so the current `compare.results_md` must rebuild results.md from it
byte for byte. A change of the table's format then fails here until the
folder is regenerated, and the pages fail until they carry the new table.
"""

import json
import pathlib

import pytest

from experiments import compare

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMPARE = ROOT / 'experiments' / 'results' / 'compare'
PAGES = [ROOT / 'README.md', ROOT / 'docs' / 'getting_started.md']


def _saved():
  saved = json.loads((COMPARE / 'results.json').read_text())
  cfg = compare.CompareConfig(**{
      k: tuple(v) if isinstance(v, list) else v
      for k, v in saved['config'].items()})
  return saved, cfg


def table_lines(text, first_header='optimizer'):
  """The lines of the first markdown table whose header starts so."""
  lines = text.splitlines()
  start = next(i for i, l in enumerate(lines)
               if l.startswith(f'| {first_header} |'))
  end = next((i for i in range(start, len(lines))
              if not lines[i].startswith('|')), len(lines))
  return lines[start:end]


def test_committed_results_md_is_what_the_code_writes():
  saved, cfg = _saved()
  assert cfg.preset == 'demo'
  assert saved['command'].startswith(
      'python -m experiments.compare --preset demo --out'
      ' experiments/results/compare')
  rebuilt = compare.results_md(cfg, saved['runs'], saved['total_wall_s'],
                               saved['command'], saved['env'])
  assert (COMPARE / 'results.md').read_text() == rebuilt


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_pages_show_the_committed_table(page):
  saved, _ = _saved()
  text = page.read_text()
  assert table_lines(text) == table_lines((COMPARE / 'results.md').read_text())
  words = ' '.join(text.split())
  assert f'{saved["total_wall_s"]:.0f} s for the three runs' in words
  mimuon = next(r for r in saved['runs'] if r['optimizer'] == 'mimuon')
  assert f'Muon step on {100 * mimuon["orth_frac"]:.0f}% of' in words
