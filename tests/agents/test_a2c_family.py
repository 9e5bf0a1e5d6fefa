"""A2C (Eq. 6-10) and the agents built on it: iALP (frozen), A-iALP_ft, A-iALP_ap (mixture,
Eq. 14-15, alpha schedule) and LLMOnline: losses and one update step against hand-computed
values, and what each update may and may not change."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrec.agents import a2c, adaptive
from jaxrec.agents.registry import AgentConfig, make_agent
from jaxrec.agents.types import Transition
from jaxrec.errors import ConfigError
from jaxrec.nets.networks import NetConfig

NET = NetConfig(num_items=6, history_len=3, dim=8, num_layers=0, num_heads=1)
PAPER = {"critic": "q", "entropy_coef": 0.0}  # the paper's A2C (Eq. 6-10), no entropy bonus


def tiny_batch(n=4):
  hist = jnp.asarray([[-1, -1, 0], [-1, 1, 2], [3, 4, 5], [-1, -1, 2]][:n], jnp.int32)
  nxt = jnp.concatenate([hist[:, 1:], jnp.asarray([[1], [0], [5], [3]][:n], jnp.int32)], 1)
  return Transition(history=hist, action=jnp.asarray([1, 0, 5, 3][:n], jnp.int32),
                    reward=jnp.asarray([1.0, 0.0, 2.0, 0.5][:n]),
                    done=jnp.asarray([False, True, False, False][:n]), next_history=nxt)


def trees_equal(a, b) -> bool:
  return all(bool(jnp.array_equal(x, y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


class LossTest(chex.TestCase):

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_a2c_loss_single_hand_computed(self):
    # y = 0.5 + 0.9 * 4 = 4.1; td = 4.1 - 3 = 1.1; actor = -log(0.25) * 1.1; critic = 1.21
    f = self.variant(functools.partial(a2c.a2c_loss_single, gamma=0.9))
    actor, critic, td = f(jnp.log(0.25), jnp.float32(3.0), jnp.float32(4.0), jnp.float32(0.5),
                          jnp.float32(0.0))
    np.testing.assert_allclose([actor, critic, td], [-np.log(0.25) * 1.1, 1.21, 1.1], rtol=1e-5)
    # done: no bootstrap. td = 0.5 - 3 = -2.5
    _, critic, td = f(jnp.log(0.25), jnp.float32(3.0), jnp.float32(4.0), jnp.float32(0.5),
                      jnp.float32(1.0))
    np.testing.assert_allclose([critic, td], [6.25, -2.5], rtol=1e-5)

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_mixture_probabilities(self):
    lt = jnp.log(jnp.asarray([0.5, 0.3, 0.2]))
    lb = jnp.log(jnp.asarray([0.1, 0.1, 0.8]))
    mix = self.variant(adaptive.mixture_log_probs)
    np.testing.assert_allclose(jnp.exp(mix(lt, lb, 0.25)),
                               [0.75 * 0.5 + 0.25 * 0.1, 0.75 * 0.3 + 0.25 * 0.1,
                                0.75 * 0.2 + 0.25 * 0.8], rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(mix(lt, lb, 0.0)), [0.5, 0.3, 0.2], rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(mix(lt, lb, 1.0)), [0.1, 0.1, 0.8], rtol=1e-5)

  def test_mixture_gradient_at_the_ends(self):
    lt, lb = jnp.asarray([2.0, 0.0, -1.0]), jnp.asarray([0.0, 1.0, 0.0])
    g0 = jax.grad(lambda b: adaptive.mixture_log_probs(lt, b, 0.0)[2])(lb)
    assert np.all(np.asarray(g0) == 0.0)  # alpha 0: pi_beta has no say, and no NaN
    g1 = jax.grad(lambda b: adaptive.mixture_log_probs(lt, b, 1.0)[2])(lb)
    np.testing.assert_allclose(g1, jax.grad(lambda b: jax.nn.log_softmax(b)[2])(lb), rtol=1e-5)


@pytest.mark.parametrize("shape, want", [
    ("linear", [0.2, 0.2, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]),
    ("cosine", [0.2, 0.2, 0.2, 0.2 + 0.8 * (1 - np.cos(np.pi / 4)) / 2, 0.6,
                0.2 + 0.8 * (1 - np.cos(3 * np.pi / 4)) / 2, 1.0, 1.0]),
    ("step", [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 1.0, 1.0]),
])
def test_alpha_schedule(shape, want):
  sched = adaptive.AlphaSchedule(alpha0=0.2, delay=2, length=4, shape=shape)
  got = jax.jit(jax.vmap(sched))(jnp.arange(8))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_registry_converts_alpha_env_steps_to_updates():
  cfg = AgentConfig(alpha0=0.0, alpha_delay=64, alpha_steps=128, critic="q")  # 1 step/update
  agent = make_agent("ialp_ap", cfg, 6, 3, num_sessions=32)
  assert (agent.schedule.delay, agent.schedule.length) == (2, 4)


@pytest.fixture(scope="module")
def theta():
  # A pre-training run's params: the paper's actor and Q critic.
  return jax.jit(a2c.A2C(a2c.A2CConfig(net=NET, critic="q")).init_params)(jax.random.PRNGKey(7))


def assert_adam_step(old, new, grads, lr):
  """new == one clipped-Adam step from old along grads. Adam's first step is ~lr * sign(g), so
  only entries with a clear gradient are compared (elsewhere float noise picks the sign)."""
  opt = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(lr))
  updates, _ = opt.update(grads, opt.init(old), old)
  want = optax.apply_updates(old, updates)
  checked = 0
  for n, w, g in zip(jax.tree.leaves(new), jax.tree.leaves(want), jax.tree.leaves(grads)):
    clear = np.abs(np.asarray(g)) > 1e-4
    np.testing.assert_allclose(np.asarray(n)[clear], np.asarray(w)[clear], rtol=1e-4, atol=1e-6)
    checked += clear.sum()
  assert checked > 40


def _reference_loss(net, params, batch, gamma, log_pi):
  """Eq. 6-10 written out for a batch, independently of a2c.py."""
  logits, q = net.apply(params, batch.history)
  _, q_next = net.apply(params, batch.next_history)
  idx = jnp.arange(batch.action.shape[0])
  y = batch.reward + gamma * (1.0 - batch.done) * q_next.max(-1)
  td = jax.lax.stop_gradient(y) - q[idx, batch.action]
  logp = log_pi(logits)[idx, batch.action]
  return jnp.mean(-logp * jax.lax.stop_gradient(td)) + jnp.mean(td ** 2)


def test_a2c_and_ft_one_update_is_adam_on_eq_6_to_10(theta):
  batch = tiny_batch()
  cfg = AgentConfig(dim=8, num_layers=0, num_heads=1, learning_rate=0.01, **PAPER)
  ft = make_agent("ialp_ft", cfg, 6, 3, pretrained=theta)
  state = jax.jit(ft.init)(jax.random.PRNGKey(0))
  assert trees_equal(state.params, theta)  # starts from iALP, not from the key
  new, metrics = jax.jit(ft.update)(state, batch, jax.random.PRNGKey(1))
  grads = jax.jit(jax.grad(lambda p: _reference_loss(ft.net, p, batch, 0.9,
                                                     jax.nn.log_softmax)))(theta)
  assert_adam_step(theta, new.params, grads, 0.01)
  assert int(new.step) == 1 and np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize("target", ["max", "expected"])
def test_critic_target_values_against_hand_computation(theta, target):
  batch = tiny_batch()
  net = a2c.A2C(a2c.A2CConfig(net=NET, critic="q")).net
  _, metrics = a2c.a2c_losses(net, theta, batch, 0.9, 0.0, critic_target=target)
  logits, q = net.apply(theta, batch.history)
  logits_next, q_next = net.apply(theta, batch.next_history)
  v_next = (q_next.max(-1) if target == "max"
            else (jax.nn.softmax(logits_next) * q_next).sum(-1))
  idx = jnp.arange(4)
  td = batch.reward + 0.9 * (1.0 - batch.done) * v_next - q[idx, batch.action]
  np.testing.assert_allclose(float(metrics["critic_loss"]), float(jnp.mean(td ** 2)), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["td_abs"]), float(jnp.mean(jnp.abs(td))), rtol=1e-5)
  # The expectation is under the policy, below the max wherever the policy is not greedy.
  if target == "expected":
    assert bool(jnp.all(v_next <= q_next.max(-1) + 1e-6))
  with pytest.raises(ConfigError, match="--critic_target must be one of max, expected"):
    a2c.a2c_losses(net, theta, batch, 0.9, 0.0, critic_target="mean")


def test_baseline_advantage_against_hand_computation(theta):
  """--advantage=baseline: the actor's weight is Q(s, a) - sum_a' pi(a'|s) Q(s, a'), not the TD
  error; the critic's loss is the same as with Eq. 9's weight."""
  batch = tiny_batch()
  net = a2c.A2C(a2c.A2CConfig(net=NET, critic="q")).net
  _, td_metrics = a2c.a2c_losses(net, theta, batch, 0.9, 0.0)
  _, metrics = a2c.a2c_losses(net, theta, batch, 0.9, 0.0, advantage="baseline")
  logits, q = net.apply(theta, batch.history)
  idx = jnp.arange(4)
  logp = jax.nn.log_softmax(logits)
  weight = q[idx, batch.action] - (jnp.exp(logp) * q).sum(-1)
  np.testing.assert_allclose(float(metrics["actor_loss"]),
                             float(jnp.mean(-logp[idx, batch.action] * weight)), rtol=1e-5)
  assert float(metrics["critic_loss"]) == float(td_metrics["critic_loss"])
  assert float(metrics["actor_loss"]) != float(td_metrics["actor_loss"])
  with pytest.raises(ConfigError, match="--advantage must be one of td, baseline"):
    a2c.a2c_losses(net, theta, batch, 0.9, 0.0, advantage="gae")
  with pytest.raises(ConfigError, match="--advantage=baseline applies to --critic=q"):
    make_agent("a2c", AgentConfig(dim=8, num_layers=0, num_heads=1, critic="v",
                                  advantage="baseline"), 6, 3)


def test_ialp_is_frozen(theta):
  agent = make_agent("ialp", AgentConfig(dim=8, num_layers=0, num_heads=1, **PAPER), 6, 3,
                     pretrained=theta)
  state = jax.jit(agent.init)(jax.random.PRNGKey(0))
  new, metrics = agent.update(state, tiny_batch(), jax.random.PRNGKey(1))
  assert trees_equal(new.params, theta) and metrics == {}


@pytest.mark.parametrize("beta_init", ["random", "theta"])
def test_ap_one_update_moves_only_beta_along_eq_15(theta, beta_init):
  batch = tiny_batch()
  cfg = AgentConfig(dim=8, num_layers=0, num_heads=1, learning_rate=0.01, **PAPER, alpha0=0.3,
                    alpha_steps=10, beta_init=beta_init)
  ap = make_agent("ialp_ap", cfg, 6, 3, num_sessions=1, pretrained=theta)
  state = jax.jit(ap.init)(jax.random.PRNGKey(0))
  beta = state.params["beta"]
  assert trees_equal(state.params["theta"], theta)
  assert trees_equal(beta, theta) == (beta_init == "theta")
  new, metrics = jax.jit(ap.update)(state, batch, jax.random.PRNGKey(1))
  assert trees_equal(new.params["theta"], theta)  # frozen
  np.testing.assert_allclose(metrics["alpha"], 0.3)
  logits_theta = ap.logits(theta, batch.history)
  log_mix = lambda logits: jnp.log(0.7 * jax.nn.softmax(logits_theta) +
                                   0.3 * jax.nn.softmax(logits))
  grads = jax.jit(jax.grad(lambda p: _reference_loss(ap.net, p, batch, 0.9, log_mix)))(beta)
  assert_adam_step(beta, new.params["beta"], grads, 0.01)
  # policy_params carries alpha: one update later it has moved along the ramp (0.3 -> 1 / 10).
  np.testing.assert_allclose(ap.policy_params(new)["alpha"], 0.3 + 0.07, rtol=1e-5)


def test_ap_acts_from_the_mixture(theta):
  ap = make_agent("ialp_ap", AgentConfig(dim=8, num_layers=0, num_heads=1, **PAPER, alpha0=0.0,
                                         alpha_steps=1), 6, 3, pretrained=theta)
  state = jax.jit(ap.init)(jax.random.PRNGKey(0))
  hist = jnp.asarray([[-1, -1, 0], [-1, 1, 2]], jnp.int32)

  @jax.jit
  def run(pp, beta):
    key = jax.random.PRNGKey(0)
    return (ap.log_policy(pp, hist), ap.act(pp, hist, key, "greedy"),
            ap.act(pp | {"alpha": jnp.float32(1.0)}, hist, key, "greedy"),
            ap.logits(theta, hist), ap.logits(beta, hist))

  log_mix, act0, act1, logits_theta, logits_beta = run(ap.policy_params(state),
                                                       state.params["beta"])
  # alpha 0: the mixture is pi_theta, and greedy acting takes theta's argmax; alpha 1: beta's.
  np.testing.assert_allclose(jnp.exp(log_mix), jax.nn.softmax(logits_theta), rtol=1e-5)
  np.testing.assert_array_equal(act0, jnp.argmax(logits_theta, -1))
  np.testing.assert_array_equal(act1, jnp.argmax(logits_beta, -1))
  assert not np.array_equal(np.asarray(logits_theta), np.asarray(logits_beta))


@pytest.mark.parametrize("kw, message", [({"alpha_shape": "sigmoid"}, "--alpha_shape"),
                                         ({"beta_init": "zeros"}, "--beta_init"),
                                         ({"alpha0": 1.5}, "--alpha0")])
def test_bad_adaptive_config(kw, message):
  with pytest.raises(ConfigError, match=message):
    make_agent("ialp_ap", AgentConfig(**kw), 6, 3)


# --- A2C with a state-value critic and lambda-returns (--critic=v) -------------------------
def _numpy_gae(reward, done, value, last_value, gamma, lam):
  """GAE written as a backwards Python loop over one session, independently of a2c.py."""
  t_len = len(reward)
  adv = np.zeros(t_len)
  nxt_adv, nxt_v = 0.0, last_value
  for t in reversed(range(t_len)):
    nd = 0.0 if done[t] else 1.0
    delta = reward[t] + gamma * nd * nxt_v - value[t]
    adv[t] = delta + gamma * lam * nd * nxt_adv
    nxt_adv, nxt_v = adv[t], value[t]
  return adv


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_lambda_advantages_match_a_backwards_loop(lam):
  rng = np.random.default_rng(0)
  for _ in range(5):
    t_len = int(rng.integers(1, 12))
    reward, value = rng.normal(size=t_len), rng.normal(size=t_len)
    done, last = rng.random(t_len) < 0.3, float(rng.normal())
    got = a2c.lambda_advantages(jnp.asarray(reward, jnp.float32), jnp.asarray(done),
                                jnp.asarray(value, jnp.float32), jnp.float32(last), 0.9, lam)
    np.testing.assert_allclose(np.asarray(got), _numpy_gae(reward, done, value, last, 0.9, lam),
                               rtol=1e-5, atol=1e-5)


def test_lambda_one_is_the_discounted_return_minus_the_value():
  # One episode ending inside the unroll: A_t + V(s_t) is the plain discounted return.
  reward = jnp.asarray([1.0, 2.0, 3.0, 5.0])
  done = jnp.asarray([False, False, True, False])
  value = jnp.asarray([0.3, -1.0, 2.0, 0.0])
  adv = a2c.lambda_advantages(reward, done, value, jnp.float32(7.0), 0.5, 1.0)
  returns = np.asarray(adv + value)
  np.testing.assert_allclose(returns[:3], [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0], rtol=1e-6)
  np.testing.assert_allclose(returns[3], 5.0 + 0.5 * 7.0, rtol=1e-6)  # bootstrapped at the cut


def _rollout(t_len=5, n=3, seed=0):
  rng = np.random.default_rng(seed)
  hist = rng.integers(-1, 6, size=(t_len, n, 3)).astype(np.int32)
  nxt = np.concatenate([hist[:, :, 1:], rng.integers(0, 6, size=(t_len, n, 1))], -1)
  return Transition(history=jnp.asarray(hist), action=jnp.asarray(rng.integers(0, 6, (t_len, n)),
                                                                  jnp.int32),
                    reward=jnp.asarray(rng.normal(size=(t_len, n)), jnp.float32),
                    done=jnp.asarray(rng.random((t_len, n)) < 0.25),
                    next_history=jnp.asarray(nxt.astype(np.int32)))


@pytest.mark.parametrize("normalize", [False, True])
def test_value_critic_losses_against_hand_computation(normalize):
  agent = make_agent("a2c", AgentConfig(dim=8, num_layers=0, num_heads=1, critic="v",
                                        normalize_advantages=normalize), 6, 3)
  assert agent.unroll_len == 10  # the default for the value critic
  params = agent.init_params(jax.random.PRNGKey(3))
  assert "value" in params["params"] and "critic" not in params["params"]
  batch = _rollout()
  loss, m = a2c.a2c_value_losses(agent.net, params, batch, 0.9, 0.95, 0.01, 0.5, normalize)
  logits, v = agent.net.apply(params, batch.history)
  _, v_last = agent.net.apply(params, batch.next_history[-1])
  adv = np.stack([_numpy_gae(np.asarray(batch.reward[:, i]), np.asarray(batch.done[:, i]),
                             np.asarray(v[:, i]), float(v_last[i]), 0.9, 0.95)
                  for i in range(3)], 1)
  target = adv + np.asarray(v)
  critic = 0.5 * np.mean((target - np.asarray(v)) ** 2)
  if normalize:
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
  logp = np.asarray(jax.nn.log_softmax(logits))
  logp_a = np.take_along_axis(logp, np.asarray(batch.action)[..., None], -1)[..., 0]
  actor = -np.mean(logp_a * adv)
  entropy = -np.mean((np.exp(logp) * logp).sum(-1))
  np.testing.assert_allclose(float(m["critic_loss"]), critic, rtol=1e-4)
  np.testing.assert_allclose(float(m["actor_loss"]), actor, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(loss), actor + 0.5 * critic - 0.01 * entropy, rtol=1e-4,
                             atol=1e-6)


def test_value_critic_update_moves_every_head_and_stays_finite():
  agent = make_agent("a2c", AgentConfig(dim=8, num_layers=0, num_heads=1, critic="v",
                                        unroll_len=5), 6, 3)
  state = agent.init(jax.random.PRNGKey(0))
  new, metrics = jax.jit(agent.update)(state, _rollout(), jax.random.PRNGKey(1))
  for name in ("encoder", "actor", "value"):
    assert not trees_equal(state.params["params"][name], new.params["params"][name]), name
  assert all(np.isfinite(float(v)) for v in metrics.values())


@pytest.mark.parametrize("agent, kw, message", [
    ("a2c", {"critic": "w"}, "--critic must be q or v"),
    ("a2c", {"critic": "v", "gae_lambda": 1.5}, "--gae_lambda"),
])
def test_bad_critic_config(agent, kw, message):
  cfg = AgentConfig(dim=8, num_layers=0, num_heads=1, **kw)
  with pytest.raises(ConfigError, match=message):
    cfg.validate()
    make_agent(agent, cfg, 6, 3, pretrained=None)


def test_ap_expected_target_takes_the_mixture_at_the_next_state(theta):
  # The critic's expectation at s' is under pi~(. | s'), pi_theta evaluated at s' too (it was
  # once pi_theta(. | s) mixed with pi_beta(. | s')).
  batch = tiny_batch()
  ap = make_agent("ialp_ap", AgentConfig(dim=8, num_layers=0, num_heads=1, **PAPER, alpha0=0.3,
                                         alpha_steps=10, critic_target="expected"), 6, 3,
                  num_sessions=1, pretrained=theta)
  state = jax.jit(ap.init)(jax.random.PRNGKey(0))
  beta = state.params["beta"]
  _, metrics = ap.update(state, batch, jax.random.PRNGKey(1))
  mix = lambda h: 0.7 * jax.nn.softmax(ap.theta_net.apply(theta, h)[0]) + 0.3 * jax.nn.softmax(
      ap.net.apply(beta, h)[0])
  _, q = ap.net.apply(beta, batch.history)
  _, q_next = ap.net.apply(beta, batch.next_history)
  v_next = (mix(batch.next_history) * q_next).sum(-1)
  td = batch.reward + 0.9 * (1.0 - batch.done) * v_next - q[jnp.arange(4), batch.action]
  np.testing.assert_allclose(float(metrics["critic_loss"]), float(jnp.mean(td ** 2)), rtol=1e-5)


@pytest.mark.parametrize("name", ["ialp", "ialp_ft", "ialp_ap"])
def test_value_critic_adaptive_agents_keep_ialp_and_add_a_value_head(theta, name):
  cfg = AgentConfig(dim=8, num_layers=0, num_heads=1, critic="v", unroll_len=5, alpha0=0.3,
                    alpha_steps=100, beta_init="theta")
  agent = make_agent(name, cfg, 6, 3, num_sessions=3, pretrained=theta)
  state = jax.jit(agent.init)(jax.random.PRNGKey(0))
  learned = state.params["beta"] if name == "ialp_ap" else state.params
  for part in ("encoder", "actor"):  # iALP's, unchanged
    assert trees_equal(learned["params"][part], theta["params"][part])
  assert "value" in learned["params"] and "critic" not in learned["params"]
  hist = _rollout().history[0]
  ialp_logits = a2c.A2C(a2c.A2CConfig(net=NET, critic="q")).logits(theta, hist)
  np.testing.assert_allclose(agent.logits(learned, hist), ialp_logits, rtol=1e-6)
  new, metrics = jax.jit(agent.update)(state, _rollout(), jax.random.PRNGKey(1))
  moved = not trees_equal(new.params, state.params)
  assert moved == (name != "ialp")
  if name == "ialp_ap":
    assert trees_equal(new.params["theta"], theta)
    np.testing.assert_allclose(metrics["alpha"], 0.3)
