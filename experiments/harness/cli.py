"""Command-line flags from a config dataclass: one `--flag` per field.

  @dataclasses.dataclass(frozen=True)
  class Config:
    steps: int = field(300, "training steps", minimum=1)

  cfg = parse_config(Config, "what the script does")

Types come from the annotations (bool -> `--flag/--no-flag`, `tuple[X, ...]`
-> one or more X, `X | None` accepts `none`); `choices`, `minimum` and
`positive` are checked by argparse, a float flag never accepts NaN, and a
`ValueError` from the dataclass's `__post_init__` becomes a one-line usage
error (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from typing import Any, Sequence


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
  """The config, or a one-line usage error (exit 2) for a bad combination."""
  try:
    return _to_config(config_cls, values)
  except ValueError as e:
    parser.error(str(e))


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
