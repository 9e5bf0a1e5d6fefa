"""Reference policies: allowed items only, greedy = argmax of the true rewards, popularity skips
the history, the planner outlives greedy where greedy repeats itself, no retracing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.envs import MatrixEnv, MatrixParams, QuitParams, build
from jaxrec.envs.policies import POLICIES, close_pairs, make_policy, safe_mask
from jaxrec.envs.reference import NumpySequentialEnv
from jaxrec.errors import ConfigError


@pytest.fixture(scope="module")
def test_envs(seq_env_dir, matrix_env_dir):
  """kind -> (env, params) of the test side."""
  return {kind: build.load_env(d, "test")[:2]
          for kind, d in (("sequential", seq_env_dir), ("matrix", matrix_env_dir))}


def _states(env, params, n, steps=0, seed=0):
  """n sessions after `steps` random recommendations (so `recent` is partly filled)."""
  key = jax.random.PRNGKey(seed)
  _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, n), params)
  step = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))
  for i in range(steps):
    k = jax.random.fold_in(key, i + 1)
    actions = jax.random.randint(k, (n,), 0, env.num_actions)
    _, state, _, _, _ = step(jax.random.split(k, n), state, actions, params)
  return state


def _episodes(env, params, policy, n, steps, seed=0, mask=False):
  """One episode in each of n sessions under `policy`, at most `steps` long, counting stops at
  done -> (return [n], length [n], actions [steps, n]). mask: pass the evaluation's allowed
  mask (items not yet recommended in the episode); else None."""
  def run(key):
    k0, key = jax.random.split(key)
    _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k0, n), params)

    def _step(carry, k):
      state, ret, length, alive, fresh = carry
      k_act, k_env = jax.random.split(k)
      a = policy(k_act, state.history, state, fresh if mask else None)
      _, state, r, done, _ = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))(
          jax.random.split(k_env, n), state, a, params)
      fresh = fresh.at[jnp.arange(n), a].set(False)
      return (state, ret + jnp.where(alive, r, 0.0), length + alive, alive & ~done, fresh), a

    carry = (state, jnp.zeros(n), jnp.zeros(n, jnp.int32), jnp.ones(n, bool),
             jnp.ones((n, env.num_actions), bool))
    (_, ret, length, _, _), actions = jax.lax.scan(_step, carry, jax.random.split(key, steps))
    return ret, length, actions
  return jax.jit(run)(jax.random.PRNGKey(seed))


def _policy(name, env, params, **kw):
  pop = jnp.asarray(np.random.default_rng(0).random(env.num_actions), jnp.float32)
  return make_policy(name, env, params, popularity=pop, **kw)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("kind", ["sequential", "matrix"])
def test_actions_are_int32_allowed_items(kind, name, test_envs):
  env, params = test_envs[kind]
  n, num_items = 16, env.num_actions
  state = _states(env, params, n, steps=2)
  allowed = np.random.default_rng(1).random((n, num_items)) < 0.3
  allowed[0] = False  # no allowed item: any item will do
  allowed[1] = False
  allowed[1, 7] = True  # one allowed item: it must be that one
  act = jax.jit(_policy(name, env, params))
  for mask in (jnp.asarray(allowed), None):
    a = act(jax.random.PRNGKey(2), state.history, state, mask)
    chex.assert_shape(a, (n,))
    chex.assert_type(a, jnp.int32)
    a = np.asarray(a)
    assert ((a >= 0) & (a < num_items)).all()
    if mask is not None:
      assert allowed[np.arange(2, n), a[2:]].all()
      assert a[1] == 7


def test_greedy_is_argmax_of_the_true_rewards(test_envs):
  env, params = test_envs["matrix"]
  n = 32
  state = _states(env, params, n)
  greedy = jax.jit(make_policy("greedy", env, params))
  table = np.asarray(params.table)[np.asarray(state.user)]  # [n, I]
  a = greedy(jax.random.PRNGKey(0), state.history, state, None)
  np.testing.assert_array_equal(np.asarray(a), table.argmax(1))
  allowed = np.random.default_rng(0).random(table.shape) < 0.5
  a = greedy(jax.random.PRNGKey(0), state.history, state, jnp.asarray(allowed))
  np.testing.assert_array_equal(np.asarray(a), np.where(allowed, table, -np.inf).argmax(1))

  # Sequential: against the NumPy reference's own forward pass of the session's first item.
  env, params = test_envs["sequential"]
  state = _states(env, params, 8)
  a = np.asarray(jax.jit(make_policy("greedy", env, params))(
      jax.random.PRNGKey(0), state.history, state, None))
  ref = NumpySequentialEnv(env, params)
  for s in range(8):
    ref.reset(None, int(state.history[s, -1]))
    score = ref.h @ ref.emb.T + ref.bias_i
    with np.errstate(over="ignore"):  # a saturated sigmoid is fine: rewards tie at 0 or max
      reward = ref.reward_max / (1 + np.exp(-(score - ref.center) / ref.scale))
    assert reward[a[s]] == pytest.approx(reward.max(), abs=1e-3)  # near-ties may swap


@pytest.mark.parametrize("kind,rule", [("sequential", "last"), ("matrix", "last"),
                                       ("matrix", "peer")])
def test_safe_mask_is_the_envs_quit_rule(kind, rule, test_envs):
  env, params = test_envs[kind]
  if rule == "peer":
    env = MatrixEnv(env.num_actions, env.history_len, env.quit_window, window_rule="peer")
  close = close_pairs(env, params)
  items = jnp.arange(env.num_actions)
  for steps in (1, 3):
    state = _states(env, params, 8, steps=steps, seed=steps)
    safe = jax.vmap(lambda st: safe_mask(env, params, close, st, env.all_rewards(params, st)))(
        state)

    def quits(st):
      info = jax.vmap(lambda a: env.step_env(None, st, a, params)[4])(items)
      return info["quit_similar"] | info["quit_low_reward"]

    np.testing.assert_array_equal(np.asarray(safe), ~np.asarray(jax.vmap(quits)(state)))


def test_popularity_skips_the_history_and_takes_the_most_popular():
  env = MatrixEnv(num_items=6, history_len=6)
  pop = jnp.asarray([4.0, 3.0, 2.0, 1.0, 0.0, 5.0])  # item 5 is the most popular
  hist = jnp.asarray([[-1, -1, -1, -1, -1, -1],  # -1 padding must not hide item 5 (= index -1)
                      [-1, -1, -1, -1, 5, 0],
                      [0, 1, 2, 3, 4, 5],  # everything seen: the most popular allowed item
                      [-1, -1, -1, -1, 5, 0]], jnp.int32)
  allowed = jnp.asarray([[True] * 6, [True] * 6, [True] * 6,
                         [True, True, False, True, True, True]])
  act = jax.jit(make_policy("popularity", env, None, popularity=pop))
  a = act(jax.random.PRNGKey(0), hist, None, allowed)
  np.testing.assert_array_equal(np.asarray(a), [5, 1, 5, 1])
  a = act(jax.random.PRNGKey(0), hist[3:], None, jnp.asarray([[False, False, False, True, True,
                                                               False]]))
  np.testing.assert_array_equal(np.asarray(a), [3])

  # Random histories: an unseen allowed item always exists here; compare with NumPy.
  rng = np.random.default_rng(0)
  env = MatrixEnv(num_items=50, history_len=10)
  pop = rng.random(50).astype(np.float32)
  hist = rng.integers(-1, 50, size=(64, 10)).astype(np.int32)
  allowed = rng.random((64, 50)) < 0.5
  a = np.asarray(jax.jit(make_policy("popularity", env, None, popularity=jnp.asarray(pop)))(
      jax.random.PRNGKey(0), jnp.asarray(hist), None, jnp.asarray(allowed)))
  for s in range(64):
    ok = allowed[s].copy()
    ok[hist[s][hist[s] >= 0]] = False
    assert ok[a[s]] and a[s] == np.where(ok, pop, -np.inf).argmax()

  with pytest.raises(ConfigError, match="popularity"):
    make_policy("popularity", env, None)
  with pytest.raises(ConfigError, match="shape"):
    make_policy("popularity", env, None, popularity=jnp.ones(3))
  with pytest.raises(ConfigError, match="planner"):
    make_policy("oracle", env, None)


def _repeat_env():
  """Item 0 is every user's best and similar only to itself: greedy repeats it and leaves."""
  env = MatrixEnv(num_items=6, history_len=4, quit_window=3)
  table = jax.random.uniform(jax.random.PRNGKey(0), (4, 6), minval=1.0, maxval=4.0)
  params = MatrixParams(table=table.at[:, 0].set(5.0), item_vecs=jnp.eye(6) * 10.0,
                        quit=QuitParams(beta=jnp.float32(1.0), min_reward=jnp.float32(-jnp.inf),
                                        max_len=jnp.int32(8)))
  return env, params


def test_planner_cycles_where_greedy_repeats_and_quits():
  env, params = _repeat_env()
  n = 16
  g_ret, g_len, g_act = _episodes(env, params, make_policy("greedy", env, params), n, 10)
  p_ret, p_len, p_act = _episodes(env, params, make_policy("planner", env, params), n, 10)
  np.testing.assert_array_equal(np.asarray(g_len), 2)  # item 0 twice: the similarity quit
  np.testing.assert_array_equal(np.asarray(g_act[:2]), 0)
  assert float(p_ret.mean()) > float(g_ret.mean())
  assert float(p_len.mean()) > float(g_len.mean())
  np.testing.assert_array_equal(np.asarray(p_len), 8)  # lasts to max_len
  assert all(len(set(np.asarray(p_act[:8, s]).tolist())) >= 3 for s in range(n))

  # Horizon 1 over every item: the lookahead is the immediate reward, so planner = greedy.
  state = _states(env, params, n, steps=1)
  one = make_policy("planner", env, params, horizon=1, num_candidates=6)
  greedy = make_policy("greedy", env, params)
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(np.asarray(jax.jit(one)(key, state.history, state, None)),
                                np.asarray(jax.jit(greedy)(key, state.history, state, None)))


@pytest.mark.slow
def test_planner_at_least_as_good_as_greedy_on_the_learned_env(test_envs):
  env, params = test_envs["sequential"]
  ret = {name: float(_episodes(env, params, make_policy(name, env, params), 64, 30, seed=1,
                               mask=True)[0].mean())
         for name in ("greedy", "safe_greedy", "planner")}
  assert ret["planner"] >= ret["safe_greedy"] and ret["planner"] >= ret["greedy"], ret


@pytest.mark.parametrize("name", POLICIES)
def test_jitted_policy_does_not_retrace(name):
  env, params = _repeat_env()
  policy = _policy(name, env, params)
  chex.clear_trace_counter()  # chex counts by source location, shared by the parametrizations

  @chex.assert_max_traces(n=1)
  def act(key, history, state, allowed):
    return policy(key, history, state, allowed)

  act = jax.jit(act)
  for seed in range(2):  # new values of the same shapes
    state = _states(env, params, 8, steps=seed, seed=seed)
    allowed = jax.random.uniform(jax.random.PRNGKey(seed), (8, 6)) < 0.5
    act(jax.random.PRNGKey(seed), state.history, state, allowed).block_until_ready()


@pytest.mark.slow
def test_reference_table_has_the_train_models_policies_in_the_test_env(seq_env_dir):
  from experiments.references import TRANSFER, reference_metrics
  test = reference_metrics(seq_env_dir, "FB", sessions=64)["FB"]
  train = reference_metrics(seq_env_dir, "FB", sessions=64, which="train")["FB"]
  assert set(test) == set(POLICIES) | {f"{n}@train" for n in TRANSFER}
  assert set(train) == set(POLICIES)  # in the train env they would be the same rows
  assert test["random"]["normalised"] == 0.0 and test["planner"]["normalised"] == 1.0
  # The train model's greedy picks its own best items: other items, another return, in the
  # test env than the test model's greedy (the two models are fitted on different users).
  assert test["greedy@train"]["R"] != test["greedy"]["R"]
