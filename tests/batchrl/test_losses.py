"""jaxrec.batchrl's single-example losses against values worked out by hand on 2-3 item
inputs (the arithmetic in the comments), jitted and not: BCQ's unlikely-action mask, target and
loss terms; CQL's quantile Huber loss and conservative term; CRR's expected target, clipped
exp-advantage weight (a constant of the actor loss) and critic loss."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.batchrl import bcq, cql, crr, learners, sqn

F = jnp.float32


class BCQTest(chex.TestCase):

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_the_threshold_decides_which_actions_the_argmax_sees(self):
    q, imitation = F([3.0, 2.0, 0.5]), F([0.0, 1.0, -2.0])  # imitation - max = -1, 0, -3
    for tau, want in ((0.5, 1), (0.3, 0), (0.0, 0)):  # log 0.5 = -0.69, log 0.3 = -1.20
      fn = self.variant(functools.partial(bcq.bcq_action, log_threshold=bcq.log_tau(tau)))
      assert int(fn(q, imitation)) == want, tau

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_target_bootstraps_from_the_target_q_at_the_online_likely_argmax(self):
    fn = self.variant(functools.partial(bcq.bcq_target, log_threshold=math.log(0.5)))
    # online argmax over the likely {1}: the target head's Q[1] = 20; 1 + 0.81 * 20 = 17.2
    got = fn(F(1.0), F(0.81), F([10.0, 20.0, 30.0]), F([3.0, 2.0, 0.5]), F([0.0, 1.0, -2.0]))
    np.testing.assert_allclose(got, 17.2, rtol=1e-6)
    got = fn(F(1.0), F(0.0), F([10.0, 20.0, 30.0]), F([3.0, 2.0, 0.5]), F([0.0, 1.0, -2.0]))
    np.testing.assert_allclose(got, 1.0)  # the episode ended within n steps: no bootstrap

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_loss_terms(self):
    td, ce, reg = self.variant(bcq.bcq_loss)(F([1.0, 2.0, 0.5]), F([0.0, 1.0, -2.0]),
                                             jnp.int32(0), F(2.5))
    # td error 2.5 - 1 = 1.5 >= 1: smooth L1 = 1.5 - 0.5 = 1.0
    # ce = log(e^0 + e^1 + e^-2) - 0;  reg = (0 + 1 + 4) / 3
    np.testing.assert_allclose([td, ce, reg],
                               [1.0, math.log(1 + math.e + math.exp(-2)), 5 / 3], rtol=1e-6)
    td, _, _ = self.variant(bcq.bcq_loss)(F([1.0, 2.0, 0.5]), F([0.0, 1.0, -2.0]),
                                          jnp.int32(1), F(2.5))
    np.testing.assert_allclose(td, 0.5 * 0.5 ** 2)  # |0.5| < 1: 0.5 x^2

  def test_acting_scores_rank_likely_items_first_but_stay_finite(self):
    hp = type("H", (), {"unlikely_threshold": 0.5, "head_softmax": False})
    apply = lambda params, obs: (F([[3.0, 2.0, 0.5]]), F([[0.0, 1.0, -2.0]]))
    s = bcq.scores(apply, None, None, hp)
    assert int(jnp.argmax(s[0])) == 1 and bool(jnp.all(jnp.isfinite(s)))
    hp.head_softmax = True  # the peer's softmax heads: probabilities, nothing masked at 0.5
    s = bcq.scores(apply, None, None, hp)
    assert int(jnp.argmax(s[0])) == 0


class CQLTest(chex.TestCase):

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_quantile_huber_and_conservative_term(self):
    dist = F([[1.0, 3.0], [0.0, 2.0]])  # 2 actions x 2 quantiles
    qr, cons = self.variant(cql.cql_loss)(dist, jnp.int32(0), F([2.0, 2.5]),
                                          cql.quantile_midpoints(2))
    # tau_hat = 0.25, 0.75; theta = 1, 3.
    # i = 0: u = 1.0, 1.5 -> smooth L1 0.5, 1.0, weight |0.25 - 0| -> 0.25 * 1.5 = 0.375
    # i = 1: u = -1.0, -0.5 -> 0.5, 0.125, weight |0.75 - 1| -> 0.25 * 0.625 = 0.15625
    # mean over i = 0.265625
    # Q = quantile means 2, 1: logsumexp - Q[0] = log(e^2 + e^1) - 2
    np.testing.assert_allclose([qr, cons], [0.265625, math.log(math.e ** 2 + math.e) - 2],
                               rtol=1e-6)

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_target_takes_the_target_quantiles_of_the_online_argmax(self):
    got = self.variant(cql.cql_target)(F(0.5), F(0.9), F([[1.0, 2.0], [3.0, 4.0]]),
                                       F([[5.0, 5.0], [0.0, 0.0]]))
    np.testing.assert_allclose(got, [0.5 + 0.9 * 1.0, 0.5 + 0.9 * 2.0], rtol=1e-6)

  def test_midpoints(self):
    np.testing.assert_allclose(cql.quantile_midpoints(4), [0.125, 0.375, 0.625, 0.875])


class CRRTest(chex.TestCase):

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_target_is_the_target_policys_expectation(self):
    got = self.variant(crr.crr_target)(F(1.0), F(0.9), F([2.0, 4.0]), F([0.0, 0.0]))
    np.testing.assert_allclose(got, 1.0 + 0.9 * 3.0, rtol=1e-6)  # uniform target policy

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_loss_terms(self):
    fn = self.variant(functools.partial(crr.crr_loss, beta=1.0, ratio_max=20.0))
    q, logits = F([1.0, 2.0]), F([0.0, math.log(3.0)])  # pi = 0.25, 0.75
    actor, critic, cons, w = fn(q, logits, jnp.int32(0), F(3.7))
    # A = 1 - (0.25 * 1 + 0.75 * 2) = -0.75; weight e^-0.75; actor = -log 0.25 * weight
    # critic = 0.5 (1 - 3.7)^2 = 3.645; cql = log(e^1 + e^2) - 1
    np.testing.assert_allclose(
        [actor, critic, cons, w],
        [math.log(4) * math.exp(-0.75), 3.645, math.log(math.e + math.e ** 2) - 1,
         math.exp(-0.75)], rtol=1e-5)

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_weight_is_clipped_at_the_ratio_bound(self):
    q, logits = F([1.0, 2.0]), F([0.0, math.log(3.0)])
    _, _, _, w = self.variant(functools.partial(crr.crr_loss, beta=0.1, ratio_max=20.0))(
        q, logits, jnp.int32(1), F(0.0))
    np.testing.assert_allclose(w, math.exp(0.25 / 0.1), rtol=1e-5)  # A = 0.25: e^2.5 = 12.2
    _, _, _, w = self.variant(functools.partial(crr.crr_loss, beta=0.05, ratio_max=20.0))(
        q, logits, jnp.int32(1), F(0.0))
    np.testing.assert_allclose(w, 20.0)  # e^5 = 148 -> 20

  def test_the_weight_is_a_constant_of_the_actor_loss(self):
    q, logits = F([1.0, 2.0]), F([0.0, math.log(3.0)])
    grad_q = jax.grad(lambda q: crr.crr_loss(q, logits, jnp.int32(0), F(3.7), 1.0, 20.0)[0])(q)
    np.testing.assert_array_equal(grad_q, [0.0, 0.0])
    grad_l = jax.grad(lambda lg: crr.crr_loss(q, lg, jnp.int32(0), F(3.7), 1.0, 20.0)[0])(logits)
    # d/dlogits of -log pi(a) * w = (pi - onehot(a)) * w
    np.testing.assert_allclose(grad_l, np.array([0.25 - 1.0, 0.75]) * math.exp(-0.75),
                               rtol=1e-5)


class SQNTest(chex.TestCase):
  """EasyRL4Rec's SQN: BCQ's loss, the bootstrap and acting action of the --which_head head."""

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_the_head_picks_the_bootstrap_action(self):
    q, imitation = F([3.0, 2.0, 0.5]), F([0.0, 1.0, 2.5])  # imitation - max = -2.5, -1.5, 0
    q_target = F([10.0, 20.0, 30.0])
    # qhead: argmax Q = 0 -> 1 + 0.81 * 10; shead: argmax imitation = 2 -> 1 + 0.81 * 30;
    # bcq at tau 0.3 (log -1.20): only item 2 is likely -> 30 as well; at tau 0.1 (log -2.30)
    # items 1 and 2 are likely, Q prefers 1 -> 20
    for head, tau, want in (("qhead", 0.5, 9.1), ("shead", 0.5, 25.3), ("bcq", 0.3, 25.3),
                            ("bcq", 0.1, 17.2)):
      fn = self.variant(functools.partial(sqn.sqn_target, which_head=head,
                                          log_threshold=bcq.log_tau(tau)))
      np.testing.assert_allclose(fn(F(1.0), F(0.81), q_target, q, imitation), want, rtol=1e-6,
                                 err_msg=f"{head} {tau}")

  def test_loss_is_bcqs_with_the_heads_target(self):
    q = F([[1.0, 2.0, 0.5]])
    imitation = F([[0.0, -2.0, 1.0]])
    apply = lambda params, obs: (q * params, imitation * params)  # target params 2: heads x 2
    sample = learners.Sample(obs=None, action=jnp.int32([0]), reward=F([0.0]),
                             done=jnp.bool_([False]), next_obs=None, nstep_return=F([0.5]),
                             boot_obs=None, boot_discount=F([1.0]))
    ce = math.log(1 + math.exp(-2) + math.e)  # CE of imitation at the logged action 0
    # shead: argmax imitation = 2, target Q [2] = 1: target 1.5, td 0.5 -> 0.5 * 0.5^2
    # qhead: argmax Q = 1, target Q [1] = 4: target 4.5, td 3.5 -> 3.5 - 0.5 = 3.0
    for head, td in (("shead", 0.125), ("qhead", 3.0)):
      hp = learners.HParams(which_head=head, imitation_penalty=0.01)
      loss, m = sqn.batch_loss(apply, F(1.0), F(2.0), sample, hp)
      np.testing.assert_allclose([m["q_loss"], m["imitation_loss"], m["reg_loss"]],
                                 [td, ce, 5 / 3], rtol=1e-6, err_msg=head)
      np.testing.assert_allclose(loss, td + ce + 0.01 * 5 / 3, rtol=1e-6, err_msg=head)

  def test_acting_scores_are_the_chosen_head(self):
    q, imitation = F([[3.0, 2.0, 0.5]]), F([[0.0, 1.0, 2.5]])
    apply = lambda params, obs: (q, imitation)
    for head, tau, want in (("qhead", 0.5, 0), ("shead", 0.5, 2), ("bcq", 0.1, 1)):
      s = sqn.scores(apply, None, None, learners.HParams(which_head=head,
                                                         unlikely_threshold=tau))
      assert int(jnp.argmax(s[0])) == want and bool(jnp.all(jnp.isfinite(s))), head
