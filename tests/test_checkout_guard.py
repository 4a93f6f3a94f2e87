"""The run-wide guard of tests/conftest.py: a test run that writes into the
checkout fails, naming the paths. Here on a planted temporary git repo."""

import os
import pathlib
import subprocess

import conftest  # tests/conftest.py (pytest puts tests/ on sys.path)


def _git(repo, *args):
  subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                 env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                          GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"))


def _write(repo: pathlib.Path, path: str, text: str) -> None:
  (repo / path).parent.mkdir(parents=True, exist_ok=True)
  (repo / path).write_text(text)


def test_guard_names_what_a_run_wrote_and_nothing_else(tmp_path):
  repo = tmp_path / "checkout"
  repo.mkdir()
  _git(repo, "init", "-q")
  _write(repo, ".gitignore", "/runs/\n.venv/\n__pycache__/\n/docs/_build/\n")
  _write(repo, "lib.py", "x = 1\n")
  _git(repo, "add", ".gitignore", "lib.py")
  _git(repo, "commit", "-q", "-m", "init")
  # What the user had before the run: a demo result and a file in progress.
  _write(repo, "runs/demo/results.md", "the user's demo\n")
  _write(repo, "notes.txt", "draft\n")
  before = conftest.checkout_snapshot(repo)
  assert set(before) == {"runs/demo/results.md", "notes.txt"}

  # A clean run: the same snapshot, no change.
  assert conftest.checkout_changes(before, conftest.checkout_snapshot(repo)) == []

  # A run that writes: a new ignored file, a rewritten one inside an ignored
  # folder that existed before (the demo's results), a tracked edit, a new
  # untracked file, a deleted one; build and cache folders do not count.
  _write(repo, "runs/docs_screenshots/index.png", "png")
  _write(repo, "runs/demo/results.md", "a 4-step test run overwrote it\n")
  _write(repo, "lib.py", "x = 2\n")
  _write(repo, "experiments/out.json", "{}")
  (repo / "notes.txt").unlink()
  _write(repo, ".venv/lib/site.py", "")
  _write(repo, ".venv-other/x", "")
  _write(repo, "pkg/__pycache__/m.pyc", "")
  _write(repo, "docs/_build/html/index.html", "")
  _write(repo, "mimuon_optax.egg-info/PKG-INFO", "")
  changed = conftest.checkout_changes(before, conftest.checkout_snapshot(repo))
  assert changed == ["experiments/out.json", "lib.py", "notes.txt",
                     "runs/demo/results.md", "runs/docs_screenshots/index.png"]


def test_guard_is_off_outside_a_git_checkout(tmp_path):
  assert conftest.checkout_snapshot(tmp_path) is None
