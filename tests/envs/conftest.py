"""Small env directories built once per test run and shared by the xdist workers (fits are
short: these tests check the mechanics, not fit quality; tests/envs/test_usermodels.py checks
quality)."""

import pytest

from conftest import built_once
from jaxrec.data import SyntheticConfig, load_dataset
from jaxrec.envs import build

SMALL = SyntheticConfig(num_users=300, num_items=200, num_genres=6, mean_length=15)


@pytest.fixture(scope="session")
def small_dataset():
  return load_dataset("synthetic", synthetic_cfg=SMALL)


@pytest.fixture(scope="session")
def seq_env_dir(tmp_path_factory, small_dataset):
  return built_once(tmp_path_factory, "envs-seq", lambda out: build.build_envs(
      small_dataset, build.BuildConfig(kind="sequential", seq_steps=200), out,
      log=lambda s: None))


@pytest.fixture(scope="session")
def matrix_env_dir(tmp_path_factory, small_dataset):
  return built_once(tmp_path_factory, "envs-matrix", lambda out: build.build_envs(
      small_dataset, build.BuildConfig(kind="matrix", mf_steps=400), out, log=lambda s: None))
