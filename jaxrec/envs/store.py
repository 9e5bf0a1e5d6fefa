"""The env directory on disk: its typed metadata (EnvMeta), loading either side's env and
params checked against their static shapes, and the registry of env kinds.

An env directory (what every training CLI takes as --env; jaxrec.envs.build writes it):
  env.json       format, dataset name + fingerprint, env kind, build config, fit reports
  dataset.npz    the preprocessed dataset (item catalog for prompts, sequences)
  train/, test/  params/ (orbax checkpoint of the env params) + env.json (static shapes)
  dorl/          only with --dorl_ensemble (peer protocol): dorl.npz + dorl.json, DORL's
                 ensemble variance and entropy tables (jaxrec.envs.dorl; its own format number)

Each env kind is registered once in KIND_SPECS (its env from the static shapes, its params
type and fields, its own shape checks) instead of isinstance switches in the loader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxrec.data.dataset import Dataset
from jaxrec.envs.base import WINDOW_RULES, QuitParams, RecEnv
from jaxrec.envs.matrix import MatrixEnv, MatrixParams
from jaxrec.envs.sequential import SequentialEnv, SequentialParams
from jaxrec.errors import ConfigError, DataError
from jaxrec.io import atomic_write_text, one_line, read_json_object
from jaxrec.usermodels import sequential as sq

FORMAT = 1
KINDS = ("sequential", "matrix")


@dataclasses.dataclass(frozen=True)
class EnvMeta:
  """env.json of an env directory, checked; the fields consumers read, typed."""
  kind: str  # one of KINDS
  dataset: str
  fingerprint: str
  max_len: int  # episode truncation (build.max_len)
  protocol: str  # paper | peer
  build: dict  # the BuildConfig it was built with, as written
  reports: dict  # {side: fit / calibration report}
  peer: dict | None  # protocol peer: leave rule and the true matrix's source
  raw: dict  # the whole env.json

  @classmethod
  def of(cls, meta: dict) -> "EnvMeta":
    return cls(kind=meta["kind"], dataset=meta["dataset"], fingerprint=meta["fingerprint"],
               max_len=int(meta["build"]["max_len"]), protocol=meta.get("protocol", "paper"),
               build=meta["build"], reports=meta.get("reports", {}), peer=meta.get("peer"),
               raw=meta)


def fingerprint(ds: Dataset) -> str:
  h = hashlib.sha256()
  for a in (ds.item_keys, ds.user_keys, ds.seq_items, ds.offsets):
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()[:16]


def save_params(directory: str, params, static: dict) -> None:
  tree = jax.tree_util.tree_map(np.asarray, _to_dict(params))
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.abspath(os.path.join(directory, "params")), tree)
  ckptr.wait_until_finished()
  atomic_write_text(os.path.join(directory, "env.json"), json.dumps(static, indent=2) + "\n")


def _to_dict(params) -> dict:
  d = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
  d["quit"] = {f.name: getattr(params.quit, f.name) for f in dataclasses.fields(params.quit)}
  return d


def _is_int(value, least: int = 1) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= least


def read_meta(env_dir: str, expect_dataset: str | None = None) -> EnvMeta:
  """env.json of an env directory, with the fields every consumer reads checked."""
  path = os.path.join(env_dir, "env.json")
  if not os.path.isfile(path):
    raise DataError(f"{env_dir}: not an env directory (no env.json); build one with "
                    "python -m experiments.build_envs --dataset=NAME --out=DIR")
  meta = read_json_object(path)
  if meta.get("format") != FORMAT:
    raise DataError(f"{path}: env format {meta.get('format')!r}, expected {FORMAT}; rebuild it")
  for key in ("dataset", "fingerprint"):
    if not isinstance(meta.get(key), str):
      raise DataError(f"{path}: {key} {meta.get(key)!r}: expected a string")
  if meta.get("kind") not in KINDS:
    raise DataError(f"{path}: kind {meta.get('kind')!r}: expected one of {', '.join(KINDS)}")
  build = meta.get("build")
  if not isinstance(build, dict) or not _is_int(build.get("max_len")):
    raise DataError(f"{path}: build.max_len: expected a positive integer")
  for key, want in (("protocol", str), ("reports", dict), ("peer", dict), ("dorl", dict)):
    if key in meta and not isinstance(meta[key], want):
      raise DataError(f"{path}: {key}: expected a JSON {want.__name__}")
  if expect_dataset is not None and meta["dataset"] != expect_dataset:
    raise DataError(f"{env_dir}: built from dataset {meta['dataset']!r}, "
                    f"not {expect_dataset!r}")
  return EnvMeta.of(meta)


def load_env(env_dir: str, which: str = "train", expect_dataset: str | None = None,
             dataset: Dataset | None = None) -> tuple[RecEnv, object, EnvMeta]:
  """-> (env, params, meta) of the train or test side of an env directory.

  `dataset`, when given, must be the dataset the env was built from (same fingerprint).
  Damaged files are a one-line DataError naming them; restored params must fit the env's
  static shapes (a mismatch would otherwise index out of bounds silently under jit).
  """
  if which not in ("train", "test"):
    raise ConfigError(f"which must be 'train' or 'test', got {which!r}")
  meta = read_meta(env_dir, expect_dataset)
  if dataset is not None and fingerprint(dataset) != meta.fingerprint:
    raise DataError(f"{env_dir}: built from a different version of dataset {meta.dataset!r} "
                    f"(fingerprint {meta.fingerprint}, given {fingerprint(dataset)})")
  side = os.path.join(env_dir, which)
  static_path = os.path.join(side, "env.json")
  try:
    static = read_json_object(static_path)
  except FileNotFoundError:
    raise DataError(f"{side}: no env.json; the env directory is incomplete") from None
  env = _env_of(static, meta.kind, static_path)
  params_path = os.path.abspath(os.path.join(side, "params"))
  if not os.path.isdir(params_path):
    raise DataError(f"{params_path}: cannot restore env params (missing; the env directory "
                    "is incomplete)")
  try:
    tree = ocp.StandardCheckpointer().restore(params_path)
  # orbax and tensorstore raise a dozen types (ValueError, KeyError, TypeError, OSError, ...)
  # on damaged metadata or data files; none of them has a common base below Exception.
  except Exception as e:  # noqa: BLE001
    raise DataError(f"{params_path}: cannot restore env params ({type(e).__name__}: "
                    f"{one_line(e)})") from None
  params = _params_of(env, KIND_SPECS[meta.kind], tree, params_path)
  return env, params, meta


def _env_of(static: dict, kind: str, path: str) -> RecEnv:
  """The env of a side's env.json (static shapes)."""
  if static.get("kind") != kind:
    raise DataError(f"{path}: kind {static.get('kind')!r}, the env directory says {kind!r}")
  for key in ("history_len", "quit_window"):
    if not _is_int(static.get(key)):
      raise DataError(f"{path}: {key} {static.get(key)!r}: expected a positive integer")
  return KIND_SPECS[kind].env_of(static, path)


def _shapes(tree):
  """(shape, dtype kind) of every leaf: arrays, ShapeDtypeStructs or Python scalars."""
  def one(a):
    a = a if hasattr(a, "shape") and hasattr(a, "dtype") else np.asarray(a)
    return tuple(a.shape), np.dtype(a.dtype).kind
  return jax.tree_util.tree_map(one, tree)


def _params_of(env: RecEnv, spec: KindSpec, tree, path: str):
  """The env params of a restored tree, checked against the env's static shapes."""
  fields = spec.fields
  if not isinstance(tree, dict) or sorted(tree) != sorted(fields) or not (
      isinstance(tree["quit"], dict) and sorted(tree["quit"]) == ["beta", "max_len", "min_reward"]):
    raise DataError(f"{path}: expected env params {', '.join(fields)} (quit: beta, max_len, "
                    "min_reward)")
  n = env.num_actions
  want = {"beta": ((), "f"), "min_reward": ((), "f"), "max_len": ((), "i")}
  problems = [f"quit.{k} is {_shapes(tree['quit'][k])}, expected {v}"
              for k, v in want.items() if _shapes(tree["quit"][k]) != v]
  vecs = np.shape(tree["item_vecs"])
  if len(vecs) != 2 or vecs[0] != n or _shapes(tree["item_vecs"])[1] != "f":
    problems.append(f"item_vecs is {_shapes(tree['item_vecs'])}, expected float ({n}, d)")
  problems += spec.problems(env, tree)
  if problems:
    raise DataError(f"{path}: {problems[0]}")
  tree = jax.tree_util.tree_map(jnp.asarray, tree)
  quit = QuitParams(**tree.pop("quit"))
  return spec.params_type(quit=quit, **tree)


def load_dataset_of(env_dir: str) -> Dataset:
  read_meta(env_dir)
  return Dataset.load(os.path.join(env_dir, "dataset.npz"))


def _matrix_env(static: dict, path: str) -> MatrixEnv:
  if not _is_int(static.get("num_items")):
    raise DataError(f"{path}: num_items {static.get('num_items')!r}: expected a positive "
                    "integer")
  rule = static.get("window_rule", "last")
  if rule not in WINDOW_RULES:
    raise DataError(f"{path}: window_rule {rule!r}: expected one of {', '.join(WINDOW_RULES)}")
  users = static.get("num_users", 0)
  if not _is_int(users, 0) or (users and static["history_len"] < 2):
    raise DataError(f"{path}: num_users {users!r}: expected an integer >= 0 (user tokens "
                    "need history_len >= 2)")
  return MatrixEnv(static["num_items"], static["history_len"], static["quit_window"], rule,
                   users)


def _sequential_env(static: dict, path: str) -> SequentialEnv:
  model = static.get("model")
  names = {f.name for f in dataclasses.fields(sq.SeqConfig)}
  if not isinstance(model, dict) or not set(model) <= names:
    raise DataError(f"{path}: model: expected an object with fields of "
                    f"{', '.join(sorted(names))}")
  for key in ("num_items", "dim", "num_heads", "window"):
    if not _is_int(model.get(key)):
      raise DataError(f"{path}: model.{key} {model.get(key)!r}: expected a positive integer")
  if not _is_int(model.get("num_layers", 0), 0) or model["dim"] % model["num_heads"]:
    raise DataError(f"{path}: model: num_layers must be >= 0 and dim a multiple of num_heads")
  return SequentialEnv(sq.SeqConfig(**model), static["history_len"], static["quit_window"])


def _matrix_problems(env: MatrixEnv, tree: dict) -> list[str]:
  n, table = env.num_actions, _shapes(tree["table"])
  if len(table[0]) != 2 or table[0][0] == 0 or table[0][1] != n or table[1] != "f":
    return [f"table is {table}, expected float (users, {n})"]
  if env.num_users and table[0][0] != env.num_users:
    return [f"table has {table[0][0]} users, env.json's num_users is {env.num_users}"]
  return []


def _sequential_problems(env: SequentialEnv, tree: dict) -> list[str]:
  n, cfg, problems = env.num_actions, env.model_cfg, []
  model = jax.eval_shape(sq.SeqScorer(cfg).init, jax.random.PRNGKey(0),
                         jnp.zeros((cfg.window,), jnp.int32))
  if _shapes(tree["model"]) != _shapes(model):
    problems.append("model params do not match its config (shapes or structure)")
  for k in ("center", "scale", "reward_max"):
    if _shapes(tree[k]) != ((), "f"):
      problems.append(f"{k} is {_shapes(tree[k])}, expected a float scalar")
  init = np.asarray(tree["init_items"])
  if init.ndim != 1 or init.size == 0 or init.dtype.kind not in "iu" or not (
      0 <= init.min() and init.max() < n):
    problems.append(f"init_items must be a non-empty list of item ids in [0, {n})")
  return problems


@dataclasses.dataclass(frozen=True)
class KindSpec:
  """One env kind: its env from a side's static shapes (checked), its params type, and the
  shape checks of its own params beyond the shared quit and item_vecs."""
  env_of: Callable[[dict, str], RecEnv]
  params_type: type
  problems: Callable[[RecEnv, dict], list[str]]

  @property
  def fields(self) -> list[str]:
    return [f.name for f in dataclasses.fields(self.params_type)]


KIND_SPECS = {
    "sequential": KindSpec(_sequential_env, SequentialParams, _sequential_problems),
    "matrix": KindSpec(_matrix_env, MatrixParams, _matrix_problems),
}
assert tuple(KIND_SPECS) == KINDS
