"""PG (REINFORCE): reward-to-go and the loss against hand-computed numbers, the sign of one
update, metrics, retracing and acting."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.agents import pg
from jaxrec.agents.types import STRATEGIES, Transition
from jaxrec.nets.networks import ActorCritic, NetConfig

NET = NetConfig(num_items=7, history_len=4, dim=8, num_layers=1, num_heads=1)

# [T=4, N=2]: session 0 ends an episode at t=1 and starts a new one cut at the unroll's end;
# session 1 runs one episode that ends at the last step.
REWARD = jnp.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0]])
DONE = jnp.array([[False, False], [True, False], [False, False], [False, True]])
# gamma = 0.5, by hand:
#   session 0: G3 = 4, G2 = 3 + 0.5 * 4 = 5, G1 = 2 (done: no bootstrap), G0 = 1 + 0.5 * 2 = 2
#   session 1: G3 = 1, G2 = 1.5, G1 = 1.75, G0 = 1.875
RETURNS = np.array([[2.0, 1.875], [2.0, 1.75], [5.0, 1.5], [4.0, 1.0]])


# The pmap variants need more than one device; the functions are pure, jit / device cover them.
class LossTest(chex.TestCase):

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_reward_to_go_hand_computed(self):
    returns = self.variant(functools.partial(pg.reward_to_go, gamma=0.5))(REWARD, DONE)
    np.testing.assert_allclose(returns, RETURNS, rtol=1e-6)

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_episode_complete(self):
    # session 0's second episode is still running at T: its steps 2, 3 are cut
    complete = self.variant(pg.episode_complete)(DONE)
    np.testing.assert_array_equal(complete, [[True, True], [True, True], [False, True],
                                             [False, True]])

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_reinforce_loss_single(self):
    loss_fn = self.variant(pg.reinforce_loss_single)
    # uniform over 4 items: -log(1/4) * 2
    np.testing.assert_allclose(loss_fn(jnp.zeros(4), jnp.int32(0), jnp.float32(2.0)),
                               2.0 * np.log(4.0), rtol=1e-6)
    # pi = (1/4, 3/4): -log(3/4) * (-1) = log(3/4)
    logits = jnp.log(jnp.array([1.0, 3.0]))
    np.testing.assert_allclose(loss_fn(logits, jnp.int32(1), jnp.float32(-1.0)),
                               np.log(0.75), rtol=1e-6)

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_reinforce_gradient(self):
    logits = jnp.log(jnp.array([1.0, 3.0]))
    grad = self.variant(jax.grad(pg.reinforce_loss_single, argnums=(0, 2)))
    g_logits, g_adv = grad(logits, jnp.int32(1), jnp.float32(2.0))
    # d/dlogits -log pi(a) * A = -A * (onehot(a) - pi) = -2 * ([0, 1] - [1/4, 3/4])
    np.testing.assert_allclose(g_logits, [0.5, -0.5], rtol=1e-6)
    assert float(g_adv) == 0.0  # the return is a constant weight


def test_advantages_normalized_or_raw():
  batch = Transition(jnp.zeros((4, 2, 4), jnp.int32), jnp.zeros((4, 2), jnp.int32), REWARD,
                     DONE, jnp.zeros((4, 2, 4), jnp.int32))
  for normalize in (True, False):
    agent = pg.PG(pg.PGConfig(net=NET, gamma=0.5, normalize_returns=normalize))
    returns, adv = agent.advantages(batch)
    np.testing.assert_allclose(returns, RETURNS, rtol=1e-6)
    want = (RETURNS - RETURNS.mean()) / RETURNS.std() if normalize else RETURNS
    np.testing.assert_allclose(adv, want, rtol=1e-5)


def test_policy_params_are_actor_critic_minus_critic():
  history = jnp.zeros((1, NET.history_len), jnp.int32)
  key = jax.random.PRNGKey(0)
  ours = jax.eval_shape(pg.PolicyNetwork(NET).init, key, history)["params"]
  theirs = dict(jax.eval_shape(ActorCritic(NET).init, key, history)["params"])
  del theirs["critic"]
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  assert jax.tree.map(lambda x: x.shape, ours) == jax.tree.map(lambda x: x.shape, theirs)


@pytest.fixture(scope="module")
def raw():
  """An agent on raw returns (so one batch's sign is the update's sign), update jitted once."""
  agent = pg.PG(pg.PGConfig(net=NET, learning_rate=1e-2, gamma=0.5, unroll_len=4,
                            normalize_returns=False, entropy_coef=0.0))
  chex.clear_trace_counter()
  return agent, jax.jit(chex.assert_max_traces(agent.update, n=1)), jax.jit(agent.init)


def one_state_batch(action: int, reward) -> Transition:
  """[T=4, N=2] steps all from one history, all taking `action`."""
  hist = jnp.tile(jnp.array([-1, 0, 1, 2], jnp.int32), (4, 2, 1))
  return Transition(hist, jnp.full((4, 2), action, jnp.int32), jnp.asarray(reward, jnp.float32),
                    DONE, hist)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_one_update_follows_the_return_sign(raw, sign):
  agent, update, init_fn = raw
  state = init_fn(jax.random.PRNGKey(0))
  batch = one_state_batch(3, sign * REWARD)
  logits = jax.jit(agent.logits)
  before = logits(state.params, batch.history[0, :1])[0]
  state, m = update(state, batch, jax.random.PRNGKey(1))
  after = logits(state.params, batch.history[0, :1])[0]
  assert int(state.step) == 1
  # a positive return raises the action's logit and probability, a negative one lowers them
  assert sign * float(after[3] - before[3]) > 0
  logp = lambda x: float(jax.nn.log_softmax(x)[3])  # noqa: E731
  assert sign * (logp(after) - logp(before)) > 0
  # the loss is -mean(log pi(a) * G) at the pre-update params
  np.testing.assert_allclose(m["loss"], -logp(before) * sign * RETURNS.mean(), rtol=1e-5)
  np.testing.assert_allclose(m["return_mean"], sign * RETURNS.mean(), rtol=1e-6)
  p = jax.nn.softmax(before)
  np.testing.assert_allclose(m["entropy"], -jnp.sum(p * jnp.log(p)), rtol=1e-5)
  np.testing.assert_allclose(m["complete_frac"], 0.75)


def test_update_does_not_retrace(raw):
  # `raw` wraps update in assert_max_traces(n=1): a second trace raises
  agent, update, init_fn = raw
  state = init_fn(jax.random.PRNGKey(2))
  for i in range(3):
    state, m = update(state, one_state_batch(i, REWARD * i), jax.random.PRNGKey(i))
  assert int(state.step) == 3
  assert set(m) == {"loss", "return_mean", "entropy", "complete_frac"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_act_returns_valid_items(raw, strategy):
  agent, _, init_fn = raw
  params = agent.policy_params(init_fn(jax.random.PRNGKey(0)))
  history = jax.random.randint(jax.random.PRNGKey(1), (5, NET.history_len), -1, NET.num_items)
  actions = jax.jit(agent.act, static_argnums=3)(params, history, jax.random.PRNGKey(2),
                                                  strategy, 0.5)
  chex.assert_shape(actions, (5,))
  assert actions.dtype == jnp.int32
  assert bool(jnp.all((actions >= 0) & (actions < NET.num_items)))
  if strategy == "greedy":
    np.testing.assert_array_equal(actions,
                                  jnp.argmax(jax.jit(agent.logits)(params, history), axis=-1))
