"""Simulator mechanics: JAX vs NumPy reference, auto-reset, quit rule, determinism, storage."""

import json
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.data import SyntheticConfig, load_dataset, split_by_user
from jaxrec.envs import MatrixEnv, MatrixParams, QuitParams, RecEnv, build
from jaxrec.envs.reference import NumpyMatrixEnv, NumpySequentialEnv
from jaxrec.errors import ConfigError, DataError


def _vstep(env, fn):
  return jax.jit(jax.vmap(fn, in_axes=(0, 0, 0, None)))


def _rollout(env, params, n, t, seed=0, fn=None):
  """t random-action steps of n sessions; returns stacked (obs, reward, done, info), actions."""
  fn = fn or env.step
  key = jax.random.PRNGKey(seed)
  k0, key = jax.random.split(key)
  obs0, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k0, n), params)
  step = _vstep(env, fn)
  acts = np.random.default_rng(seed).integers(0, env.num_actions, size=(t, n))
  out = []
  for i in range(t):
    key, k = jax.random.split(key)
    obs, state, r, d, info = step(jax.random.split(k, n), state, jnp.asarray(acts[i]), params)
    out.append((obs, r, d, info))
  return obs0, out, acts


@pytest.mark.parametrize("kind", ["sequential", "matrix"])
def test_vmapped_step_equals_numpy_per_session(kind, seq_env_dir, matrix_env_dir):
  env_dir = seq_env_dir if kind == "sequential" else matrix_env_dir
  env, params, _ = build.load_env(env_dir, "train")
  ref_cls = NumpySequentialEnv if kind == "sequential" else NumpyMatrixEnv
  obs0, out, acts = _rollout(env, params, n=6, t=25)
  firsts = np.asarray(obs0.history[:, -1]) if kind == "sequential" else np.asarray(obs0.user)
  num_done = 0
  for s in range(6):
    ref = ref_cls(env, params)
    start = int(firsts[s])
    ref.reset(None, start) if kind == "sequential" else ref.reset(None, user=start)
    for i, (obs, r, d, info) in enumerate(out):
      h, rr, dd = ref.step(int(acts[i, s]))
      assert rr == pytest.approx(float(r[s]), abs=1e-4), (s, i)
      assert dd == bool(d[s]), (s, i)
      if dd:
        num_done += 1
        assert int(info["episode_length"][s]) == ref.t
        assert float(info["episode_return"][s]) == pytest.approx(ref.ret, abs=1e-3)
        # Auto-reset: continue the reference from the fresh episode the JAX env started.
        fresh = int(obs.history[s, -1]) if kind == "sequential" else int(obs.user[s])
        assert int(obs.step[s]) == 0
        ref.reset(None, fresh) if kind == "sequential" else ref.reset(None, user=fresh)
      else:
        np.testing.assert_array_equal(h, np.asarray(obs.history[s]))
  assert num_done > 0  # the comparison went through at least one auto-reset


def test_fused_sequential_reset_equals_generic_select(seq_env_dir):
  env, params, _ = build.load_env(seq_env_dir, "train")
  _, fused, _ = _rollout(env, params, n=16, t=20, seed=3)
  generic = lambda key, st, a, p: _generic_step(env, key, st, a, p)
  _, plain, _ = _rollout(env, params, n=16, t=20, seed=3, fn=generic)
  for (o1, r1, d1, _), (o2, r2, d2, _) in zip(fused, plain):
    np.testing.assert_allclose(np.asarray(r1), np.asarray(r2), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d2))
    np.testing.assert_array_equal(np.asarray(o1.history), np.asarray(o2.history))


def _generic_step(env, key, state, action, params):
  """RecEnv.step with the base class's compute-both-and-select reset."""
  saved = env._advance_or_reset
  env._advance_or_reset = lambda *a: RecEnv._advance_or_reset(env, *a)
  try:
    return env.step(key, state, action, params)
  finally:
    env._advance_or_reset = saved


@pytest.mark.parametrize("kind", ["sequential", "matrix"])
def test_same_key_same_trajectory_other_key_differs(kind, seq_env_dir, matrix_env_dir):
  env, params, _ = build.load_env(seq_env_dir if kind == "sequential" else matrix_env_dir)
  _, a, _ = _rollout(env, params, n=32, t=15, seed=1)
  _, b, _ = _rollout(env, params, n=32, t=15, seed=1)
  _, c, _ = _rollout(env, params, n=32, t=15, seed=2)
  ra, rb, rc = (np.stack([np.asarray(x[1]) for x in o]) for o in (a, b, c))
  np.testing.assert_array_equal(ra, rb)
  assert not np.array_equal(ra, rc)


def test_rewards_in_range(seq_env_dir, matrix_env_dir):
  for d, lo, hi in ((seq_env_dir, 0.0, 5.0), (matrix_env_dir, 1.0, 5.0)):
    env, params, _ = build.load_env(d, "test")
    _, out, _ = _rollout(env, params, n=64, t=10)
    r = np.stack([np.asarray(x[1]) for x in out])
    assert r.min() >= lo and r.max() <= hi and r.std() > 0.1


def test_step_compiles_once(seq_env_dir):
  env, params, _ = build.load_env(seq_env_dir)
  step = chex.assert_max_traces(env.step, n=1)
  jitted = jax.jit(step)
  _, state = env.reset(jax.random.PRNGKey(0), params)
  for i in range(3):  # new action values and a new key must not retrace
    _, state, *_ = jitted(jax.random.PRNGKey(i), state, jnp.int32(i), params)


# --- the quit rule on hand-made states ---------------------------------------------------------

def _hand_env(min_reward=2.0, beta=0.5, max_len=5):
  """4 users x 6 items; items 0 and 1 are close (distance 0.1), others far apart."""
  table = jnp.asarray([[4.0, 4.0, 1.0, 3.0, 3.0, 3.0]] * 4)
  vecs = jnp.asarray([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0], [9.0, 9.0]])
  params = MatrixParams(table=table, item_vecs=vecs,
                        quit=QuitParams(beta=jnp.float32(beta), min_reward=jnp.float32(min_reward),
                                        max_len=jnp.int32(max_len)))
  return MatrixEnv(6, history_len=4, quit_window=2), params


def _play(actions, **kw):
  env, params = _hand_env(**kw)
  _, state = env.reset_env(jax.random.PRNGKey(0), params)
  dones, infos = [], []
  for a in actions:
    _, state, r, d, info = env.step_env(None, state, jnp.int32(a), params)
    dones.append(bool(d))
    infos.append({k: bool(v) for k, v in info.items() if v.dtype == bool})
  return dones, infos, state


def test_quit_on_low_reward():
  dones, infos, _ = _play([0, 2])
  assert dones == [False, True] and infos[1]["quit_low_reward"]


def test_quit_on_similar_item_within_window():
  dones, infos, _ = _play([0, 1])  # distance 0.1 < beta 0.5
  assert dones == [False, True] and infos[1]["quit_similar"] and not infos[1]["quit_low_reward"]


def test_similar_item_outside_window_does_not_quit():
  dones, _, _ = _play([0, 3, 4, 1])  # window 2: item 0 has left it when 1 comes
  assert dones == [False, False, False, False]


def test_repeating_an_item_quits():
  dones, infos, _ = _play([3, 3])
  assert dones[1] and infos[1]["quit_similar"]


def test_truncation_at_max_len():
  dones, infos, state = _play([0, 3, 4, 5, 0], max_len=5)
  assert dones == [False] * 4 + [True] and infos[-1]["truncated"]
  assert int(state.t) == 5 and float(state.ret) == pytest.approx(17.0)
  np.testing.assert_array_equal(np.asarray(state.history), [3, 4, 5, 0])


def test_auto_reset_starts_fresh_episode():
  env, params = _hand_env()
  _, state = env.reset(jax.random.PRNGKey(0), params)
  obs, state, r, done, info = env.step(jax.random.PRNGKey(1), state, jnp.int32(2), params)
  assert bool(done) and float(r) == 1.0 and int(info["episode_length"]) == 1
  assert int(state.t) == 0 and float(state.ret) == 0.0
  np.testing.assert_array_equal(np.asarray(obs.history), [-1] * 4)
  np.testing.assert_array_equal(np.asarray(state.recent), [-1, -1])


# --- env directories ----------------------------------------------------------------------------

def test_save_restore_round_trip(small_dataset, tmp_path):
  cfg = build.BuildConfig(kind="matrix", mf_steps=200)
  out = str(tmp_path / "env")
  build.build_envs(small_dataset, cfg, out, log=lambda s: None)
  built_env, built, _, _ = build.build_matrix(
      split_by_user(small_dataset, 0.8, 0)[0], cfg, log=lambda s: None)
  env, params, meta = build.load_env(out, "train", expect_dataset="synthetic",
                                     dataset=small_dataset)
  assert meta.kind == "matrix" and meta.fingerprint == build.fingerprint(small_dataset)
  for a, b in zip(jax.tree_util.tree_leaves(built), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_missing_env_dir_is_one_line_error(tmp_path):
  with pytest.raises(DataError, match="not an env directory") as e:
    build.load_env(str(tmp_path / "nope"))
  assert "\n" not in str(e.value)


def test_env_from_another_dataset_is_refused(seq_env_dir):
  with pytest.raises(DataError, match="built from dataset 'synthetic', not 'coat'"):
    build.load_env(seq_env_dir, expect_dataset="coat")
  other = load_dataset("synthetic", synthetic_cfg=SyntheticConfig(
      num_users=300, num_items=200, num_genres=6, mean_length=15, seed=7))
  with pytest.raises(DataError, match="different version"):
    build.load_env(seq_env_dir, dataset=other)


def test_env_dir_with_damaged_params_is_refused(seq_env_dir, tmp_path):
  copy = str(tmp_path / "env")
  shutil.copytree(seq_env_dir, copy)
  shutil.rmtree(os.path.join(copy, "test", "params"))
  with pytest.raises(DataError, match="cannot restore env params"):
    build.load_env(copy, "test")
  meta = json.loads(open(os.path.join(copy, "env.json")).read())
  meta["format"] = 999
  open(os.path.join(copy, "env.json"), "w").write(json.dumps(meta))
  with pytest.raises(DataError, match="env format 999"):
    build.load_env(copy)


def test_existing_out_dir_is_refused(small_dataset, seq_env_dir):
  with pytest.raises(DataError, match="already exists"):
    build.build_envs(small_dataset, build.BuildConfig(), seq_env_dir, log=lambda s: None)


@pytest.mark.parametrize("kind", [pytest.param("sequential", marks=pytest.mark.slow), "matrix"])
def test_quit_space_shares_or_separates_the_similarity_quit(kind, small_dataset, tmp_path,
                                                            seq_env_dir, matrix_env_dir):
  # Default (train): the test env judges "too similar" with the train env's item vectors and
  # beta; own: with its own model's.
  shared = seq_env_dir if kind == "sequential" else matrix_env_dir
  _, tr, _ = build.load_env(shared, "train")
  _, te, _ = build.load_env(shared, "test")
  np.testing.assert_array_equal(np.asarray(tr.item_vecs), np.asarray(te.item_vecs))
  assert float(tr.quit.beta) == float(te.quit.beta)
  out = str(tmp_path / "own")
  build.build_envs(small_dataset, build.BuildConfig(kind=kind, quit_space="own", seq_steps=200,
                                                    mf_steps=400), out, log=lambda s: None)
  _, tr2, _ = build.load_env(out, "train")
  _, te2, meta = build.load_env(out, "test")
  np.testing.assert_array_equal(np.asarray(tr.item_vecs), np.asarray(tr2.item_vecs))
  assert not np.allclose(np.asarray(tr2.item_vecs), np.asarray(te2.item_vecs))
  assert meta.build["quit_space"] == "own"
  with pytest.raises(ConfigError, match="--quit_space must be one of own, train"):
    build.BuildConfig(quit_space="both").validate()


def test_env_meta_is_typed_and_its_optional_parts_are_checked(seq_env_dir, tmp_path):
  meta = build.read_meta(seq_env_dir)
  assert isinstance(meta, build.EnvMeta) and meta.kind == "sequential"
  assert meta.max_len == meta.build["max_len"] and meta.protocol == "paper" and meta.peer is None
  assert set(meta.reports) == {"train", "test"} and meta.raw["fingerprint"] == meta.fingerprint
  copy = str(tmp_path / "env")
  shutil.copytree(seq_env_dir, copy)
  raw = json.loads(open(os.path.join(copy, "env.json")).read())
  open(os.path.join(copy, "env.json"), "w").write(json.dumps(raw | {"peer": [1]}))
  with pytest.raises(DataError, match=r"env.json: peer: expected a JSON dict"):
    build.read_meta(copy)
