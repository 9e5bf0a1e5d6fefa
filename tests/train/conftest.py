"""Env directories for the training tests.

`best_item_env_dir`: a hand-made matrix env written in the env-directory format without any
fit (milliseconds): 20 items, item 3 pays 4 and keeps the user, items 0-9 pay 2.5, items 10-19
pay 1 and end the episode (min_reward 2); no similarity quit; max_len 10. The optimum
(always item 3) returns 40, a uniform policy about 2.5, and a judge that picks the best of k
candidates prefers item 3 whenever it is proposed.
`seq_env_dir`: a small fitted sequential env (a SASRec user model with a per-session cache in
the env state), built once per test session.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import built_once
from jaxrec.envs import MatrixEnv, MatrixParams, QuitParams, build
from jaxrec.oracle_config import OracleConfig

NUM_ITEMS, MAX_LEN, HISTORY_LEN = 20, 10, 4


def best_item_env(num_users: int = 8):
  row = np.where(np.arange(NUM_ITEMS) < 10, 2.5, 1.0)
  row[3] = 4.0
  params = MatrixParams(
      table=jnp.asarray(np.tile(row, (num_users, 1)), jnp.float32),
      item_vecs=jnp.eye(NUM_ITEMS),
      quit=QuitParams(beta=jnp.float32(0.0), min_reward=jnp.float32(2.0),
                      max_len=jnp.int32(MAX_LEN)))
  return MatrixEnv(NUM_ITEMS, history_len=HISTORY_LEN, quit_window=2), params


def write_env_dir(out: str, env: MatrixEnv, params: MatrixParams, name: str = "best_item"):
  static = {"kind": "matrix", "history_len": env.history_len, "quit_window": env.quit_window,
            "num_items": NUM_ITEMS, "report": {}}
  for side in ("train", "test"):
    build.save_params(os.path.join(out, side), params, static)
  meta = {"format": build.FORMAT, "dataset": name, "fingerprint": "0" * 16, "kind": "matrix",
          "build": {"max_len": MAX_LEN}, "reports": {}}
  with open(os.path.join(out, "env.json"), "w") as f:
    json.dump(meta, f)
  return out


@pytest.fixture(scope="session")
def seq_env_dir(tmp_path_factory):
  from jaxrec.data import SyntheticConfig, load_dataset
  ds = load_dataset("synthetic", synthetic_cfg=SyntheticConfig(num_users=200, num_items=80,
                                                                num_genres=4, mean_length=10))
  return built_once(tmp_path_factory, "train-seq", lambda out: build.build_envs(
      ds, build.BuildConfig(seq_steps=100, max_len=8), out, log=lambda s: None))


@pytest.fixture(scope="session")
def best_item_env_dir(tmp_path_factory):
  return write_env_dir(str(tmp_path_factory.mktemp("envs") / "best_item"), *best_item_env())


PRETRAIN_TINY = dict(num_sessions=64, episode_len=5, episodes_per_epoch=2, epochs=4,
                     num_candidates=5, batch_size=64, buffer_size=2048, eval_sessions=256,
                     updates_per_step=2, oracle=OracleConfig(temperature=0.0))


def tiny_agent_config(**kw):
  """A small agent that updates after every env step (unroll 1), so the runs' epoch and
  update arithmetic is the same for every agent."""
  from jaxrec.agents.registry import AgentConfig
  return AgentConfig(**(dict(dim=16, num_layers=0, num_heads=1, learning_rate=1e-2,
                             unroll_len=1) | kw))


@pytest.fixture(scope="session")
def pretrained_dir(best_item_env_dir, tmp_path_factory):
  """A finished iALP pre-training run on the best-item env (inproc oracle, 4 epochs)."""
  from jaxrec.train.pretraining import PretrainConfig, pretrain
  out = str(tmp_path_factory.mktemp("pretrained") / "run")
  pretrain(PretrainConfig(env=best_item_env_dir, agent_cfg=tiny_agent_config(), **PRETRAIN_TINY),
           out, log=lambda s: None)
  return out


def metric_rows(path):
  """The rows of a run's metrics.jsonl / curve.jsonl without the wall-clock field, for
  comparing runs."""
  rows = [json.loads(line) for line in open(path)]
  for r in rows:
    r.pop("steps_per_s", None)
  return rows
