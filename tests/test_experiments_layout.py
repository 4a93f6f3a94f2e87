"""experiments/ is studies on a harness: imports run one way, with no cycle.

Read from the source (ast), nothing is imported or run: every `import` and
`from ... import` of an `experiments` module, at any depth of a file
(functions and `if TYPE_CHECKING:` blocks included).
"""

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / 'experiments'


def _module_name(path):
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules():
  """{dotted name: path} of every module under experiments/."""
  return {_module_name(p): p for p in sorted(EXPERIMENTS.rglob('*.py'))}


def _resolve(name, modules):
  """The module `name` refers to: itself, or the package holding it."""
  while name not in modules and '.' in name:
    name = name.rsplit('.', 1)[0]
  return name if name in modules else None


def imports_of(path, modules):
  """The experiments modules that the file at `path` imports."""
  here = _module_name(path)
  package = here if path.name == '__init__.py' else here.rsplit('.', 1)[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        anchor = package.split('.')
        anchor = anchor[:len(anchor) - node.level + 1]
        base = '.'.join(anchor + ([base] if base else []))
      names = [f'{base}.{a.name}' for a in node.names]
    else:
      continue
    for name in names:
      target = _resolve(name, modules)
      if target is not None and target != here:
        found.add(target)
  return found


def import_graph():
  modules = _modules()
  return {name: imports_of(path, modules) for name, path in modules.items()}


def find_cycle(graph):
  """One import cycle as a list of modules, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    state[node] = 'done'
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_walker_sees_every_kind_of_import(tmp_path, monkeypatch):
  pkg = tmp_path / 'experiments'
  (pkg / 'harness').mkdir(parents=True)
  for name in ('__init__.py', 'a.py', 'b.py', 'harness/__init__.py',
               'harness/cli.py'):
    (pkg / name).write_text('')
  (pkg / 'a.py').write_text(
      'from experiments import b\nfrom experiments.harness import cli\n')
  (pkg / 'harness' / 'cli.py').write_text(
      'from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n'
      '  from experiments import a\n'
      'def f():\n  from . import cli as self_\n  import experiments.b\n')
  monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
  monkeypatch.setattr(sys.modules[__name__], 'EXPERIMENTS', pkg)
  graph = import_graph()
  assert graph['experiments.a'] == {'experiments.b', 'experiments.harness.cli'}
  assert graph['experiments.harness.cli'] == {'experiments.a', 'experiments.b'}
  assert find_cycle(graph) == ['experiments.a', 'experiments.harness.cli',
                               'experiments.a']


def test_no_import_cycle_in_experiments():
  graph = import_graph()
  assert len(graph) > 20  # the walker found the tree
  assert find_cycle(graph) is None, find_cycle(graph)


def test_the_harness_never_imports_a_study():
  graph = import_graph()
  harness = [m for m in graph if m.startswith('experiments.harness')]
  assert 'experiments.harness.cli' in harness
  upward = {m: sorted(t for t in graph[m]
                      if not t.startswith('experiments.harness'))
            for m in harness}
  assert not any(upward.values()), upward


def test_studies_are_modules_directly_under_experiments():
  """Every non-harness module is one file in experiments/ (so that
  `python -m experiments.NAME` runs it), and the harness is one package."""
  nested = [p for p in EXPERIMENTS.rglob('*.py')
            if p.parent != EXPERIMENTS and
            EXPERIMENTS / 'harness' not in p.parents]
  assert not nested, nested
  assert (EXPERIMENTS / 'harness' / '__init__.py').exists()
