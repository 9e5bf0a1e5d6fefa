"""The oracle judge: rewards from the user model, the label distribution (temperature, None
threshold, flip noise), normalised logprobs, and agreement with the env's own rewards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import oracle
from jaxrec.envs import MatrixEnv, MatrixParams, QuitParams, SequentialEnv
from jaxrec.errors import ConfigError
from jaxrec.usermodels.sequential import SeqConfig, SeqScorer

NUM_ITEMS = 12


def matrix_env(min_reward=2.0):
  rng = np.random.default_rng(0)
  table = rng.uniform(0.0, 5.0, size=(3, NUM_ITEMS)).astype(np.float32)
  table[2] = 1.0  # user 2 dislikes everything
  params = MatrixParams(table=jnp.asarray(table), item_vecs=jnp.eye(NUM_ITEMS),
                        quit=QuitParams(beta=jnp.float32(0.0), min_reward=jnp.float32(min_reward),
                                        max_len=jnp.int32(10)))
  return MatrixEnv(NUM_ITEMS, history_len=4, quit_window=2), params


HISTORY = jnp.full((4,), -1, jnp.int32)
CANDS = jnp.asarray([5, 0, 7, 3], jnp.int32)


def test_matrix_rewards_are_the_users_table_row():
  env, params = matrix_env()
  r = oracle.candidate_rewards(env, params, HISTORY, jnp.int32(1), CANDS)
  np.testing.assert_array_equal(np.asarray(r), np.asarray(params.table)[1, [5, 0, 7, 3]])


def _choices(cfg, user=0, n=4000, seed=0):
  env, params = matrix_env()
  keys = jax.random.split(jax.random.PRNGKey(seed), n)
  f = jax.jit(jax.vmap(lambda k: oracle.judge(k, env, params, HISTORY, jnp.int32(user), CANDS,
                                              cfg)))
  choice, logprobs = f(keys)
  rewards = np.asarray(params.table)[user, [5, 0, 7, 3]]
  return np.asarray(choice), np.asarray(logprobs[0]), rewards


def test_temperature_zero_picks_the_best_candidate():
  choice, logprobs, rewards = _choices(oracle.OracleConfig(temperature=0.0))
  assert np.all(choice == np.argmax(rewards))
  assert logprobs[np.argmax(rewards)] == 0.0 and np.all(np.isneginf(np.delete(
      logprobs, np.argmax(rewards))))


def test_choices_follow_the_softmax_of_rewards():
  cfg = oracle.OracleConfig(temperature=1.0)
  choice, logprobs, rewards = _choices(cfg)
  want = np.exp(rewards - rewards.max()) / np.exp(rewards - rewards.max()).sum()
  np.testing.assert_allclose(np.exp(logprobs[:4]), want, rtol=1e-5)
  assert logprobs[4] == -np.inf  # someone here is above the threshold: never "None"
  freq = np.bincount(choice, minlength=5) / len(choice)
  np.testing.assert_allclose(freq[:4], want, atol=0.03)
  # Higher reward, more often chosen.
  assert list(np.argsort(freq[:4])) == list(np.argsort(rewards))


def test_none_below_the_threshold_default_is_the_quit_min_reward():
  choice, logprobs, _ = _choices(oracle.OracleConfig(temperature=1.0), user=2)
  assert np.all(choice == 4) and logprobs[4] == 0.0
  # An explicit threshold under the user's rewards (all 1.0) lets the candidates through.
  choice, _, _ = _choices(oracle.OracleConfig(temperature=1.0, none_threshold=0.5), user=2)
  assert np.all(choice < 4)
  # ... and one above the best reward of user 0 makes everything None.
  choice, _, _ = _choices(oracle.OracleConfig(none_threshold=10.0), user=0)
  assert np.all(choice == 4)


@pytest.mark.parametrize("flip", [0.1, 0.4])
def test_flip_noise_rate(flip):
  choice, logprobs, rewards = _choices(oracle.OracleConfig(temperature=0.0, flip_prob=flip),
                                       n=8000)
  best = np.argmax(rewards)
  # A flip draws uniformly over k + 1 = 5 labels, so it changes the label 4 times in 5.
  np.testing.assert_allclose(np.mean(choice != best), flip * 4 / 5, atol=0.02)
  assert np.mean(choice == 4) == pytest.approx(flip / 5, abs=0.015)
  np.testing.assert_allclose(np.exp(logprobs), [flip / 5] * 5 + np.eye(5)[best] * (1 - flip),
                             rtol=1e-5)


@pytest.mark.parametrize("cfg", [oracle.OracleConfig(), oracle.OracleConfig(temperature=0.0),
                                 oracle.OracleConfig(temperature=0.2, flip_prob=0.3),
                                 oracle.OracleConfig(none_threshold=10.0, flip_prob=0.05)])
def test_logprobs_are_normalised(cfg):
  env, params = matrix_env()
  hist = jnp.full((3, 4), -1, jnp.int32)
  cands = jnp.asarray([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], jnp.int32)
  choice, logprobs = oracle.judge_batch(jax.random.PRNGKey(0), env, params, hist,
                                        jnp.arange(3, dtype=jnp.int32), cands, cfg)
  assert choice.shape == (3,) and choice.dtype == jnp.int32 and logprobs.shape == (3, 5)
  np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(logprobs, axis=-1)), 0.0, atol=1e-6)
  assert np.all(np.asarray(choice) >= 0) and np.all(np.asarray(choice) <= 4)


def sequential_env(num_layers):
  cfg = SeqConfig(num_items=NUM_ITEMS, dim=8, num_layers=num_layers, num_heads=2, window=4)
  env = SequentialEnv(cfg, history_len=4, quit_window=2)
  model = jax.jit(SeqScorer(cfg).init)(jax.random.PRNGKey(3), jnp.zeros((4,), jnp.int32))
  quit = QuitParams(beta=jnp.float32(0.0), min_reward=jnp.float32(0.0), max_len=jnp.int32(50))
  return env, env.make_params(model, 0.0, 0.3, 5.0, quit, np.arange(NUM_ITEMS))


def test_sequential_rewards_equal_what_env_step_pays():
  """The judge sees only the history; the env's streaming state (2 layers) is the same function
  of it while every consumed item is still in the window (L = 4 steps). Later the env also
  remembers, through the stacked layers, items that slid out of the window."""
  env, params = sequential_env(2)
  exact_steps = 4
  all_items = jnp.arange(NUM_ITEMS, dtype=jnp.int32)

  def body(carry, action):
    obs, state = carry
    judged = oracle.candidate_rewards(env, params, obs.history, obs.user, all_items)
    paid = jax.vmap(lambda a: env.step_env(None, state, a, params)[2])(all_items)
    obs, state, *_ = env.step_env(None, state, action, params)
    return (obs, state), (judged, paid)

  actions = (5 * jnp.arange(exact_steps, dtype=jnp.int32) + 1) % NUM_ITEMS
  _, (judged, paid) = jax.jit(lambda: jax.lax.scan(
      body, env.reset_env(jax.random.PRNGKey(0), params), actions))()
  np.testing.assert_allclose(np.asarray(judged), np.asarray(paid), atol=1e-4)


def test_judge_prefers_what_the_sequential_env_pays():
  env, params = sequential_env(2)
  all_items = jnp.arange(NUM_ITEMS, dtype=jnp.int32)

  @jax.jit
  def run(key):
    obs, _ = env.reset_env(key, params)
    pay = oracle.candidate_rewards(env, params, obs.history, obs.user, all_items)
    choice, _ = oracle.judge(key, env, params, obs.history, obs.user, all_items,
                             oracle.OracleConfig(temperature=0.0, none_threshold=-1.0))
    return choice, jnp.argmax(pay)

  choice, best = run(jax.random.PRNGKey(1))
  assert int(choice) == int(best)


def test_quit_aware_never_picks_a_near_repeat():
  env, params = matrix_env()
  params = params.replace(quit=params.quit.replace(beta=jnp.float32(0.5)))  # eye vectors: a
  # candidate is "too similar" exactly when it is one of the last quit_window (2) items.
  cfg = oracle.OracleConfig(temperature=0.0, quit_aware=True)
  rewards = np.asarray(params.table)[0, [5, 0, 7, 3]]
  best, second = np.argsort(rewards)[-1], np.argsort(rewards)[-2]
  hist = jnp.asarray([[-1, 1, 2, [5, 0, 7, 3][best]], [-1, -1, 5, 0]], jnp.int32)
  cands = jnp.asarray([[5, 0, 7, 3], [0, 5, 0, 5]], jnp.int32)

  @jax.jit
  def run():
    quit = jax.vmap(lambda h, c: oracle.would_quit(env, params, h, c))(hist, cands)
    return (quit,) + oracle.judge_batch(jax.random.PRNGKey(0), env, params, hist,
                                        jnp.zeros(2, jnp.int32), cands, cfg)

  quit, choice, logprobs = run()
  np.testing.assert_array_equal(quit[0], np.arange(4) == best)
  assert int(choice[0]) == second and logprobs[0, best] == -np.inf
  assert np.all(quit[1]) and int(choice[1]) == 4  # every candidate a near-repeat: None


@pytest.mark.parametrize("kw, message", [({"temperature": -1.0}, "--oracle_temperature"),
                                         ({"flip_prob": 1.5}, "--oracle_flip_prob")])
def test_bad_config(kw, message):
  with pytest.raises(ConfigError, match=message):
    oracle.OracleConfig(**kw).validate()
