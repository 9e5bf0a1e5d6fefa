"""Fixtures of the labeler tests: a small synthetic catalog and a hand-made matrix env (no fit)
whose reward table is random, so the oracle's labels vary from row to row."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import shards
from jaxrec.data import SyntheticConfig, load_dataset
from jaxrec.envs import MatrixEnv, MatrixParams, QuitParams, build
from train.conftest import NUM_ITEMS, write_env_dir

NUM_USERS = 6


@pytest.fixture(scope="session")
def small_dataset():
  return load_dataset("synthetic", synthetic_cfg=SyntheticConfig(
      num_users=60, num_items=50, num_genres=4, mean_length=8))


@pytest.fixture(scope="session")
def catalog(small_dataset):
  return shards.catalog_of(small_dataset, build.fingerprint(small_dataset))


def random_matrix_env(seed: int = 0):
  rng = np.random.default_rng(seed)
  params = MatrixParams(
      table=jnp.asarray(rng.uniform(0.0, 5.0, (NUM_USERS, NUM_ITEMS)), jnp.float32),
      item_vecs=jnp.eye(NUM_ITEMS),
      quit=QuitParams(beta=jnp.float32(0.0), min_reward=jnp.float32(2.0),
                      max_len=jnp.int32(10)))
  return MatrixEnv(NUM_ITEMS, history_len=4, quit_window=2), params


@pytest.fixture(scope="session")
def matrix_env_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("envs") / "random_matrix")
  return write_env_dir(out, *random_matrix_env(), name="random_matrix")


def make_requests(n: int, k: int, num_items: int, history_len: int = 4, num_users: int = 1,
                  seed: int = 0) -> shards.RequestShard:
  """Random valid requests: distinct candidates, right-aligned histories of random length."""
  rng = np.random.default_rng(seed)
  cands = np.argsort(rng.random((n, num_items)), axis=1)[:, :k].astype(np.int32)
  hist = rng.integers(0, num_items, (n, history_len)).astype(np.int32)
  lengths = rng.integers(0, history_len + 1, n)
  hist[np.arange(history_len)[None, :] < (history_len - lengths)[:, None]] = -1
  return shards.RequestShard(
      session=np.arange(n, dtype=np.int32), step=rng.integers(0, 9, n).astype(np.int32),
      history=hist, candidates=cands,
      user=rng.integers(0, num_users, n).astype(np.int32))


def write_request_dir(directory: str, num_shards: int, rows: int, k: int, meta: dict,
                      seed: int = 0, num_users: int = NUM_USERS) -> list[str]:
  names = []
  for i in range(num_shards):
    name = f"requests-{i:05d}"
    shards.write_requests(directory, name, make_requests(rows, k, meta["num_items"],
                                                          meta.get("history_len", 4),
                                                          num_users, seed + i), meta)
    names.append(name)
  return names


def temp_files(directory: str) -> list[str]:
  return [f for f in os.listdir(directory) if f.startswith(".tmp-")]
