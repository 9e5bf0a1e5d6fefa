"""Valid artifacts built once per test session, copied per hypothesis example by the tests.

The env directories are written in the exact format of `jaxrec.envs.build.build_envs`
(`build.save_params` per side, `Dataset.save`, env.json) from an initialized, unfitted user
model: fitting one costs a minute of compilation on a small machine and the fuzz tests only
read the files.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import pytest

from jaxrec.data import SyntheticConfig, load_dataset
from jaxrec.envs import QuitParams, SequentialEnv, build
from jaxrec.usermodels import sequential as sq
from train.conftest import best_item_env, write_env_dir

HISTORY_LEN, MAX_LEN = 4, 5


@pytest.fixture(scope="session")
def fuzz_dataset():
  return load_dataset("synthetic", synthetic_cfg=SyntheticConfig(
      num_users=30, num_items=20, num_genres=3, mean_length=6))


@pytest.fixture(scope="session")
def fuzz_seq_env_dir(tmp_path_factory, fuzz_dataset):
  ds = fuzz_dataset
  out = str(tmp_path_factory.mktemp("fuzz-envs") / "seq")
  mcfg = sq.SeqConfig(num_items=ds.num_items, dim=8, num_layers=1, num_heads=1,
                      window=HISTORY_LEN, num_steps=1)
  model_params = sq.SeqScorer(mcfg).init(jax.random.PRNGKey(0),
                                         jnp.zeros((HISTORY_LEN,), jnp.int32))
  env = SequentialEnv(mcfg, HISTORY_LEN, quit_window=2)
  quit = QuitParams(beta=jnp.float32(0.1), min_reward=jnp.float32(1.0),
                    max_len=jnp.int32(MAX_LEN))
  params = env.make_params(model_params, 0.0, 1.0, 5.0, quit, ds.seq_items)
  static = {"kind": "sequential", "history_len": HISTORY_LEN, "quit_window": 2,
            "model": dataclasses.asdict(mcfg), "report": {}}
  for side in ("train", "test"):
    build.save_params(os.path.join(out, side), params, static)
  ds.save(os.path.join(out, "dataset.npz"))
  meta = {"format": build.FORMAT, "dataset": ds.name, "fingerprint": build.fingerprint(ds),
          "kind": "sequential",
          "build": dataclasses.asdict(build.BuildConfig(history_len=HISTORY_LEN,
                                                        max_len=MAX_LEN)),
          "reports": {}}
  with open(os.path.join(out, "env.json"), "w") as f:
    json.dump(meta, f, indent=2)
  return out


@pytest.fixture(scope="session")
def fuzz_matrix_env_dir(tmp_path_factory):
  return write_env_dir(str(tmp_path_factory.mktemp("fuzz-envs") / "matrix"), *best_item_env())


@pytest.fixture(scope="session")
def fuzz_env_dirs(fuzz_seq_env_dir, fuzz_matrix_env_dir) -> dict[str, str]:
  return {"sequential": fuzz_seq_env_dir, "matrix": fuzz_matrix_env_dir}



@pytest.fixture(scope="session")
def fuzz_agent():
  """A tiny A2C agent over the matrix env's 20 items and its initial policy params."""
  from jaxrec.agents.registry import AgentConfig, make_agent
  from train.conftest import HISTORY_LEN as MATRIX_HISTORY_LEN
  from train.conftest import NUM_ITEMS
  agent = make_agent("a2c", AgentConfig(dim=8, num_layers=0, num_heads=1), NUM_ITEMS,
                     MATRIX_HISTORY_LEN)
  return agent, agent.policy_params(agent.init(jax.random.PRNGKey(0)))


@pytest.fixture(scope="session")
def fuzz_policy_dir(tmp_path_factory, fuzz_agent):
  """A pre-training run directory holding only its final policy (what --init_from reads)."""
  from jaxrec.train.policy import save_policy
  agent, params = fuzz_agent
  out = str(tmp_path_factory.mktemp("fuzz-policy") / "run")
  save_policy(out, params, agent.cfg.net, {"dataset": "best_item", "fingerprint": "0" * 16})
  return out


@pytest.fixture(scope="session")
def fuzz_export_dir(tmp_path_factory, fuzz_agent):
  from jaxrec.export import export_policy
  from train.conftest import HISTORY_LEN as MATRIX_HISTORY_LEN
  from train.conftest import MAX_LEN as MATRIX_MAX_LEN
  from train.conftest import NUM_ITEMS
  agent, params = fuzz_agent
  out = str(tmp_path_factory.mktemp("fuzz-export") / "export")
  meta = {"agent": "a2c", "env": {"dataset": "best_item", "fingerprint": "0" * 16,
                                  "kind": "matrix", "num_items": NUM_ITEMS,
                                  "history_len": MATRIX_HISTORY_LEN, "max_len": MATRIX_MAX_LEN}}
  export_policy(agent, params, out, epsilon=0.1, strategy="greedy", meta=meta)
  return out
