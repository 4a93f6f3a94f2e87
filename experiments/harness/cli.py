"""Command-line flags from a config dataclass: one `--flag` per field.

  @dataclasses.dataclass(frozen=True)
  class Config:
    steps: int = field(300, "training steps", minimum=1)

  cfg = parse_config(Config, "what the script does")

A study's `main` is one call: `study_main(Config, __doc__, run, argv)` parses
the flags, checks that `--out` can be written, builds the command line that
reproduces the run, calls `run(cfg, command)` and prints where the results
are.

Types come from the annotations (bool -> `--flag/--no-flag`, `tuple[X, ...]`
-> one or more X, `X | None` accepts `none`); `choices`, `minimum` and
`positive` are checked by argparse, a float flag never accepts NaN, and a
`ValueError` from the dataclass's `__post_init__`, and an `out` field naming
a folder that cannot be written, become a one-line error (exit 2) before
any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import shlex
import sys
import tempfile
import types
import typing
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")


def field(default: Any, help: str, *, choices: Sequence[Any] | None = None,  # noqa: A002
          minimum: float | None = None, positive: bool = False,
          **kwargs) -> Any:
  """A dataclass field whose `help` becomes the `--flag`'s help text.

  `choices` (of the value, or of each element of a tuple field), `minimum`
  (value >= minimum) and `positive` (a finite value > 0: learning rates,
  scales) are checked by argparse: a bad value is a one-line error.
  """
  metadata = {"help": help, "choices": choices, "minimum": minimum,
              "positive": positive}
  return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _prog() -> str | None:
  """`python -m experiments.NAME` when run with -m, else argparse's default."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return f"python -m {spec.name}" if spec is not None else None


def _typed(tp: type, optional: bool, minimum: float | None,
           positive: bool = False):
  """argparse `type=`: `tp`, the word `none` if optional, `>= minimum`,
  finite and `> 0` if `positive`; a float is never NaN."""
  def parse(text: str):
    if optional and text.lower() == "none":
      return None
    value = tp(text)
    if isinstance(value, float) and math.isnan(value):
      raise argparse.ArgumentTypeError(f"must be a number, got {text}")
    if positive and not (0 < value < math.inf):
      raise argparse.ArgumentTypeError(
          f"must be positive and finite, got {text}")
    if minimum is not None and value < minimum:
      raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
    return value
  parse.__name__ = tp.__name__  # argparse names the type in its errors
  return parse


def _strip_optional(tp):
  if typing.get_origin(tp) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1:
      return args[0], True
  return tp, False


def build_parser(config_cls: type, description: str) -> argparse.ArgumentParser:
  """One `--flag` per field (underscores -> dashes), typed from annotations.

  bool -> `--flag/--no-flag`; `tuple[X, ...]` -> one or more X; `X | None`
  accepts the word `none`.
  """
  parser = argparse.ArgumentParser(
      prog=_prog(), description=description,
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  hints = typing.get_type_hints(config_cls)
  for f in dataclasses.fields(config_cls):
    tp, optional = _strip_optional(hints[f.name])
    flag = "--" + f.name.replace("_", "-")
    kwargs = dict(default=f.default, help=f.metadata.get("help", ""),
                  dest=f.name)
    minimum = f.metadata.get("minimum")
    positive = f.metadata.get("positive", False)
    if f.metadata.get("choices") is not None:
      kwargs["choices"] = f.metadata["choices"]
    if tp is bool:
      kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(tp) is tuple:
      elem = typing.get_args(tp)[0]
      kwargs.update(nargs="+", type=_typed(elem, False, minimum, positive))
    else:
      kwargs["type"] = _typed(tp, optional, minimum, positive)
    parser.add_argument(flag, **kwargs)
  return parser


def parse_config(config_cls: type, description: str,
                 argv: Sequence[str] | None = None) -> Any:
  parser = build_parser(config_cls, description)
  return _checked(parser, config_cls, vars(parser.parse_args(argv)))


def parse_with_presets(config_cls: type, description: str,
                       presets: dict[str, dict[str, Any]],
                       argv: Sequence[str] | None = None) -> Any:
  """Like `parse_config`, where `--preset NAME` first replaces the defaults
  by `presets[NAME]` (flags given explicitly still win)."""
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--preset", default=None)
  known, _ = pre.parse_known_args(argv)
  parser = build_parser(config_cls, description)
  if known.preset is not None:
    if known.preset not in presets:
      parser.error(f"--preset must be one of {sorted(presets)}")
    parser.set_defaults(**presets[known.preset])
  return _checked(parser, config_cls, vars(parser.parse_args(argv)))


def _checked(parser: argparse.ArgumentParser, config_cls: type,
             values: dict[str, Any]) -> Any:
  """The config, or a one-line usage error (exit 2) for a bad combination
  or an `out` folder that cannot be written."""
  try:
    cfg = _to_config(config_cls, values)
  except ValueError as e:
    parser.error(str(e))
  out = getattr(cfg, "out", None)
  if isinstance(out, str):
    check_out(parser, out)
  return cfg


def check_out(parser: argparse.ArgumentParser, out: str) -> None:
  """Exit 2 with one line (no usage: the flags are fine) if `--out` cannot
  be written; called before any work."""
  problem = unwritable(out)
  if problem is not None:
    parser.exit(2, f"{parser.prog}: error: --out {out}: {problem}\n")


def unwritable(folder: str | os.PathLike) -> str | None:
  """Why `folder` cannot be (created and) written, or None if it can.

  Tried for real, leaving nothing behind: a temporary folder is made and
  removed in `folder`, or in its nearest existing parent when `folder` does
  not exist yet (permission bits say nothing for root or on /proc).
  """
  path = pathlib.Path(folder).absolute()
  existing = path
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    return f"{existing} is not a folder"
  try:
    os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=existing))
  except OSError as e:
    return f"cannot create a folder in {existing} ({e.strerror})"
  return None


def study_main(config_cls: type, doc: str, run: Callable[[Any, str], T],
               argv: Sequence[str] | None = None, *,
               presets: dict[str, dict[str, Any]] | None = None) -> T:
  """The `main` of a study: flags -> config -> `run(cfg, command)`.

  The first paragraph of `doc` describes the flags; `presets` adds
  `--preset NAME` (`parse_with_presets`). A bad flag, or an `--out` that
  cannot be written, is a one-line error (exit 2) before any work.
  `command` is the `python -m experiments.NAME ...` line that reproduces the
  run (written to COMMAND.md by the studies); the folder of the results is
  printed last.
  """
  description = doc.split("\n\n")[0]
  if presets is None:
    cfg = parse_config(config_cls, description, argv)
  else:
    cfg = parse_with_presets(config_cls, description, presets, argv)
  module = config_cls.__module__
  if module == "__main__":  # python -m experiments.NAME
    module = sys.modules["__main__"].__spec__.name
  args = sys.argv[1:] if argv is None else list(argv)
  result = run(cfg, shlex.join(["python", "-m", module, *args]))
  print(f"results: {pathlib.Path(cfg.out).resolve()}")
  return result


def _to_config(config_cls: type, values: dict[str, Any]) -> Any:
  """argparse values -> the dataclass (lists back to tuple fields)."""
  hints = typing.get_type_hints(config_cls)
  for name, value in values.items():
    if (typing.get_origin(_strip_optional(hints[name])[0]) is tuple
        and value is not None):
      values[name] = tuple(value)
  return config_cls(**values)


def config_dict(cfg: Any) -> dict[str, Any]:
  return dataclasses.asdict(cfg)
