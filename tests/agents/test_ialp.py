"""iALP's preference step (Eq. 2-3): candidates, None handling, soft labels; and LLMOnline's
acting (the actor proposes, the oracle picks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import oracle
from jaxrec.agents import acting, ialp
from jaxrec.agents.registry import AgentConfig, make_agent
from jaxrec.agents.types import Transition
from jaxrec.envs import QuitParams, SequentialEnv
from jaxrec.errors import ConfigError
from jaxrec.usermodels.sequential import SeqConfig, SeqScorer
from jaxrec.oracle_config import OracleConfig

CANDS = jnp.asarray([[4, 7, 1], [2, 9, 5], [8, 0, 3], [6, 5, 4]], jnp.int32)


def test_hard_labels_chosen_none_and_invalid():
  choice = jnp.asarray([1, 3, 0, 2], jnp.int32)  # k = 3: row 1 answered None
  valid = jnp.asarray([True, True, False, True])  # row 2 unparseable: counts as None
  action, reward, none = ialp.preference_actions(jax.random.PRNGKey(0), CANDS, choice, valid)
  assert int(action[0]) == 7 and int(action[3]) == 4  # the chosen items
  assert int(action[1]) in (2, 9, 5) and int(action[2]) in (8, 0, 3)  # a candidate of the row
  np.testing.assert_array_equal(reward, [1.0, 0.0, 0.0, 1.0])
  np.testing.assert_array_equal(none, [False, True, True, False])


def test_none_picks_a_uniform_candidate():
  choice = jnp.full((4,), 3, jnp.int32)
  draw = jax.jit(jax.vmap(lambda k: ialp.preference_actions(k, CANDS, choice)[0]))
  actions = np.asarray(draw(jax.random.split(jax.random.PRNGKey(0), 3000)))
  for row in range(4):
    counts = np.array([(actions[:, row] == c).mean() for c in np.asarray(CANDS[row])])
    np.testing.assert_allclose(counts, 1 / 3, atol=0.04)


def test_soft_labels_are_one_minus_p_none():
  choice = jnp.asarray([0, 3, 2, 1], jnp.int32)
  p = jnp.asarray([[0.5, 0.2, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7], [0.25] * 4, [0.0, 1.0, 0.0, 0.0]])
  with np.errstate(divide="ignore"):
    logprobs = jnp.log(p)
  action, reward, _ = ialp.preference_actions(jax.random.PRNGKey(0), CANDS, choice,
                                              jnp.asarray([True, True, True, False]), logprobs,
                                              "soft")
  np.testing.assert_allclose(reward, [0.9, 0.3, 0.75, 0.0], rtol=1e-6)  # invalid row: 0
  assert int(action[0]) == 4 and int(action[2]) == 3


def test_extend_appends_the_action():
  hist = jnp.asarray([[-1, -1, 3], [1, 2, 3]], jnp.int32)
  np.testing.assert_array_equal(ialp.extend(hist, jnp.asarray([7, 8], jnp.int32)),
                                [[-1, 3, 7], [2, 3, 8]])


@pytest.mark.parametrize("strategy", ["greedy", "categorical", "epsilon"])
def test_propose_k_distinct_candidates(strategy):
  scores = jax.random.normal(jax.random.PRNGKey(0), (64, 30))
  cands = acting.propose(jax.random.PRNGKey(1), scores, 5, strategy, 0.0)
  assert cands.shape == (64, 5) and cands.dtype == jnp.int32
  assert all(len(set(row)) == 5 for row in np.asarray(cands).tolist())
  if strategy != "categorical":  # greedy, and epsilon at 0: the top 5, best first
    np.testing.assert_array_equal(cands, jnp.argsort(-scores, axis=-1)[:, :5])


def test_sampled_candidates_follow_the_policy():
  """Gumbel top-k: the first draw is a sample of softmax(scores); later draws exclude it."""
  scores = jnp.log(jnp.asarray([[0.6, 0.3, 0.1, 1e-9]]))
  draw = jax.jit(jax.vmap(lambda k: acting.propose(k, scores, 2, "categorical")[0]))
  cands = np.asarray(draw(jax.random.split(jax.random.PRNGKey(0), 4000)))
  np.testing.assert_allclose(np.bincount(cands[:, 0], minlength=4) / 4000, [0.6, 0.3, 0.1, 0],
                             atol=0.03)
  assert np.all(cands[:, 0] != cands[:, 1]) and np.all(cands != 3)


def sequential_env():
  cfg = SeqConfig(num_items=12, dim=8, num_layers=1, num_heads=1, window=3)
  env = SequentialEnv(cfg, history_len=3, quit_window=2)
  model = jax.jit(SeqScorer(cfg).init)(jax.random.PRNGKey(3), jnp.zeros((3,), jnp.int32))
  quit = QuitParams(beta=jnp.float32(0.0), min_reward=jnp.float32(0.0), max_len=jnp.int32(9))
  return env, env.make_params(model, 0.0, 0.3, 5.0, quit, np.arange(12))


def test_llm_online_recommends_the_oracles_pick_among_the_actors_top_k():
  env, params = sequential_env()
  cfg = AgentConfig(dim=8, num_layers=0, num_heads=1, num_candidates=4,
                    oracle=OracleConfig(temperature=0.0, none_threshold=-1.0))
  agent = make_agent("llm_online", cfg, 12, 3, env=env, env_params=params)
  state = jax.jit(agent.init)(jax.random.PRNGKey(0))
  hist = jnp.asarray([[-1, -1, 0], [-1, 5, 2], [1, 2, 3]], jnp.int32)
  pp = agent.policy_params(state)

  @jax.jit
  def run(pp, key):
    action = agent.act(pp, hist, key, "greedy")
    top = jax.lax.top_k(agent.logits(pp["actor"], hist), 4)[1]
    rewards = jax.vmap(lambda h, c: oracle.candidate_rewards(env, params, h, -1, c))(hist, top)
    return action, jnp.take_along_axis(top, jnp.argmax(rewards, 1)[:, None], 1)[:, 0]

  action, want = run(pp, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(action, want)
  # The env reward updates the actor-critic (A2C); the oracle's knowledge stays as it is.
  batch = Transition(history=hist, action=action, reward=jnp.asarray([1.0, 2.0, 0.5]),
                     done=jnp.zeros(3, bool), next_history=ialp.extend(hist, action))
  batch = jax.tree.map(lambda x: x[None], batch)  # a rollout [T = 1, N = 3]
  new, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(2))
  assert jax.tree.all(jax.tree.map(jnp.array_equal, new.params["oracle"], params))
  assert not jax.tree.all(jax.tree.map(jnp.array_equal, new.params["actor"],
                                       state.params["actor"]))
  assert int(new.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_llm_online_refuses_a_matrix_env():
  from tests.train.conftest import best_item_env
  env, params = best_item_env()
  with pytest.raises(ConfigError, match="llm_online needs a sequential env"):
    make_agent("llm_online", AgentConfig(), 20, 4, env=env, env_params=params)
