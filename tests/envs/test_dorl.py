"""DORL's train env (jaxrec.envs.dorl): the ensemble variance and the entropy tables against a
transcription of the authors' dict-based code, the shaped reward against their step formula
step for step, lambda 0 = the plain peer train env bit for bit, the env directory's dorl/ part
and the refusals."""

import json
import subprocess
import sys
import types
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.envs import MatrixEnv, dorl, peer
from jaxrec.errors import DataError


def _logged(seqs, num_items):
  """A stand-in with the Dataset fields entropy_stats reads."""
  lengths = np.asarray([len(s) for s in seqs])
  return types.SimpleNamespace(
      num_items=num_items, seq_items=np.asarray([i for s in seqs for i in s], np.int32),
      offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), lengths=lengths)


def _authors_map(seqs, window=(1, 2)):
  """EasyRL4Rec user_model_ensemble.get_save_entropy_mat, transcribed: {sorted context tuple:
  normalised entropy of its next items}."""
  def get_entropy(cnt):
    if len(cnt) <= 1:
      return 1
    prob = np.array(list(cnt.values())) / sum(cnt.values())
    return -np.sum(np.log2(prob) * prob) / np.log2(len(cnt))
  counts = defaultdict(lambda: defaultdict(int))
  for seq in seqs:
    hist = []
    for item in seq:
      for k in window:
        if len(hist) >= k:
          counts[tuple(sorted(hist[-k:]))][item] += 1
      hist.append(item)
  return {k: get_entropy(v) for k, v in counts.items()}


def _authors_entropy(emap, actions):
  """penalty_ent_exp._compute_pred_reward's entropy of the episode's actions so far (the last
  one = the action being rewarded), step_n_actions 2."""
  action_k = actions[-2:]
  rev = action_k[::-1]
  e = sum(emap.get(tuple(sorted(rev[:k + 1])), 1) for k in range(len(rev)))
  return e + (2 - len(rev))


SEQS = [[0, 1, 2, 1, 0, 3], [1, 2, 1, 3, 3, 0, 1], [2, 2, 2], [4], [0, 1, 0, 1, 2]]


def test_entropy_tables_equal_the_authors_dict_code():
  n = 6
  stats = dorl.entropy_stats(_logged(SEQS, n))
  emap = _authors_map(SEQS)
  for i in range(n):
    want = emap.get((i,))
    assert bool(stats["single_seen"][i]) == (want is not None)
    assert stats["single"][i] == pytest.approx(1.0 if want is None else want, abs=1e-6)
  pairs = {k: v for k, v in emap.items() if len(k) == 2}
  codes = [a * n + b for a, b in sorted(pairs)]
  np.testing.assert_array_equal(stats["pair_codes"], codes)
  np.testing.assert_allclose(stats["pair_ent"], [pairs[k] for k in sorted(pairs)], atol=1e-6)
  assert np.all(np.diff(stats["pair_codes"]) > 0)
  # a context followed by one distinct item is worth 1 (the port's len <= 1 case)
  assert stats["single"][4] == 1.0 and not stats["single_seen"][4]
  assert dict(zip(*np.unique(stats["pair_ent"] == 1.0, return_counts=True)))[True] >= 1
  lo, hi = dorl.entropy_bounds(stats)
  assert lo == pytest.approx(min(v for k, v in emap.items() if len(k) == 1)
                             + min(pairs.values()), abs=1e-6)
  assert hi == pytest.approx(max(v for k, v in emap.items() if len(k) == 1)
                             + max(pairs.values()), abs=1e-6)


def test_variance_table_is_numpy_population_variance():
  tables = np.random.default_rng(0).normal(3, 1, size=(4, 5, 6)).astype(np.float32)
  np.testing.assert_allclose(dorl.variance_table(tables), tables.astype(np.float64).var(0),
                             rtol=1e-6)


def _envs(lv, le, seed=0, users=7, items=6):
  rng = np.random.default_rng(seed)
  true = rng.integers(1, 6, size=(users, items)).astype(np.float32)
  pred = rng.normal(3, 1, size=(users, items)).astype(np.float32)
  vecs = true.T
  d = np.linalg.norm(vecs[:, None] - vecs[None], axis=-1)
  threshold = float(np.quantile(d[np.triu_indices(items, 1)], 0.1))
  (env, plain), _ = peer.peer_envs(true, pred, threshold, history_len=4)
  var = rng.uniform(0, 0.5, size=(users, items)).astype(np.float32)
  stats = dorl.entropy_stats(_logged(SEQS, items))
  denv = dorl.DorlMatrixEnv(items, 4, env.quit_window, env.window_rule)
  return env, plain, denv, dorl.shaped_params(plain, var, stats, lv, le), pred, var


def _rollout(env, params, acts, key):
  n = acts.shape[1]
  _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, n), params)
  step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
  out = []
  for i, a in enumerate(acts):
    users = np.asarray(state.user)
    obs, state, r, d, _ = step(jax.random.split(jax.random.fold_in(key, i), n), state,
                               jnp.asarray(a), params)
    out.append((users, np.asarray(r), np.asarray(d), np.asarray(obs.history)))
  return out


def test_shaped_reward_equals_the_authors_formula_step_for_step():
  lv, le = 0.7, 3.0
  _, _, env, params, pred, var = _envs(lv, le)
  emap = _authors_map(SEQS)
  ent = [v for k, v in emap.items() if len(k) == 1], [v for k, v in emap.items() if len(k) == 2]
  min_r = pred.min() - lv * var.max() + le * (min(ent[0]) + min(ent[1]))
  max_r = pred.max() - lv * var.min() + le * (max(ent[0]) + max(ent[1]))
  assert float(env.reward_bounds(params)[1]) == pytest.approx(max_r - min_r, rel=1e-5)
  n, steps = 6, 40
  acts = np.random.default_rng(2).integers(0, env.num_actions, size=(steps, n))
  episodes = [[] for _ in range(n)]
  shaped = 0
  for i, (users, r, d, _) in enumerate(_rollout(env, params, acts, jax.random.PRNGKey(1))):
    for s in range(n):
      episodes[s].append(int(acts[i, s]))
      a = episodes[s][-1]
      want = max(0.0, pred[users[s], a] - lv * var[users[s], a]
                 + le * _authors_entropy(emap, episodes[s]) - min_r)
      assert float(r[s]) == pytest.approx(want, abs=1e-5), (i, s, episodes[s])
      shaped += len(episodes[s]) > 1
      if d[s]:
        episodes[s] = []
  assert shaped > 50  # the pair term was read, not only the first step's padding


def test_hand_made_trajectory():
  """Items 0 -> 1 -> 4 for one user: H1[0] + pad 1, then H1[1] + H2[{0, 1}], then H1[4]
  (absent: 1) + H2[{1, 4}] (absent: 1)."""
  lv, le = 0.5, 2.0
  _, _, env, params, _, var = _envs(lv, le)
  emap = _authors_map(SEQS)
  state = env.reset(jax.random.PRNGKey(0), params)[1].replace(user=jnp.int32(2))
  shift = float(params.shift)
  table = np.asarray(params.table)
  bonus = [emap[(0,)] + 1, emap[(1,)] + emap[(0, 1)], 1 + 1]
  assert (4,) not in emap and (1, 4) not in emap
  for a, b in zip([0, 1, 4], bonus):
    _, state, r, _, _ = env.step_env(jax.random.PRNGKey(0), state, jnp.int32(a), params)
    want = max(0.0, table[2, a] - lv * var[2, a] + le * b - shift)
    assert float(r) == pytest.approx(want, abs=1e-5)
  np.testing.assert_allclose(
      np.asarray(env.all_rewards(params, state)),
      [max(0.0, table[2, a] - lv * var[2, a] + le * (emap.get((a,), 1) + emap.get(
          tuple(sorted((4, a))), 1)) - shift) for a in range(env.num_actions)], atol=1e-5)


def test_lambda_zero_is_the_plain_peer_train_env_bit_for_bit():
  plain_env, plain, env, params, _, _ = _envs(0.0, 0.0, seed=3)
  assert isinstance(env, MatrixEnv)
  acts = np.random.default_rng(4).integers(0, env.num_actions, size=(50, 8))
  key = jax.random.PRNGKey(5)
  for (u0, r0, d0, h0), (u1, r1, d1, h1) in zip(_rollout(plain_env, plain, acts, key),
                                                _rollout(env, params, acts, key)):
    for x, y in ((u0, u1), (r0, r1), (d0, d1), (h0, h1)):
      np.testing.assert_array_equal(x, y)
  for x, y in zip(plain_env.reward_bounds(plain), env.reward_bounds(params)):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_step_compiles_once():
  _, _, env, params, _, _ = _envs(0.3, 1.0)
  import chex
  chex.clear_trace_counter()  # chex counts by source location: other env tests trace step too
  step = jax.jit(chex.assert_max_traces(env.step, n=1))
  _, state = env.reset(jax.random.PRNGKey(0), params)
  for i in range(3):
    _, state, *_ = step(jax.random.PRNGKey(i), state, jnp.int32(i), params)


# --- env directories and the CLIs --------------------------------------------------------------

def _build(tmp_path, name, *extra):
  out = tmp_path / name
  res = subprocess.run([sys.executable, "-m", "experiments.build_envs", "--dataset=synthetic",
                        "--synthetic_users=40", "--synthetic_items=25", "--synthetic_genres=3",
                        "--synthetic_mean_length=8", "--protocol=peer", f"--out={out}",
                        "--mf_steps=200", "--leave_threshold=3.5", *extra],
                       capture_output=True, text=True, timeout=600)
  return res, out


def _error_line(res):
  lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
  assert res.returncode == 2 and len(lines) == 1, res.stderr[-1500:]
  return lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """(a plain peer env directory, the same built with --dorl_ensemble=3)."""
  from jaxrec.data import SyntheticConfig, load_dataset
  from jaxrec.envs import build
  syn = SyntheticConfig(num_users=40, num_items=25, num_genres=3, mean_length=8)
  ds = load_dataset("synthetic", synthetic_cfg=syn)
  true, source = peer.true_matrix_for(ds, None, syn)
  tmp = tmp_path_factory.mktemp("dorl")
  for name, n in (("plain", 0), ("dorl", 3)):
    cfg = build.BuildConfig(protocol="peer", mf_steps=200, leave_threshold=3.5, dorl_ensemble=n)
    build.build_envs(ds, cfg, str(tmp / name), log=lambda s: None, true_matrix=true,
                     true_source=source)
  return tmp / "plain", tmp / "dorl"


def test_env_directory_carries_the_statistics_and_default_builds_do_not(built):
  plain_dir, out = built
  from jaxrec.envs import build
  from jaxrec.usermodels import matrix as mx
  meta = json.loads((out / "env.json").read_text())
  assert meta["build"]["dorl_ensemble"] == 3 and meta["dorl"]["seeds"] == [0, 1, 2]
  assert len(meta["dorl"]["member_rmse"]) == 3
  plain_meta = json.loads((plain_dir / "env.json").read_text())
  assert "dorl_ensemble" not in plain_meta["build"] and "dorl" not in plain_meta
  assert not (plain_dir / "dorl").exists()
  # same train env either way (member 0 is the plain fit)
  _, p0, _ = build.load_env(str(plain_dir), "train")
  _, p1, _ = build.load_env(str(out), "train")
  np.testing.assert_array_equal(np.asarray(p0.table), np.asarray(p1.table))
  # the stored variance: the three members' tables, refitted here
  ds = build.load_dataset_of(str(out))
  tables = []
  for seed in range(3):
    cfg = build.BuildConfig(protocol="peer", mf_steps=200, seed=seed, leave_threshold=3.5)
    tables.append(build.build_matrix(ds, cfg, lambda s: None)[1].table)
  var, stats, dmeta = dorl.load_stats(str(out), ds.num_users, ds.num_items)
  np.testing.assert_allclose(var, dorl.variance_table(np.stack(tables)), rtol=1e-5, atol=1e-7)
  want = dorl.entropy_stats(ds)
  for k in want:
    np.testing.assert_array_equal(stats[k], want[k])
  assert dmeta["format"] == dorl.FORMAT and mx is not None
  env, params, _ = dorl.load_train_env(str(out), 0.05, 3.0)
  assert isinstance(env, dorl.DorlMatrixEnv) and params.var.shape == p1.table.shape


def _train(env, workdir, *extra):
  return subprocess.run([sys.executable, "-m", "jaxrec.train", f"--env={env}",
                         f"--workdir={workdir}", "--total_steps=6000", "--steps_per_epoch=3000",
                         "--eval_sessions=20", *extra], capture_output=True, text=True,
                        timeout=600)


def test_train_refuses_an_env_without_statistics(built, tmp_path):
  plain_dir, out = built
  line = _error_line(_train(plain_dir, tmp_path / "r0", "--config=dorl"))
  assert str(plain_dir) in line and "--dorl_ensemble" in line
  assert not (tmp_path / "r0").exists()
  line = _error_line(_train(out, tmp_path / "r1", "--config=dorl", "--train_reward=plain"))
  assert "--train_reward" in line and not (tmp_path / "r1").exists()
  line = _error_line(_train(out, tmp_path / "r2", "--train_reward=dorl", "--lambda_entropy=-1"))
  assert "--lambda_entropy" in line and not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_dorl_runs_and_with_lambda_zero_is_the_easyrl4rec_run(built, tmp_path):
  """End to end: --config=dorl trains; with both weights 0 it trains and evaluates exactly as
  --config=easyrl4rec (same curve and test metrics; only the wall-clock field differs)."""
  _, out = built
  rows = {}
  for name, extra in (("dorl", ["--config=dorl"]), ("a2c", ["--config=easyrl4rec"]),
                      ("dorl0", ["--config=dorl", "--lambda_variance=0", "--lambda_entropy=0"])):
    res = _train(out, tmp_path / name, *extra)
    assert res.returncode == 0, res.stderr[-2000:]
    rows[name] = [{k: v for k, v in json.loads(x).items() if k != "steps_per_s"}
                  for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
  flags = json.loads((tmp_path / "dorl" / "flags.json").read_text())
  assert flags["train_reward"] == "dorl" and flags["lambda_entropy"] == 3.0
  assert [r["epoch"] for r in rows["dorl"]] == [0, 1, 2] and "NX_10_R" in rows["dorl"][-1]
  assert rows["a2c"] == rows["dorl0"]
  from jaxrec.checkpoint import restore_run  # export's path rebuilds the DORL train env too
  assert restore_run(str(tmp_path / "dorl")) is not None
  assert rows["dorl"][1]["train_curve_return"] != rows["a2c"][1]["train_curve_return"]


def test_bad_stats_and_flags_are_refused(built, tmp_path):
  _, out = built
  import shutil
  bad = tmp_path / "bad"
  shutil.copytree(out, bad)
  meta = json.loads((bad / "dorl" / "dorl.json").read_text())
  (bad / "dorl" / "dorl.json").write_text(json.dumps(meta | {"format": 99}))
  with pytest.raises(DataError, match="DORL format 99"):
    dorl.load_train_env(str(bad), 0.0, 0.0)
  (bad / "dorl" / "dorl.json").write_text(json.dumps(meta))
  z = dict(np.load(bad / "dorl" / "dorl.npz"))
  np.savez(bad / "dorl" / "dorl.npz", **(z | {"var": z["var"][:, :-1]}))
  with pytest.raises(DataError, match="var is"):
    dorl.load_train_env(str(bad), 0.0, 0.0)
  for extra, expect in ((("--dorl_ensemble=1",), "at least 2"),
                        (("--dorl_ensemble=3", "--protocol=paper"), "applies to --protocol=peer")):
    res, o = _build(tmp_path, "x", *extra)
    assert expect in _error_line(res) and not o.exists()
