"""The random-policy calibration of the sequential env (jaxrec.envs.calibrate): the rule on
known arrays, and the paper's LFM random-start statistics on the synthetic data and on
MovieLens-100k (slow: they fit real user models)."""

import pathlib

import jax
import numpy as np
import pytest

from jaxrec.envs import build, calibrate, policies
from jaxrec.train.evaluation import evaluate_policy


def test_rule_hits_its_targets_on_known_trajectories():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(4096, 30))
  closest = rng.exponential(1.0, size=(4096, 30))
  closest[:, 0] = np.inf  # an empty window at step 0
  c = calibrate.calibrate_random_beta(scores, closest, s_pos=2.0, reward_max=5.0, calib_pos=4.0)
  assert c["random_len"] == pytest.approx(calibrate.RANDOM_LEN, abs=0.05)
  assert c["random_ravg"] == pytest.approx(calibrate.RANDOM_RAVG, abs=1e-3)
  assert calibrate.within_paper_ranges(c["random_r"], c["random_len"], c["random_ravg"])
  # The anchor: a score of s_pos earns calib_pos.
  assert 5.0 / (1 + np.exp(-(2.0 - c["center"]) / c["scale"])) == pytest.approx(4.0)


def _random_stats(env_dir, which):
  env, params, meta = build.load_env(env_dir, which)
  policy = policies.make_policy("random", env, params)
  out = jax.jit(lambda k: evaluate_policy(policy, env, params, k, 4096,
                                          meta.max_len))(jax.random.PRNGKey(7))
  return {k: float(out[k]) for k in ("R", "Len", "Ravg")}, meta


def _check_sides(env_dir):
  for side in ("train", "test"):
    stats, meta = _random_stats(env_dir, side)
    assert meta.reports[side]["calibration_met"], meta.reports[side]
    # Measured again on fresh sessions with another key: inside the paper's LFM ranges.
    for k, (lo, hi) in calibrate.LFM_RANGES.items():
      assert lo <= stats[k] <= hi, (side, k, stats)


@pytest.mark.slow
def test_synthetic_default_random_policy_in_the_papers_ranges(tmp_path):
  from jaxrec.data import load_dataset
  out = str(tmp_path / "env")
  build.build_envs(load_dataset("synthetic"), build.BuildConfig(), out, log=lambda s: None)
  _check_sides(out)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known: on MovieLens-100k the rule misses the paper's "
                   "ranges (calibration_met false; issue 16 note); strict, so a fix shows")
def test_movielens_100k_random_policy_in_the_papers_ranges(tmp_path):
  recbole = pytest.importorskip("recbole")
  from jaxrec.data import load_dataset
  root = pathlib.Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
  out = str(tmp_path / "env")
  build.build_envs(load_dataset("movielens", str(root)), build.BuildConfig(seq_steps=300), out,
                   log=lambda s: None)
  _check_sides(out)
