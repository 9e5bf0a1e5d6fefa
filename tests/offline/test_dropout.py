"""The SASRec dropout of the offline learners (--dropout): off, the encoder and the fused loop
compute exactly what they did without it; on, it changes training and never evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.agents.optim import adam
from jaxrec.nets.networks import ActorCritic, NetConfig, StateEncoder
from jaxrec.offline.learners import LEARNERS, HParams
from jaxrec.offline.loop import make_train
from jaxrec.offline.networks import SupervisedQNet
from jaxrec.offline.transitions import build_transitions
from tests.offline.test_offline import chain_dataset

CFG = NetConfig(num_items=30, history_len=5, dim=8, num_layers=2, num_heads=2)
HIST = jnp.array([[-1, -1, 3, 4, 5], [1, 2, 3, 4, 5], [-1, -1, -1, -1, -1],
                  [1, 2, 3, 4, 5]], jnp.int32)


def _params(net):
  return net.init(jax.random.PRNGKey(0), net.cfg.example_input((1,)))


def test_dropout_zero_or_no_key_is_the_deterministic_encoder_bit_for_bit():
  base = StateEncoder(CFG)
  params = _params(base)
  ref = base.apply(params, HIST)
  for rate, key in ((0.0, jax.random.PRNGKey(1)), (0.3, None)):
    out = StateEncoder(CFG, dropout=rate).apply(params, HIST, key)
    assert out.tobytes() == ref.tobytes(), (rate, key)
  # the online agents' networks take no dropout and have the same params as before
  ac = ActorCritic(CFG)
  assert (jax.tree.structure(_params(ac)["params"]["encoder"])
          == jax.tree.structure(params["params"]))


def test_dropout_changes_training_forwards_each_example_its_own_mask():
  net = SupervisedQNet(CFG, q_head=True, dropout=0.3)
  params = _params(net)
  evaluated = net.apply(params, HIST)[0]
  a = net.apply(params, HIST, jax.random.PRNGKey(1))[0]
  b = net.apply(params, HIST, jax.random.PRNGKey(2))[0]
  assert not np.allclose(a, evaluated) and not np.allclose(a, b)
  np.testing.assert_array_equal(a, net.apply(params, HIST, jax.random.PRNGKey(1))[0])
  assert not np.allclose(a[1], a[3])  # the same history twice in a batch: two masks
  # evaluation (no key) is the dropout-free network's
  plain = SupervisedQNet(CFG, q_head=True)
  np.testing.assert_array_equal(evaluated, plain.apply(params, HIST)[0])


def test_gru_backbone_ignores_dropout():
  cfg = NetConfig(num_items=30, history_len=5, dim=8, tracker="gru")
  net = SupervisedQNet(cfg, dropout=0.5)
  params = _params(net)
  np.testing.assert_array_equal(net.apply(params, HIST, jax.random.PRNGKey(1))[0],
                                net.apply(params, HIST)[0])


@pytest.fixture(scope="module")
def epochs():
  """One sa2c epoch (past the warm-up) from the same init at dropout 0, 0 again, and 0.1
  twice: {name: params after it}."""
  ds = chain_dataset(num_users=20)
  data = build_transitions(ds, 5)
  cfg = NetConfig(num_items=ds.num_items, history_len=5, dim=8, num_layers=1, num_heads=1)
  out = {}
  for name, rate in (("off", 0.0), ("off_again", 0.0), ("on", 0.1), ("on_again", 0.1)):
    net = SupervisedQNet(cfg, q_head=True, dropout=rate)
    init, epoch = make_train(LEARNERS["sa2c"], net, adam(0.01, 0.0), HParams(warmup=2), 16, 4)
    state = jax.jit(init)(jax.random.PRNGKey(0))
    new, points = jax.jit(epoch)(state, data, jax.random.PRNGKey(1))
    out[name] = jax.device_get((new.params, points["loss"]))
  return out


@pytest.mark.slow
def test_training_with_dropout_differs_and_is_deterministic(epochs):
  leaves = {k: jax.tree.leaves(v) for k, v in epochs.items()}
  assert all(a.tobytes() == b.tobytes() for a, b in zip(leaves["off"], leaves["off_again"]))
  assert all(a.tobytes() == b.tobytes() for a, b in zip(leaves["on"], leaves["on_again"]))
  assert any(not np.array_equal(a, b) for a, b in zip(leaves["off"], leaves["on"]))
