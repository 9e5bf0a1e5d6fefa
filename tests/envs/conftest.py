"""Small env directories built once per test session (fits are short: these tests check the
mechanics, not fit quality; tests/envs/test_usermodels.py checks quality)."""

import pytest

from jaxrec.data import SyntheticConfig, load_dataset
from jaxrec.envs import build

SMALL = SyntheticConfig(num_users=300, num_items=200, num_genres=6, mean_length=15)


@pytest.fixture(scope="session")
def small_dataset():
  return load_dataset("synthetic", synthetic_cfg=SMALL)


@pytest.fixture(scope="session")
def seq_env_dir(tmp_path_factory, small_dataset):
  out = str(tmp_path_factory.mktemp("envs") / "seq")
  build.build_envs(small_dataset, build.BuildConfig(kind="sequential", seq_steps=200), out,
                   log=lambda s: None)
  return out


@pytest.fixture(scope="session")
def matrix_env_dir(tmp_path_factory, small_dataset):
  out = str(tmp_path_factory.mktemp("envs") / "matrix")
  build.build_envs(small_dataset, build.BuildConfig(kind="matrix", mf_steps=400), out,
                   log=lambda s: None)
  return out
