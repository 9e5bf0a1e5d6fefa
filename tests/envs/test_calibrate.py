"""The random-policy calibration of the sequential env (jaxrec.envs.calibrate): the rule on
known arrays, and the paper's LFM random-start statistics on MovieLens-100k (slow: it fits
real user models; the default synthetic preset's are checked on the env its CLI test builds,
tests/envs/test_cli.py)."""

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


def _known_trajectories():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(2048, 30))
  closest = rng.exponential(1.0, size=(2048, 30))
  closest[:, 0] = np.inf
  return scores, closest


def test_anchor_stays_the_median_where_the_median_meets_the_ranges():
  scores, closest = _known_trajectories()
  heldout = np.random.default_rng(1).normal(2.0, 0.5, size=501)  # median ~2: few random above
  calls = []

  def solve(s):
    calls.append(s)
    return calibrate.calibrate_random_beta(scores, closest, s, reward_max=5.0, calib_pos=4.0)

  c = calibrate.calibrate_random_anchor(solve, heldout, reward_max=5.0)
  assert calls == [float(np.median(heldout))]  # step 1 as stated; no other anchor solved
  assert c["anchor_quantile"] == 0.5
  assert c["heldout_median_reward"] == pytest.approx(4.0)
  assert calibrate.within_paper_ranges(c["random_r"], c["random_len"], c["random_ravg"])


def _fixed_beta_solver(scores, closest, calls=None):
  """Steps 1-3 with the similarity quit fixed at the 20% quantile of the window distances (as
  the test env's, which takes the train env's beta): cheap enough to solve every anchor."""
  beta = float(np.quantile(closest[np.isfinite(closest)], 0.2))

  def solve(s):
    c = calibrate.calibrate_random(scores, closest < beta, s, reward_max=5.0, calib_pos=4.0)
    if calls is not None:
      calls[s] = c
    return c | {"beta": beta}
  return solve


def test_anchor_rises_when_random_items_outscore_the_median_heldout_item():
  # A weak user model: 21% of random items score above the median held-out item (P(N > 0.8)),
  # so with the median earning 4 of 5 a random policy earns far more than Ravg 0.36.
  scores, closest = _known_trajectories()
  heldout = np.random.default_rng(1).normal(0.8, 1.0, size=501)
  calls = {}
  solve = _fixed_beta_solver(scores, closest, calls)
  assert solve(float(np.median(heldout)))["random_ravg"] > calibrate.LFM_RANGES["Ravg"][1]
  calls.clear()
  c = calibrate.calibrate_random_anchor(solve, heldout, reward_max=5.0)
  assert c["anchor_quantile"] > 0.5
  assert calibrate.within_paper_ranges(c["random_r"], c["random_len"], c["random_ravg"])
  # The anchor quantile earns calib_pos, the median held-out item less ...
  s_anchor = np.quantile(heldout, c["anchor_quantile"])
  assert 5.0 / (1 + np.exp(-(s_anchor - c["center"]) / c["scale"])) == pytest.approx(4.0)
  assert c["heldout_median_reward"] < 4.0
  # ... and no other anchor that meets the ranges pays it more.
  assert len(calls) == len(calibrate.ANCHOR_QUANTILES)
  for other in calls.values():
    if calibrate.within_paper_ranges(other["random_r"], other["random_len"],
                                     other["random_ravg"]):
      paid = 5.0 / (1 + np.exp(-(np.median(heldout) - other["center"]) / other["scale"]))
      assert paid <= c["heldout_median_reward"] + 1e-9


def test_anchor_falls_back_to_the_median_when_no_anchor_meets_the_ranges():
  scores, closest = _known_trajectories()
  heldout = np.full(101, -3.0)  # every held-out item below nearly every random one
  c = calibrate.calibrate_random_anchor(_fixed_beta_solver(scores, closest), heldout,
                                        reward_max=5.0)
  assert c["anchor_quantile"] == 0.5 and c["heldout_median_reward"] == pytest.approx(4.0)
  assert not calibrate.within_paper_ranges(c["random_r"], c["random_len"], c["random_ravg"])


def _random_stats(env_dir, which):
  env, params, meta = build.load_env(env_dir, which)
  policy = policies.make_policy("random", env, params)
  out = jax.jit(lambda k: evaluate_policy(policy, env, params, k, 4096,
                                          meta.max_len))(jax.random.PRNGKey(7))
  return {k: float(out[k]) for k in ("R", "Len", "Ravg")}, meta


def check_sides(env_dir):
  """Both sides' random policy met the calibration and, measured again, is in the paper's
  ranges (also used by the default-preset CLI test, tests/envs/test_cli.py)."""
  for side in ("train", "test"):
    stats, meta = _random_stats(env_dir, side)
    assert meta.reports[side]["calibration_met"], meta.reports[side]
    # Measured again on fresh sessions with another key: inside the paper's LFM ranges.
    for k, (lo, hi) in calibrate.LFM_RANGES.items():
      assert lo <= stats[k] <= hi, (side, k, stats)


@pytest.mark.slow
def test_movielens_100k_random_policy_in_the_papers_ranges(tmp_path):
  # A weak user model there: random items outscore the median held-out item too often, so the
  # anchor rises above the median (calibrate_random_anchor) on both sides.
  recbole = pytest.importorskip("recbole")
  from jaxrec.data import load_dataset
  root = pathlib.Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
  out = str(tmp_path / "env")
  build.build_envs(load_dataset("movielens", str(root)), build.BuildConfig(seq_steps=300), out,
                   log=lambda s: None)
  check_sides(out)
  meta = build.read_meta(out)
  assert all(meta.reports[side]["anchor_quantile"] > 0.5 for side in ("train", "test"))
