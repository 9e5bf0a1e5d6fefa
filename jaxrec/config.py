"""Typed configs and the absl flags generated from them.

A config is a frozen dataclass. A field declared with `option(default, help)` is a command-line
flag of the same name; a field whose default is itself a config (`nested(Config(), prefix)`)
contributes that config's options under `prefix` (`OracleConfig.temperature` inside a config
with `oracle: OracleConfig = nested(OracleConfig(), "oracle_")` is `--oracle_temperature`).
Plain fields (no `option`) are not flags. So a CLI is

    config.define_flags(TrainConfig)             # at import
    cfg = config.from_flags(TrainConfig)         # in main

and a new field is one line in its config. Two configs defined in one program may share a flag
(the same name, type and default); anything else is refused when the flags are defined.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator

from absl import flags

from jaxrec.errors import ConfigError
from jaxrec.io import read_json_object


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None,  # noqa: A002
           flag: str = ""):
  """A config field that is also a flag: `help` is its help text; a str field with `choices`
  becomes an enum flag; `flag` names the flag where it differs from the field."""
  return dataclasses.field(default=default,
                           metadata={"help": help, "choices": choices, "flag": flag})


def nested(default: Any, prefix: str = ""):
  """A config inside a config; its options are flags named `prefix + field`."""
  return dataclasses.field(default=default, metadata={"prefix": prefix})


def _flag_name(prefix: str, f: dataclasses.Field) -> str:
  return prefix + (f.metadata["flag"] or f.name)


def _walk(cls, prefix: str = "") -> Iterator[tuple[str, str, dataclasses.Field]]:
  """(path, flag name, field) of every option of `cls`, nested configs included; path is the
  dotted field path ("agent_cfg.oracle.temperature")."""
  for f in dataclasses.fields(cls):
    if "prefix" in f.metadata:
      for path, name, g in _walk(type(f.default), prefix + f.metadata["prefix"]):
        yield f"{f.name}.{path}", name, g
    elif "help" in f.metadata:
      yield f.name, _flag_name(prefix, f), f


def options(cls, skip: tuple[str, ...] = ()) -> dict[str, str]:
  """{field path: flag name} of the options `define_flags(cls, skip)` defines."""
  return {path: name for path, name, _ in _walk(cls) if not _skipped(path, skip)}


def _skipped(path: str, skip: tuple[str, ...]) -> bool:
  return any(path == s or path.startswith(s + ".") for s in skip)


def field_kind(f: dataclasses.Field) -> str:
  """A field's annotation as one spaceless string ("int|None", "tuple[int,...]"): the
  annotations are strings here (`from __future__ import annotations`)."""
  return str(f.type).replace(" ", "")


def _define(name: str, f: dataclasses.Field, fv: flags.FlagValues) -> None:
  help_, default, kind = f.metadata["help"], f.default, field_kind(f)
  if kind == "str" and f.metadata.get("choices"):
    flags.DEFINE_enum(name, default, list(f.metadata["choices"]), help_, flag_values=fv)
  elif kind == "str":
    flags.DEFINE_string(name, default, help_, flag_values=fv)
  elif kind == "bool":
    flags.DEFINE_bool(name, default, help_, flag_values=fv)
  elif kind in ("int", "int|None"):
    flags.DEFINE_integer(name, default, help_, flag_values=fv)
  elif kind in ("float", "float|None"):
    flags.DEFINE_float(name, default, help_, flag_values=fv)
  elif kind == "tuple[str,...]":
    flags.DEFINE_list(name, list(default), help_, flag_values=fv)
  elif kind == "tuple[int,...]":
    flags.DEFINE_list(name, [str(d) for d in default], help_, flag_values=fv)
  else:
    raise TypeError(f"option {name}: no flag type for {f.type}")


def define_flags(cls, skip: tuple[str, ...] = (), flag_values: flags.FlagValues = flags.FLAGS):
  """Defines a flag for every option of `cls` (nested configs included) but the field paths in
  `skip` ("agent_cfg.buffer_size", or a whole nested config: "agent_cfg.oracle"). A flag some
  other config already defined is shared when its default agrees, else a TypeError."""
  for path, name, f in _walk(cls):
    if _skipped(path, skip):
      continue
    if name in flag_values:
      have = flag_values[name].default
      if have != f.default:
        raise TypeError(f"flag --{name}: defined with default {have!r}, {cls.__name__}.{path} "
                        f"has {f.default!r}")
      continue
    _define(name, f, flag_values)


def from_flags(cls, flag_values: flags.FlagValues = flags.FLAGS, _prefix: str = "", **override):
  """`cls` with every option read from its (parsed) flag; a flag not defined keeps the field's
  default; `override` replaces top-level fields."""
  kwargs = {}
  for f in dataclasses.fields(cls):
    if f.name in override:
      continue
    if "prefix" in f.metadata:
      kwargs[f.name] = from_flags(type(f.default), flag_values, _prefix + f.metadata["prefix"])
    elif "help" in f.metadata and _flag_name(_prefix, f) in flag_values:
      name = _flag_name(_prefix, f)
      value = flag_values[name].value
      if field_kind(f) == "tuple[int,...]":
        value = _ints(name, value)
      kwargs[f.name] = tuple(value) if isinstance(f.default, tuple) else value
  return cls(**kwargs, **override)


def _ints(name: str, values: list[str]) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ConfigError(f"--{name} must be a comma-separated list of integers, got "
                      f"{','.join(values)!r}") from None


def set_on_command_line(cls, flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, str]:
  """{field path: flag name} of the options of `cls` the user passed."""
  return {path: name for path, name, _ in _walk(cls)
          if name in flag_values and flag_values[name].present}


def refuse(names: list[str], why: str) -> None:
  """A one-line ConfigError naming the flags `names` (sorted) and why they do not apply."""
  if names:
    listed = ", ".join(f"--{n}" for n in sorted(names))
    raise ConfigError(f"{listed} {'does' if len(names) == 1 else 'do'} not apply {why}")


def check_same_shaping(cfg, path: str, keys: tuple[str, ...], holds: str,
                       flag_prefix: str = "--") -> None:
  """A workdir holds one experiment: `path` (the JSON of an earlier run's `cfg`) must agree
  with `cfg` on `keys`, the options that shape its results; else a one-line ConfigError
  naming the first that differs. No file yet: nothing to check."""
  if not os.path.isfile(path):
    return
  old = read_json_object(path)
  new = json.loads(json.dumps(dataclasses.asdict(cfg)))
  for k in keys:
    if old.get(k) != new.get(k):
      raise ConfigError(f"--workdir={cfg.workdir} holds {holds} with other {flag_prefix}{k} "
                        f"({old.get(k)!r}, not {new.get(k)!r}); use another --workdir")
