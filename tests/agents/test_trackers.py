"""State trackers (avg, GRU, SASRec, Caser, NextItNet): shapes, padding and window masking, the
avg, Caser and NextItNet trackers against NumPy versions of the peer's layers, the GRU against
its cell stepped by hand, the last-position SASRec block against the full one, rewards as an
input, and the two-level categorical sampler's distribution."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.agents import acting
from jaxrec.layers import CausalBlock
from jaxrec.nets.networks import TRACKERS, ActorValue, NetConfig, StateEncoder, init_params

ITEMS, L, D = 12, 6, 8


def encoder(tracker, window=0, hidden=(), **net):
  cfg = NetConfig(num_items=ITEMS, history_len=L, dim=D, num_layers=2, num_heads=2,
                  tracker=tracker, window=window, hidden=hidden, **net)
  enc = StateEncoder(cfg)
  return enc, init_params(enc, jax.random.PRNGKey(0))


HIST = jnp.asarray([[-1, -1, -1, -1, -1, 4],
                    [-1, -1, 3, 7, 1, 9],
                    [0, 1, 2, 3, 4, 5],
                    [-1] * L], jnp.int32)


@pytest.mark.parametrize("tracker", TRACKERS)
@pytest.mark.parametrize("hidden", [(), (5, 3)])
def test_shapes_over_leading_axes(tracker, hidden):
  enc, params = encoder(tracker, 4, hidden)
  out = enc.apply(params, jnp.broadcast_to(HIST, (2,) + HIST.shape))
  assert out.shape == (2, 4, hidden[-1] if hidden else D + 48 * (tracker == "caser"))
  assert np.isfinite(np.asarray(out)).all()
  net = ActorValue(NetConfig(num_items=ITEMS, history_len=L, dim=D, tracker=tracker, window=4,
                             hidden=hidden))
  logits, value = net.apply(init_params(net, jax.random.PRNGKey(1)), HIST)
  assert logits.shape == (4, ITEMS) and value.shape == (4,)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_items_outside_the_window_do_not_matter(tracker):
  enc, params = encoder(tracker, window=4)
  other = HIST.at[:, :2].set(jnp.asarray([[5, 6]] * 4))  # only positions before the window
  np.testing.assert_array_equal(enc.apply(params, HIST), enc.apply(params, other))
  moved = HIST.at[:, -1].set(11)  # the newest item is inside it
  assert not np.allclose(enc.apply(params, HIST)[:3], enc.apply(params, moved)[:3])


@pytest.mark.parametrize("tracker", ("avg", "gru", "nextitnet"))
def test_padding_is_ignored(tracker):
  """A history's padding and a shorter window of the same items give the same state."""
  enc, params = encoder(tracker)
  short = jnp.asarray([[-1, -1, -1, 3, 7, 1]], jnp.int32)
  enc3, params3 = encoder(tracker, window=3)
  np.testing.assert_allclose(enc.apply(params, short), enc3.apply(params3, short), rtol=1e-6)


def test_avg_tracker_is_the_mean_of_the_window_embeddings():
  enc, params = encoder("avg", window=4)
  table = np.asarray(params["params"]["items"]["embedding"])
  empty = np.asarray(params["params"]["empty"])
  want = []
  for row in np.asarray(HIST):
    items = [i for i in row[-4:] if i >= 0]
    want.append(table[items].mean(axis=0) if items else empty)
  np.testing.assert_allclose(enc.apply(params, HIST), np.stack(want), rtol=1e-6, atol=1e-7)


def test_gru_tracker_steps_its_cell_over_the_items_only():
  enc, params = encoder("gru", window=4)
  table = params["params"]["items"]["embedding"]
  cell = nn.GRUCell(D)
  cell_params = {"params": params["params"]["gru"]}
  row = HIST[1]  # window [3, 7, 1, 9]
  h = jnp.zeros((D,))
  for item in np.asarray(row[-4:]):
    h, _ = cell.apply(cell_params, h, table[item])
  np.testing.assert_allclose(enc.apply(params, HIST[1:2])[0], h, rtol=1e-5, atol=1e-6)
  # no item at all: the zero state
  np.testing.assert_array_equal(enc.apply(params, HIST[3:4])[0], np.zeros(D))


def _oldest_first(row):
  """The peer's layout of one right-aligned history: its items oldest first, then padding."""
  items = [i for i in row if i >= 0]
  return items, len(items)


def _np_conv1d(x, kernel, bias, dilation=1, causal=False):
  """x [W, C], kernel [k, C, F] (flax layout) -> [W', F]: torch Conv2d with a (k, C) kernel
  over a one-channel [W, C] image (VALID), or with (k - 1) * dilation zero rows in front."""
  k = kernel.shape[0]
  if causal:
    x = np.concatenate([np.zeros(((k - 1) * dilation, x.shape[1])), x])
  span = (k - 1) * dilation
  return np.stack([sum(x[t + j * dilation] @ kernel[j] for j in range(k)) + bias
                   for t in range(x.shape[0] - span)])


def test_caser_tracker_is_the_peers_horizontal_and_vertical_convolutions():
  enc, params = encoder("caser", window=5)
  p = jax.tree_util.tree_map(np.asarray, params["params"])
  table = p["items"]["embedding"]
  want = []
  for row in np.asarray(HIST)[:, -5:]:
    items, n = _oldest_first(row)
    seq = np.zeros((5, D))
    seq[:n] = table[items]
    pooled = [np.maximum(_np_conv1d(seq, p[f"caser_h{h}"]["kernel"], p[f"caser_h{h}"]["bias"]),
                         0).max(axis=0) for h in (2, 3, 4)]
    vertical = np.maximum(p["caser_v_kernel"] @ seq + p["caser_v_bias"], 0)
    want.append(np.concatenate(pooled + [vertical]))
  np.testing.assert_allclose(enc.apply(params, HIST), np.stack(want), rtol=1e-5, atol=1e-5)


def test_caser_refuses_a_window_shorter_than_its_filters():
  with pytest.raises(ValueError, match="at least 4"):
    encoder("caser", window=3)


def test_nextitnet_tracker_is_the_peers_residual_dilated_convolutions():
  enc, params = encoder("nextitnet")
  p = jax.tree_util.tree_map(np.asarray, params["params"])
  table = p["items"]["embedding"]

  def ln(x, q):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * q["scale"] + q["bias"]

  for row, got in zip(np.asarray(HIST), np.asarray(enc.apply(params, HIST))):
    items, n = _oldest_first(row)
    if not n:
      np.testing.assert_array_equal(got, np.zeros(D))
      continue
    x = np.zeros((L, D))
    x[:n] = table[items]
    mask = (np.arange(L) < n)[:, None]
    for i, r in enumerate((1, 2, 1, 2, 1, 2)):
      h = x
      for j, dil in enumerate((r, 2 * r)):
        conv = p[f"nextitnet_{i}_conv{j + 1}"]
        h = np.maximum(ln(_np_conv1d(h, conv["kernel"], conv["bias"], dil, causal=True),
                          p[f"nextitnet_{i}_ln{j + 1}"]), 0)
      x = (x + h) * mask
    np.testing.assert_allclose(got, x[n - 1], rtol=1e-4, atol=1e-5)


def test_last_position_block_equals_the_full_block():
  blk = CausalBlock(D, 2, window=4)
  x = jax.random.normal(jax.random.PRNGKey(2), (L, D))
  for valid in (jnp.ones(L, bool), jnp.arange(L) >= 3):
    p = blk.init(jax.random.PRNGKey(3), x, valid)
    np.testing.assert_allclose(blk.apply(p, x, valid, method=CausalBlock.last),
                               blk.apply(p, x, valid)[-1], rtol=1e-5, atol=1e-6)


def test_sasrec_state_is_the_full_encoding_at_the_newest_position():
  enc, params = encoder("sasrec")
  p = params["params"]
  emb = p["items"]["embedding"]
  blocks = [CausalBlock(D, 2, L) for _ in range(2)]
  ln = nn.LayerNorm()
  for row in np.asarray(HIST[:3]):
    valid = jnp.asarray(row >= 0)
    x = emb[np.maximum(row, 0)] * valid[:, None]
    for i, blk in enumerate(blocks):
      x = blk.apply({"params": p[f"block_{i}"]}, x, valid)
    want = ln.apply({"params": p["ln_f"]}, x[-1])
    got = enc.apply(params, jnp.asarray(row)[None])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_trackers_trace_once():
  enc, params = encoder("gru", 3, (4,))
  f = jax.jit(chex.assert_max_traces(lambda p, h: enc.apply(p, h), n=1))
  f(params, HIST)
  f(params, HIST.at[0, -1].set(2))  # new values, same shapes: no retrace


def test_categorical_sampler_matches_softmax_and_never_draws_masked_items():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 37)) * 2, jnp.float32)
  logits = logits.at[1, ::3].set(-jnp.inf)  # masked items
  keys = jax.random.split(jax.random.PRNGKey(4), 40_000)
  draws = np.asarray(jax.jit(jax.vmap(acting.categorical, in_axes=(0, None)))(keys, logits))
  for row in range(2):
    p = np.asarray(jax.nn.softmax(logits[row]))
    freq = np.bincount(draws[:, row], minlength=37) / len(keys)
    assert 0.5 * np.abs(freq - p).sum() < 0.03  # sampling noise at 40k draws: ~0.015
  assert not np.isin(draws[:, 1], np.arange(0, 37, 3)).any()
  one_hot = jnp.full((1, 37), -jnp.inf).at[0, 36].set(0.0)  # the last, padded block
  assert set(np.asarray(jax.vmap(acting.categorical, in_axes=(0, None))(
      keys[:500], one_hot))[:, 0]) == {36}


# --- rewards as an input (reward_handle="cat") --------------------------------------------------
REW = jnp.asarray(np.random.default_rng(1).uniform(size=HIST.shape), jnp.float32)


def reward_encoder(tracker, window=0, num_tokens=0):
  return encoder(tracker, window, reward_handle="cat", num_tokens=num_tokens)


def test_avg_with_rewards_is_the_peers_mean_of_embedding_and_reward():
  """EasyRL4Rec StateTrackerAvg, reward_handle cat: mean over the window's items of
  [e_item, normalised reward], a state of dim + 1."""
  enc, params = reward_encoder("avg", window=4)
  table = np.asarray(params["params"]["items"]["embedding"])
  empty = np.asarray(params["params"]["empty"])
  assert empty.shape == (D + 1,)
  want = []
  for row, r in zip(np.asarray(HIST), np.asarray(REW)):
    rows = [np.append(table[i], r[-4:][j]) for j, i in enumerate(row[-4:]) if i >= 0]
    want.append(np.mean(rows, axis=0) if rows else empty)
  np.testing.assert_allclose(enc.apply(params, (HIST, REW)), np.stack(want), rtol=1e-6,
                             atol=1e-7)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_rewards_change_the_state_and_padding_rewards_do_not(tracker):
  enc, params = reward_encoder(tracker)
  base = enc.apply(params, (HIST, REW))
  width = {"avg": D + 1, "nextitnet": D + 1, "caser": D + 1 + 48}.get(tracker, D)
  assert base.shape == (4, width)
  moved = enc.apply(params, (HIST, REW.at[:, -1].set(REW[:, -1] + 0.5)))
  assert not np.allclose(base[:3], moved[:3])  # rows 0-2 hold an item in the newest slot
  padded = enc.apply(params, (HIST, jnp.where(HIST < 0, 7.0, REW)))  # rewards under padding
  np.testing.assert_array_equal(base, padded)


def test_user_token_positions_carry_no_reward():
  enc, params = reward_encoder("gru", num_tokens=ITEMS + 3)
  hist = jnp.asarray([[ITEMS + 1, -1, -1, 3, 7, 1]], jnp.int32)
  r = jnp.asarray([[0.3, 0, 0, 0.1, 0.2, 0.9]], jnp.float32)
  np.testing.assert_array_equal(enc.apply(params, (hist, r)),
                                enc.apply(params, (hist, r.at[0, 0].set(0.8))))


def test_reward_input_refuses_the_other_input_kind():
  enc, params = reward_encoder("avg")
  with pytest.raises(ValueError, match=r"\(items, rewards\)"):
    enc.apply(params, HIST)
  plain, plain_params = encoder("avg")
  with pytest.raises(ValueError, match="item array"):
    plain.apply(plain_params, (HIST, REW))


def test_reward_history_normalises_shifts_and_resets():
  from jaxrec.envs.base import INIT_REWARD, reward_history
  lo, hi = 1.0, 5.0
  fresh, step = reward_history(4, (jnp.float32(lo), jnp.float32(hi)))
  init = min((INIT_REWARD - lo) / (hi - lo), 1.0)
  np.testing.assert_allclose(fresh, [0, 0, 0, init])
  buf = jnp.stack([fresh, fresh])
  buf = step(buf, jnp.asarray([3.0, 9.0]), jnp.asarray([False, False]))
  np.testing.assert_allclose(buf, [[0, 0, init, 0.5], [0, 0, init, 1.0]])  # capped at 1
  buf = step(buf, jnp.asarray([5.0, 2.0]), jnp.asarray([False, True]))
  np.testing.assert_allclose(buf, [[0, init, 0.5, 1.0], fresh])  # done: a fresh episode's
