"""The peer (EasyRL4Rec) protocol: its leave rule and evaluation modes against NumPy references
step for step, quit-cause counting, and bad ground-truth matrices."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.envs import MatrixEnv, MatrixParams, QuitParams, peer
from jaxrec.envs.base import leave_window
from jaxrec.envs.reference import NumpyMatrixEnv
from jaxrec.train.evaluation import evaluate_policy, parse_mode


def _peer_env(seed=0, users=12, items=15, q=0.25):
  """A small peer-protocol true env on random integer ratings; the threshold at the q
  quantile of item distances so that leaves happen often."""
  rng = np.random.default_rng(seed)
  true = rng.integers(1, 6, size=(users, items)).astype(np.float32)
  vecs = true.T
  d = np.linalg.norm(vecs[:, None] - vecs[None], axis=-1)
  threshold = float(np.quantile(d[np.triu_indices(items, 1)], q))
  _, (env, params) = peer.peer_envs(true, true, threshold, history_len=5)
  return env, params


def test_leave_window_counts_follow_python_slicing():
  w = 7
  for t in range(12):
    seq = list(range(t))
    want = len(seq[t - w:t]) if t else 0
    assert int(leave_window("peer", w, jnp.int32(t)).sum()) == want, t
  assert [int(leave_window("last", 4, jnp.int32(t)).sum()) for t in range(6)] == [0, 1, 2, 3, 4, 4]


def test_peer_leave_rule_equals_numpy_reference_step_for_step():
  env, params = _peer_env()
  n, steps = 8, 60
  key = jax.random.PRNGKey(3)
  _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, n), params)
  step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
  acts = np.random.default_rng(1).integers(0, env.num_actions, size=(steps, n))
  refs = [NumpyMatrixEnv(env, params) for _ in range(n)]
  for s, ref in enumerate(refs):
    ref.reset(None, user=int(state.user[s]))
  leaves = 0
  for i in range(steps):
    key, k = jax.random.split(key)
    obs, state, r, d, info = step(jax.random.split(k, n), state, jnp.asarray(acts[i]), params)
    for s, ref in enumerate(refs):
      _, rr, dd = ref.step(int(acts[i, s]))
      assert rr == pytest.approx(float(r[s])) and dd == bool(d[s]), (i, s)
      if dd:
        leaves += bool(info["quit_similar"][s])
        ref.reset(None, user=int(obs.user[s]))
  assert leaves > 10  # the rule fired, at the quirky short windows too


def _scripted(order):
  """A policy that takes, per session user, the first allowed item of a fixed preference
  order [U, I] (so FB repeats its top item and NX walks down the order)."""
  def policy(key, history, state, allowed):
    pref = order[state.user]
    if allowed is None:
      return pref[:, 0]
    ok = jnp.take_along_axis(allowed, pref, axis=1)
    return jnp.take_along_axis(pref, jnp.argmax(ok, axis=1)[:, None], axis=1)[:, 0]
  return policy


@pytest.mark.parametrize("mode", ["FB", "NX_0", "NX_10"])
def test_eval_modes_equal_numpy_reference(mode):
  env, params = _peer_env(seed=2, q=0.1)
  order = jnp.asarray(np.argsort(-np.asarray(params.table), axis=1), jnp.int32)
  n = 16
  out, per = jax.jit(lambda k: _eval_with_users(env, params, order, k, n, mode))(
      jax.random.PRNGKey(0))
  mask, force = parse_mode(mode)
  rets, lens = [], []
  for u in np.asarray(per):
    ref = NumpyMatrixEnv(env, params)
    ref.reset(None, user=int(u))
    used, ret, length = set(), 0.0, 0
    for t in range(force or 30):
      a = next(int(i) for i in np.asarray(order[u]) if not (mask and int(i) in used))
      _, r, done = ref.step(a)
      used.add(a)
      ret, length = ret + r, length + 1
      if (force and t + 1 >= force) or (not force and done):
        break
    rets.append(ret)
    lens.append(length)
  assert float(out["R"]) == pytest.approx(np.mean(rets), rel=1e-5)
  assert float(out["Len"]) == pytest.approx(np.mean(lens))
  if mode == "FB":  # the top item twice: every episode leaves at step 2
    assert float(out["Len"]) == 2.0 and float(out["quit_similar"]) == 1.0
    assert float(out["distinct"]) == 1.0
  else:
    assert float(out["distinct"]) == float(out["Len"])  # masked: no repeats
  if force:
    assert float(out["Len"]) == force and float(out["quit_forced"]) == 1.0


def _eval_with_users(env, params, order, key, n, mode):
  """evaluate_policy plus the users its sessions drew (same reset keys)."""
  k_reset, _ = jax.random.split(key)
  _, state = jax.vmap(env.reset_env, in_axes=(0, None))(jax.random.split(k_reset, n), params)
  return evaluate_policy(_scripted(order), env, params, key, n, 30, mode), state.user


def test_quit_causes_on_hand_built_episodes():
  # 3 users; items far apart (eye * 10) so only a repeat is "similar"; min_reward 2.
  table = jnp.asarray([[5.0, 5.0, 5.0, 1.0],   # user 0: distinct good items -> max_len
                       [5.0, 5.0, 5.0, 5.0],   # user 1: repeats item 0 -> similar
                       [5.0, 1.0, 5.0, 5.0]])  # user 2: item 1 earns 1 -> low reward
  env = MatrixEnv(4, history_len=3, quit_window=2)
  params = MatrixParams(table=table, item_vecs=jnp.eye(4) * 10.0,
                        quit=QuitParams(beta=jnp.float32(1.0), min_reward=jnp.float32(2.0),
                                        max_len=jnp.int32(3)))
  script = jnp.asarray([[0, 1, 2], [0, 0, 2], [0, 1, 2]], jnp.int32)

  def policy(key, history, state, allowed):
    return script[state.user, jnp.minimum(state.t, 2)]

  n = 64
  out = evaluate_policy(policy, env, params, jax.random.PRNGKey(5), n, 3)
  _, state = jax.vmap(env.reset_env, in_axes=(0, None))(
      jax.random.split(jax.random.split(jax.random.PRNGKey(5))[0], n), params)
  share = np.bincount(np.asarray(state.user), minlength=3) / n
  assert float(out["quit_max_len"]) == pytest.approx(share[0])
  assert float(out["quit_similar"]) == pytest.approx(share[1])
  assert float(out["quit_low_reward"]) == pytest.approx(share[2])
  assert float(out["Len"]) == pytest.approx(3 * share[0] + 2 * share[1] + 2 * share[2])
  assert float(out["CV"]) == pytest.approx(3 / 4)


def test_calibrated_threshold_gives_the_peer_random_length():
  rng = np.random.default_rng(0)
  true = np.clip(np.round(3 + rng.normal(size=(200, 150)) * 1.2), 1, 5).astype(np.float32)
  threshold, length = peer.calibrate_threshold(true, seed=0)
  assert length == pytest.approx(peer.RANDOM_LEN, abs=0.5)
  # Independent trajectories (another key) at that threshold: the same length.
  again = peer.random_lengths(true, np.asarray([threshold]),
                              jax.random.PRNGKey(9))[0]
  assert again == pytest.approx(peer.RANDOM_LEN, abs=0.8)


def _build(tmp_path, matrix_text, name="m.txt"):
  f = tmp_path / name
  f.write_text(matrix_text)
  out = tmp_path / "env"
  res = subprocess.run([sys.executable, "-m", "experiments.build_envs", "--dataset=synthetic",
                        "--synthetic_users=30", "--synthetic_items=20", "--synthetic_genres=3",
                        "--synthetic_mean_length=8", "--protocol=peer", f"--true_matrix={f}",
                        f"--out={out}", "--mf_steps=200"],
                       capture_output=True, text=True, timeout=300)
  return res, out


@pytest.mark.parametrize("text, expect", [
    ("1 2 3\n4 5\n", "m.txt:2: 2 values, the first line has 3"),
    ("1 2 x\n", "m.txt:1: field column 3 (item 2): expected a number, got 'x'"),
    ("1 nan 3\n", "m.txt:1: field column 2 (item 1): expected a finite number, got 'nan'"),
    ("1 2 3\n", "has no row in the matrix (1 x 3)"),  # ids outside the matrix
])
def test_bad_true_matrix_is_one_line_exit_2_nothing_written(tmp_path, text, expect):
  res, out = _build(tmp_path, text)
  assert res.returncode == 2, res.stderr[-1500:]
  lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
  assert len(lines) == 1 and expect in lines[0], res.stderr[-1500:]
  assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


def test_peer_env_directory_from_a_matrix_file(tmp_path):
  rng = np.random.default_rng(0)
  np.save(tmp_path / "truth.npy", rng.integers(1, 6, size=(30, 20)).astype(np.float32))
  res = subprocess.run([sys.executable, "-m", "experiments.build_envs", "--dataset=synthetic",
                        "--synthetic_users=30", "--synthetic_items=20", "--synthetic_genres=3",
                        "--synthetic_mean_length=8", "--protocol=peer",
                        f"--true_matrix={tmp_path / 'truth.npy'}", f"--out={tmp_path / 'env'}",
                        "--mf_steps=200", "--leave_threshold=3.5"],
                       capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-1500:]
  meta = json.loads((tmp_path / "env" / "env.json").read_text())
  assert meta["protocol"] == "peer" and meta["peer"]["leave_threshold"] == 3.5
  assert len(meta["peer"]["true_matrix"]["sha256"]) == 64
  from jaxrec.envs import build
  env, test, _ = build.load_env(str(tmp_path / "env"), "test")
  _, train, _ = build.load_env(str(tmp_path / "env"), "train")
  assert env.window_rule == "peer" and env.quit_window == 7
  assert float(test.quit.min_reward) == -np.inf and int(test.quit.max_len) == 30
  assert float(jnp.min(train.table)) == 0.0  # the fitted model's rewards, shifted
  np.testing.assert_array_equal(np.asarray(test.item_vecs), np.asarray(test.table).T)


def test_kuairec_peer_env_takes_small_matrix_as_its_truth(tmp_path):
  """--dataset=kuairec --protocol=peer needs no --true_matrix: small_matrix.csv in --data_dir,
  clipped and aligned by id (tests/data/conftest.py spells the expected cells out)."""
  from data.conftest import KUAIREC_TRUTH, write_kuairec
  data = write_kuairec(tmp_path / "kuairec")
  res = subprocess.run([sys.executable, "-m", "experiments.build_envs", "--dataset=kuairec",
                        f"--data_dir={data}", "--min_user=1", "--min_item=1", "--protocol=peer",
                        f"--out={tmp_path / 'env'}", "--mf_steps=200", "--leave_threshold=1"],
                       capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-1500:]
  meta = json.loads((tmp_path / "env" / "env.json").read_text())
  assert meta["peer"]["true_matrix"]["path"] == str(data / "small_matrix.csv")
  from jaxrec.envs import build
  _, test, _ = build.load_env(str(tmp_path / "env"), "test")
  np.testing.assert_allclose(np.asarray(test.table), KUAIREC_TRUTH, rtol=1e-6)


def test_user_token_stays_first_in_the_history_and_reaches_the_agent():
  rng = np.random.default_rng(4)
  true = rng.integers(1, 6, size=(5, 9)).astype(np.float32)
  _, (env, params) = peer.peer_envs(true, true, 0.5, history_len=4, user_token=True)
  assert env.num_tokens == 9 + 5 and env.num_actions == 9
  obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0), params)
  user = int(state.user)
  np.testing.assert_array_equal(np.asarray(obs.history), [-1, -1, -1, 9 + user])
  step = jax.jit(env.step_env)
  for i, a in enumerate([0, 3, 5, 7, 2]):
    obs, state, r, _, _ = step(jax.random.PRNGKey(i), state, jnp.int32(a), params)
    assert float(r) == true[user, a]  # rewards are the user's, as without the token
  # The token pinned in slot 0, the last L - 1 items after it.
  np.testing.assert_array_equal(np.asarray(obs.history), [9 + user, 5, 7, 2])
  from jaxrec.agents.registry import AgentConfig, make_agent
  agent = make_agent("a2c", AgentConfig(dim=8, num_layers=1, num_heads=1), env.num_actions,
                     env.history_len, num_tokens=env.num_tokens)
  p = agent.init_params(jax.random.PRNGKey(1))
  assert p["params"]["encoder"]["items"]["embedding"].shape == (14, 8)
  # Two users with the same items see different logits: the token is read.
  h = jnp.asarray([[9, 5, 7, 2], [10, 5, 7, 2]], jnp.int32)
  logits = agent.logits(p, h)
  assert not np.allclose(np.asarray(logits[0]), np.asarray(logits[1]))
