"""Fuzzing the readers of trained policies and small JSON files: pre-trained policy directories
(jaxrec.train.policy.load_policy), exports (jaxrec.export.load_export: config.json + params.npz +
serialized functions, sha256-checked), run flags (jaxrec.checkpoint.read_train_config) and
jaxrec.io.read_json_object itself."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import jax
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jaxrec import checkpoint, export
from jaxrec.agents.registry import AgentConfig
from jaxrec.errors import DataError
from jaxrec.io import read_json_object
from jaxrec.train.policy import load_policy
from jaxrec.train.run import TrainConfig

from .test_envs import json_mutation
from .test_shards import _forged_npz
from .util import (byte_mutation, copy_of, files_under, fuzz_settings, load_or_refuse, refuse,
                   scratch)


def _same_tree(a, b) -> None:
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(la, lb):
    assert np.shape(x) == np.shape(y) and np.asarray(x).dtype == np.asarray(y).dtype


# --- pre-trained policies -------------------------------------------------------------------
ORBAX_METADATA = "policy/params/_METADATA"


@fuzz_settings(30)
@given(data=st.data())
def test_corrupted_policy_dir_is_refused_or_restores(fuzz_policy_dir, fuzz_agent, data):
  agent, params = fuzz_agent
  with copy_of(fuzz_policy_dir) as run:
    files = files_under(run)
    rel = data.draw(st.sampled_from(files), label="file")
    path = pathlib.Path(run, rel)
    good = path.read_bytes()
    mutations = [byte_mutation(good)]
    if rel.endswith(".json") or rel.endswith("_METADATA"):
      mutations.append(json_mutation(good))
    path.write_bytes(data.draw(st.one_of(*mutations), label="content"))
    got = load_or_refuse(lambda: load_policy(run, agent.cfg.net, "0" * 16), run)
    if got is not None and rel == "policy/policy.json":
      _same_tree(got, params)  # only the JSON was damaged: the params are intact


@pytest.mark.parametrize("content", [b"[]", b"{}", b'{"tree_metadata": null}'])
def test_policy_with_damaged_orbax_metadata_is_refused(fuzz_policy_dir, fuzz_agent, content):
  agent, _ = fuzz_agent
  with copy_of(fuzz_policy_dir) as run:
    pathlib.Path(run, ORBAX_METADATA).write_bytes(content)
    refuse(lambda: load_policy(run, agent.cfg.net, "0" * 16), run)


def test_policy_of_another_net_or_dataset_is_refused(fuzz_policy_dir, fuzz_agent):
  agent, _ = fuzz_agent
  refuse(lambda: load_policy(fuzz_policy_dir, dataclasses.replace(agent.cfg.net, dim=16)),
         fuzz_policy_dir)
  refuse(lambda: load_policy(fuzz_policy_dir, agent.cfg.net, "1" * 16), fuzz_policy_dir)
  with scratch() as root:
    refuse(lambda: load_policy(root, agent.cfg.net), root)


# --- exports --------------------------------------------------------------------------------
def _assert_loaded_export(policy: export.ExportedPolicy) -> None:
  """What evaluate_export and check_env_matches rely on."""
  cfg = policy.config
  env = cfg["env"]
  assert isinstance(env["fingerprint"], str) and isinstance(env["dataset"], str)
  for k in ("num_items", "history_len", "max_len"):
    assert isinstance(env[k], int) and env[k] > 0
  assert cfg["strategy"] in policy.functions
  assert isinstance(cfg["epsilon"], (int, float)) and 0 <= cfg["epsilon"] <= 1
  assert len(policy.params) == len(cfg["params"])
  for fn in policy.functions.values():
    avals = fn.in_avals
    assert len(avals) == len(policy.params) + 3  # params, history, key, allowed
    for aval, leaf in zip(avals, policy.params):
      assert aval.shape == leaf.shape and aval.dtype == leaf.dtype
    assert avals[-3].shape[1:] == (env["history_len"],)
    assert avals[-1].shape[1:] == (env["num_items"],) and avals[-1].dtype == bool


def _reseal(directory: str, name: str) -> None:
  """Writes the sha256 of `name` into config.json, as if the export had been made so."""
  path = os.path.join(directory, export.CONFIG)
  config = json.load(open(path))
  config["sha256"][name] = hashlib.sha256(pathlib.Path(directory, name).read_bytes()).hexdigest()
  pathlib.Path(path).write_text(json.dumps(config))


@fuzz_settings(20)
@given(data=st.data())
def test_corrupted_export_file_is_refused(fuzz_export_dir, data):
  """Every file but config.json is covered by its sha256: any change is refused."""
  with copy_of(fuzz_export_dir) as d:
    name = data.draw(st.sampled_from([f for f in files_under(d) if f != export.CONFIG]))
    path = pathlib.Path(d, name)
    good = path.read_bytes()
    bad = data.draw(byte_mutation(good), label="bytes")
    assume(bad != good)
    path.write_bytes(bad)
    refuse(lambda: export.load_export(d), str(path), error=DataError)


@fuzz_settings(40)
@given(data=st.data())
def test_forged_export_with_matching_sha256_is_refused_or_consistent(fuzz_export_dir, data):
  """A file replaced and its sha256 updated in config.json: only the content checks remain."""
  with copy_of(fuzz_export_dir) as d:
    name = data.draw(st.sampled_from([f for f in files_under(d) if f != export.CONFIG]))
    path = pathlib.Path(d, name)
    if name == export.PARAMS:
      with np.load(path) as z:
        good = {f: z[f] for f in z.files}
      path.write_bytes(data.draw(_forged_npz(good), label="params.npz"))
    else:
      path.write_bytes(data.draw(st.one_of(
          byte_mutation(path.read_bytes()),
          st.sampled_from([pathlib.Path(d, f).read_bytes() for f in files_under(d)])),
          label=name))
    _reseal(d, name)
    policy = load_or_refuse(lambda: export.load_export(d), d)
    if policy is not None:
      _assert_loaded_export(policy)


@fuzz_settings(40)
@given(data=st.data())
def test_broken_export_config_is_refused_or_consistent(fuzz_export_dir, data):
  with copy_of(fuzz_export_dir) as d:
    path = pathlib.Path(d, export.CONFIG)
    good = path.read_bytes()
    how = data.draw(st.sampled_from(["mutate", "escape"]), label="how")
    if how == "mutate":
      path.write_bytes(data.draw(json_mutation(good), label="config"))
    else:
      # A config that points outside the export, or at a file its hashes do not cover.
      config = json.loads(good)
      target = data.draw(st.sampled_from(["../outside", "/etc/hostname", "config.json",
                                          "unhashed.bin"]))
      pathlib.Path(d, "unhashed.bin").write_bytes(pathlib.Path(d, "act_greedy.jaxexport")
                                                   .read_bytes())
      if data.draw(st.booleans()):
        config["act"]["files"]["greedy"] = target
      else:
        config["sha256"][target] = "0" * 64
      path.write_text(json.dumps(config))
    policy = load_or_refuse(lambda: export.load_export(d), d)
    if policy is not None:
      _assert_loaded_export(policy)
      files = set(policy.config["act"]["files"].values())
      assert files <= set(policy.config["sha256"]) and all("/" not in f for f in files)


# --- run flags and JSON objects -------------------------------------------------------------
@fuzz_settings(40)
@given(data=st.data())
def test_broken_run_flags_are_refused_or_valid(data):
  cfg = TrainConfig(env="/some/env", agent_cfg=AgentConfig(dim=8))
  good = json.dumps(dataclasses.asdict(cfg)).encode()
  with scratch() as run:
    path = os.path.join(run, "flags.json")
    pathlib.Path(path).write_bytes(data.draw(json_mutation(good), label="flags.json"))
    got = load_or_refuse(lambda: checkpoint.read_train_config(run), path)
    if got is not None:
      assert isinstance(got, TrainConfig) and isinstance(got.agent_cfg, AgentConfig)
      load_or_refuse(got.validate, "--")  # a bad value is a ConfigError naming its flag


_NASTY_JSON = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"{", b"[" * 100_000, b'{"a": ' * 50_000, b"\xff\xfe{}", b"null",
                     b"[]", b"1e999999", b'"\\ud800"', b"{}\x00", b"NaN", b'{"a": NaN}',
                     b"\xef\xbb\xbf{}", "{\"é\": 1}".encode("latin-1")]))


@fuzz_settings(60)
@given(raw=_NASTY_JSON)
def test_read_json_object_returns_a_dict_or_refuses(raw):
  with scratch() as root:
    path = os.path.join(root, "x.json")
    pathlib.Path(path).write_bytes(raw)
    got = load_or_refuse(lambda: read_json_object(path, "thing"), path)
    assert got is None or isinstance(got, dict)
  with scratch() as root:
    os.mkdir(os.path.join(root, "dir.json"))
    refuse(lambda: read_json_object(os.path.join(root, "dir.json")), root, error=DataError)
    with pytest.raises(FileNotFoundError):
      read_json_object(os.path.join(root, "none.json"))
