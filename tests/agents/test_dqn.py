"""DQN: the TD loss against hand-computed numbers, the replay buffer and its min_buffer gate,
the target-network schedule, retracing and acting."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.agents import dqn
from jaxrec.agents.types import STRATEGIES, Transition
from jaxrec.errors import ConfigError
from jaxrec.nets.networks import NetConfig

NET = NetConfig(num_items=7, history_len=4, dim=8, num_layers=1, num_heads=1)


def make_batch(key, t: int, n: int, reward=None, done=None) -> Transition:
  """A hand-made rollout [t, n] with valid items and some padding."""
  k_h, k_a, k_r, k_d, k_n = jax.random.split(key, 5)
  hist = jax.random.randint(k_h, (t, n, NET.history_len), -1, NET.num_items)
  nxt = jax.random.randint(k_n, (t, n, NET.history_len), -1, NET.num_items)
  return Transition(
      history=hist, action=jax.random.randint(k_a, (t, n), 0, NET.num_items),
      reward=jax.random.uniform(k_r, (t, n)) if reward is None else reward,
      done=jax.random.bernoulli(k_d, 0.3, (t, n)) if done is None else done,
      next_history=nxt)


def agent_and_state(seed=0, **kw):
  agent = dqn.DQN(dqn.DQNConfig(net=NET, **kw))
  return agent, jax.jit(agent.init)(jax.random.PRNGKey(seed))


def trees_equal(a, b) -> bool:
  return all(bool(jnp.array_equal(x, y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# The pmap variants need more than one device; the functions are pure, jit / device cover them.
class LossTest(chex.TestCase):

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_single_loss_squared_and_huber(self):
    q_tm1 = jnp.array([1.0, 2.0, 3.0])
    q_t = jnp.array([0.0, 4.0, 2.0])
    args = (q_tm1, jnp.int32(1), jnp.float32(0.5), jnp.float32(0.9), q_t)
    # y = 0.5 + 0.9 * max(0, 4, 2) = 4.1; td = 4.1 - Q(s, 1) = 2.1
    sq, td = self.variant(functools.partial(dqn.q_learning_loss_single, huber_delta=None))(*args)
    np.testing.assert_allclose(td, 2.1, rtol=1e-6)
    np.testing.assert_allclose(sq, 0.5 * 2.1**2, rtol=1e-6)
    hub, _ = self.variant(functools.partial(dqn.q_learning_loss_single, huber_delta=1.0))(*args)
    np.testing.assert_allclose(hub, 2.1 - 0.5, rtol=1e-6)  # linear zone: delta * (|td| - delta/2)

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_batch_td_done_mask_and_max(self):
    q_tm1 = jnp.array([[1.0, 0.0, 0.0], [0.0, 3.0, 1.0]])
    q_t = jnp.array([[2.0, 5.0, -1.0], [10.0, 10.0, 10.0]])
    action = jnp.array([0, 1])
    reward = jnp.array([1.0, 2.0])
    done = jnp.array([False, True])
    fn = self.variant(functools.partial(dqn.td_losses, gamma=0.5, huber_delta=None))
    loss, td = fn(q_tm1, q_t, action, reward, done)
    # row 0: y = 1 + 0.5 * max(2, 5, -1) = 3.5, td = 2.5; row 1 done: y = r = 2, td = 2 - 3 = -1
    np.testing.assert_allclose(td, [2.5, -1.0], rtol=1e-6)
    np.testing.assert_allclose(loss, [3.125, 0.5], rtol=1e-6)
    fn = self.variant(functools.partial(dqn.td_losses, gamma=0.5, huber_delta=1.0))
    np.testing.assert_allclose(fn(q_tm1, q_t, action, reward, done)[0], [2.0, 0.5], rtol=1e-6)

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_no_gradient_through_target(self):
    def loss(q_tm1, q_t):
      return dqn.q_learning_loss_single(q_tm1, jnp.int32(2), jnp.float32(1.0),
                                        jnp.float32(0.9), q_t, None)[0]
    q_tm1, q_t = jnp.array([0.0, 1.0, 2.0]), jnp.array([3.0, 0.0, 1.0])
    g_online, g_target = self.variant(jax.grad(loss, argnums=(0, 1)))(q_tm1, q_t)
    # d/dQ(s, a) of 0.5 * (y - Q(s, a))^2 = -(y - Q(s, a)) = -(1 + 0.9 * 3 - 2)
    np.testing.assert_allclose(g_online, [0.0, 0.0, -1.7], rtol=1e-6)
    np.testing.assert_array_equal(g_target, np.zeros(3))


# One agent for the buffer, gate, target and retrace tests, so that `update` compiles once:
# rollouts [1, 4] fill the buffer by 4 items a call, so calls 1-2 stay under min_buffer = 12
# and gradient step k happens at call k + 2.
GATED = dict(buffer_size=64, batch_size=8, min_buffer=12, target_period=3)


@pytest.fixture(scope="module")
def gated():
  agent = dqn.DQN(dqn.DQNConfig(net=NET, **GATED))
  chex.clear_trace_counter()
  return agent, jax.jit(chex.assert_max_traces(agent.update, n=1)), jax.jit(agent.init)


def run_updates(gated, calls: int, seed: int = 0):
  """-> the initial state and the (state, metrics) after each of `calls` updates."""
  _, update, init_fn = gated
  state = init = init_fn(jax.random.PRNGKey(seed))
  seen = []
  for i in range(calls):
    batch = make_batch(jax.random.PRNGKey(100 * seed + i), 1, 4)
    state, m = update(state, batch, jax.random.PRNGKey(1000 + i))
    seen.append((state, m))
  return init, seen


def test_buffer_stores_the_flattened_rollout(gated):
  _, update, init_fn = gated
  state = init_fn(jax.random.PRNGKey(0))
  b1, b2 = make_batch(jax.random.PRNGKey(1), 1, 4), make_batch(jax.random.PRNGKey(2), 1, 4)
  state, m1 = update(state, b1, jax.random.PRNGKey(3))
  state, m2 = update(state, b2, jax.random.PRNGKey(4))
  assert float(m1["buffer_size"]) == 4.0 and float(m2["buffer_size"]) == 8.0
  stored = state.extra.buffer_state.experience  # [1, buffer_size, ...]
  for field in Transition._fields:
    if getattr(b1, field) is None:  # value: kept only for agents that act with values
      continue
    want = jnp.concatenate([getattr(b, field).reshape((4,) + getattr(b, field).shape[2:])
                            for b in (b1, b2)])
    np.testing.assert_array_equal(getattr(stored, field)[0, :8], want, err_msg=field)


def test_min_buffer_gate(gated):
  init, seen = run_updates(gated, 3)
  for state, m in seen[:2]:  # 4, 8 items: under min_buffer
    assert float(m["updated"]) == 0.0 and float(m["loss"]) == 0.0
    assert int(state.step) == 0
    assert trees_equal(state.params, init.params)
    assert trees_equal(state.opt_state, init.opt_state)
  state, m = seen[2]
  assert float(m["buffer_size"]) == 12.0 and float(m["updated"]) == 1.0
  assert float(m["loss"]) > 0.0 and int(state.step) == 1
  assert not trees_equal(state.params, init.params)


def test_target_copied_exactly_on_schedule(gated):
  init, seen = run_updates(gated, 9, seed=1)
  after = {int(s.step): s for s, _ in seen}  # gradient steps 0..7 -> state
  assert sorted(after) == list(range(8))
  for k in (0, 1, 2):  # the target is the initial params until step 3
    assert trees_equal(after[k].extra.target_params, init.params)
  for k in (1, 2):
    assert not trees_equal(after[k].params, init.params)
  for k in (3, 6):  # an exact copy every target_period = 3 steps
    assert trees_equal(after[k].extra.target_params, after[k].params)
  for k in (4, 5, 7):  # between copies the target holds the last copy while params move on
    last = after[3 * (k // 3)]
    assert trees_equal(after[k].extra.target_params, last.params)
    assert not trees_equal(after[k].params, last.params)


def test_update_does_not_retrace(gated):
  # `gated` wraps update in assert_max_traces(n=1): a second trace raises. Calls cross the gate.
  _, seen = run_updates(gated, 4, seed=2)
  assert [float(m["updated"]) for _, m in seen] == [0.0, 0.0, 1.0, 1.0]


def test_state_has_no_weak_types_so_a_restored_checkpoint_reuses_the_compiled_loop(gated):
  # orbax restores every leaf strongly typed; a weak-typed leaf (flashbax's buffer index)
  # would make the jitted loop compile again after each resume.
  agent, _, _ = gated
  state = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
  after, _ = jax.eval_shape(agent.update, state, make_batch(jax.random.PRNGKey(1), 1, 4),
                            jax.random.PRNGKey(2))
  for tree in (state, after):
    weak = [p for p, x in jax.tree_util.tree_leaves_with_path(tree) if x.weak_type]
    assert not weak, weak


def test_learns_the_rewarded_item(gated):
  # One state, terminal steps, reward 1 only for item 3: TD steps must move Q(s, 3) towards 1
  # and Q(s, 0), Q(s, 5) towards 0 (a sign error in the loss or the update would not). Items
  # never taken keep arbitrary values.
  agent, update, init_fn = gated
  state = init_fn(jax.random.PRNGKey(3))
  hist = jnp.tile(jnp.array([-1, 0, 1, 2]), (1, 4, 1))
  action = jnp.array([[3, 0, 3, 5]], jnp.int32)
  batch = Transition(hist, action, (action == 3).astype(jnp.float32), jnp.ones((1, 4), bool),
                     hist)
  losses = []
  for i in range(40):
    state, m = update(state, batch, jax.random.PRNGKey(i))
    losses.append(float(m["loss"]))
  q = jax.jit(agent.q_values)(state.params, hist[0, :1])[0]
  np.testing.assert_allclose(q[jnp.array([0, 3, 5])], [0.0, 1.0, 0.0], atol=0.1)
  assert losses[-1] < 0.5 * losses[2]  # losses[2]: the first gradient step


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_act_returns_valid_items(gated, strategy):
  agent, _, init_fn = gated
  state = init_fn(jax.random.PRNGKey(0))
  history = make_batch(jax.random.PRNGKey(0), 1, 5).history[0]
  act = jax.jit(agent.act, static_argnums=3)
  actions = act(agent.policy_params(state), history, jax.random.PRNGKey(1), strategy, 0.5)
  chex.assert_shape(actions, (5,))
  assert actions.dtype == jnp.int32
  assert bool(jnp.all((actions >= 0) & (actions < NET.num_items)))
  if strategy == "greedy":
    q = jax.jit(agent.q_values)(state.params, history)
    np.testing.assert_array_equal(actions, jnp.argmax(q, axis=-1))


@pytest.mark.parametrize("kw", [{"min_buffer": 200, "buffer_size": 100},
                                {"batch_size": 200, "buffer_size": 100},
                                {"target_period": 0}])
def test_bad_config_is_a_config_error(kw):
  with pytest.raises(ConfigError):
    dqn.DQN(dqn.DQNConfig(net=NET, **kw))
