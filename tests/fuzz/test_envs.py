"""Fuzzing env directories (jaxrec.envs.build.load_env / read_meta / load_dataset_of) and the
dataset cache they hold (Dataset.load): every corrupted file either still loads into an env
whose params fit it, or is refused with a one-line DataError naming the file or directory."""

from __future__ import annotations

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxrec.data import Dataset
from jaxrec.envs import MatrixEnv, build
from jaxrec.errors import DataError
from jaxrec.usermodels import sequential as sq

from .util import byte_mutation, copy_of, files_under, fuzz_settings, load_or_refuse, refuse

KINDS = ["sequential", "matrix"]


def _json_values():
  return st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.sampled_from([2**64, -1, 0]),
                   st.floats(), st.text(max_size=6), st.lists(st.integers(0, 3), max_size=2),
                   st.dictionaries(st.sampled_from(["max_len", "x"]), st.integers(), max_size=2))


def _paths(obj, prefix=()):
  """Every key path of a nested JSON object."""
  if isinstance(obj, dict):
    for k, v in obj.items():
      yield prefix + (k,)
      yield from _paths(v, prefix + (k,))


@st.composite
def json_mutation(draw, data: bytes) -> bytes:
  """A JSON object with one nested value replaced or removed, or its text corrupted."""
  obj = json.loads(data)
  paths = list(_paths(obj))
  how = draw(st.sampled_from(["bytes", "replace", "replace", "drop", "not-object"]))
  if how == "bytes" or not paths:
    return draw(byte_mutation(data))
  if how == "not-object":
    return json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=3),
                                     st.integers()))).encode()
  path = draw(st.sampled_from(paths))
  parent = obj
  for k in path[:-1]:
    parent = parent[k]
  if how == "drop":
    del parent[path[-1]]
  else:
    parent[path[-1]] = draw(_json_values())
  return json.dumps(obj).encode()


def _assert_usable(env, params, meta: dict) -> None:
  """What the training stack relies on after load_env: meta fields, params that fit the env's
  static shapes, and reset / step that trace."""
  assert isinstance(meta.dataset, str) and isinstance(meta.fingerprint, str)
  assert meta.kind in KINDS
  max_len = meta.max_len
  assert isinstance(max_len, int) and not isinstance(max_len, bool) and max_len > 0
  n = env.num_actions
  assert params.item_vecs.ndim == 2 and params.item_vecs.shape[0] == n
  for leaf in (params.quit.beta, params.quit.min_reward, params.quit.max_len):
    assert leaf.shape == ()
  if isinstance(env, MatrixEnv):
    assert params.table.ndim == 2 and params.table.shape[1] == n and params.table.shape[0] > 0
  else:
    want = jax.eval_shape(sq.SeqScorer(env.model_cfg).init, jax.random.PRNGKey(0),
                          jnp.zeros((env.model_cfg.window,), jnp.int32))
    got = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params.model)
    assert got == want
    init = np.asarray(params.init_items)
    assert init.ndim == 1 and init.size and init.min() >= 0 and init.max() < n
  key = jax.random.PRNGKey(0)
  obs, state = jax.eval_shape(env.reset, key, params)
  jax.eval_shape(env.step, key, state, jnp.int32(0), params)


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(25)
@given(data=st.data())
def test_corrupted_env_dir_loads_into_a_usable_env_or_is_refused(fuzz_env_dirs, kind, data):
  with copy_of(fuzz_env_dirs[kind]) as d:
    files = [f for f in files_under(d) if f != "dataset.npz"]
    rel = data.draw(st.sampled_from(files), label="file")
    path = pathlib.Path(d, rel)
    good = path.read_bytes()
    mutations = [byte_mutation(good)]
    if rel.endswith(".json") or rel.endswith("_METADATA"):
      mutations.append(json_mutation(good))
    path.write_bytes(data.draw(st.one_of(*mutations), label="content"))
    which = "test" if rel.startswith("test/") else "train"
    loaded = load_or_refuse(lambda: build.load_env(d, which), d)
    if loaded is not None:
      _assert_usable(*loaded)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_env_files_are_refused_or_not_needed(fuzz_env_dirs, kind):
  """Each file of the train side (and env.json) removed in turn: refused naming the directory,
  or loaded into a usable env (orbax does not read every file it writes)."""
  refused = set()
  for rel in files_under(fuzz_env_dirs[kind]):
    if rel.startswith("test/") or rel == "dataset.npz":
      continue
    with copy_of(fuzz_env_dirs[kind]) as d:
      os.unlink(os.path.join(d, rel))
      loaded = load_or_refuse(lambda: build.load_env(d, "train"), d)
      if loaded is None:
        refused.add(rel)
      else:
        _assert_usable(*loaded)
  assert {"env.json", "train/env.json", "train/params/_METADATA"} <= refused, refused


@fuzz_settings(25)
@given(data=st.data())
def test_corrupted_dataset_cache_is_refused_or_loads(fuzz_env_dirs, data):
  with copy_of(fuzz_env_dirs["sequential"]) as d:
    path = os.path.join(d, "dataset.npz")
    with np.load(path) as z:
      arrays = {f: z[f] for f in z.files}
    good = pathlib.Path(path).read_bytes()
    how = data.draw(st.sampled_from(["bytes", "array", "meta", "drop"]), label="how")
    if how == "bytes":
      pathlib.Path(path).write_bytes(data.draw(byte_mutation(good), label="bytes"))
    else:
      field = data.draw(st.sampled_from(sorted(arrays)), label="field")
      if how == "drop":
        del arrays[field]
      elif how == "meta":
        meta = json.loads(str(arrays["meta"]))
        arrays["meta"] = np.array(data.draw(json_mutation(json.dumps(meta).encode()),
                                            label="meta").decode("utf-8", "replace"))
      elif field != "meta":
        a = arrays[field]
        other = (np.zeros(a.shape, np.float64) if a.dtype.kind in "U" else a.astype(str))
        arrays[field] = data.draw(st.sampled_from([
            a[:-1], other, a.reshape(-1)[:0], np.zeros(a.shape + (2,), a.dtype), np.array(7),
            np.full(a.shape, -1, a.dtype) if a.dtype.kind in "iu" else a[::-1],
            np.full(a.shape, 2**31 - 1, a.dtype) if a.dtype.kind in "iu" else a[:1]]),
            label="array")
      np.savez(path, **arrays)
    ds = load_or_refuse(lambda: Dataset.load(path), path)
    if ds is not None:
      assert isinstance(ds, Dataset)
      assert ds.offsets[0] == 0 and ds.offsets[-1] == len(ds.seq_items)
      assert np.all(np.diff(ds.offsets) >= 0)
      if len(ds.seq_items):
        assert ds.seq_items.min() >= 0 and ds.seq_items.max() < ds.num_items
    load_or_refuse(lambda: build.load_dataset_of(d), d)


def test_env_dir_edges_are_refused(fuzz_env_dirs, tmp_path):
  refuse(lambda: build.load_env(str(tmp_path / "none")), str(tmp_path / "none"), error=DataError)
  with copy_of(fuzz_env_dirs["matrix"]) as d:
    refuse(lambda: build.load_env(d, "train", expect_dataset="other"), d, error=DataError)
    for side in ("train", "test"):
      os.replace(os.path.join(d, side), os.path.join(d, side + "-moved"))
    refuse(lambda: build.load_env(d, "train"), d, error=DataError)
