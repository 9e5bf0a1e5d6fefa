"""jaxrec.batchrl.buffer: the logged sequences walked through the true env (the peer's leave
rule with its Python-slicing window, max_turn, the user's last item) against a NumPy walk on
hand-made and random data; the reward input's normalisation; tianshou's n-step returns."""

import numpy as np
import pytest

from jaxrec.batchrl import buffer
from jaxrec.data.dataset import Dataset
from jaxrec.envs import peer
from jaxrec.errors import DataError


def rated_dataset(sequences, ratings, num_items):
  lengths = [len(s) for s in sequences]
  return Dataset(
      name="hand", scenario="test", item_noun="item", behavior="rating", attribute_names=(),
      item_text=np.zeros((num_items, 0), "<U1"),
      item_keys=np.array([f"i{i}" for i in range(num_items)]),
      user_keys=np.array([f"u{u}" for u in range(len(sequences))]),
      seq_items=np.concatenate([np.asarray(s, np.int32) for s in sequences]),
      offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
      ratings=np.concatenate([np.asarray(r, np.float32) for r in ratings]),
      times=np.zeros(0, np.int64), item_features=np.zeros((num_items, 0), np.float32),
      user_features=np.zeros((len(sequences), 0), np.float32))


def true_env(true, threshold, history_len=4, window=7, max_turn=30, user_token=False):
  _, (env, params) = peer.peer_envs(true, true, threshold, history_len, window, max_turn,
                                    user_token)
  return env, params


def np_walk(true, threshold, sequences, history_len, window, max_turn):
  """The peer's construct_buffer_from_offline_data with BaseEnv.step, in plain Python:
  -> (obs histories, done flags) in transition order."""
  vecs = true.T
  obs, dones = [], []
  for seq in sequences:
    episode = []
    for k, item in enumerate(seq):
      t = len(episode)
      recent = episode[t - window:t]  # the peer's sequence_action[t - W:t], Python slicing
      leave = any(np.linalg.norm(vecs[item] - vecs[j]) < threshold for j in recent)
      leave = leave or t >= max_turn - 1 or k == len(seq) - 1
      hist = ([-1] * history_len + episode)[-history_len:]
      obs.append(hist)
      dones.append(leave)
      episode = [] if leave else episode + [item]
  return np.asarray(obs), np.asarray(dones)


def test_a_hand_made_walk_splits_where_the_leave_rule_fires():
  # Items 0 and 1 are 0.71 apart; every other pair at least 4.2 apart; threshold 1.
  true = np.array([[0.0, 0.5, 3.0, 6.0, 9.0]] * 2, np.float32)
  ds = rated_dataset([[0, 2, 1, 3], [4, 4]], [[1, 2, 3, 4], [5, 5]], 5)
  env, params = true_env(true, 1.0)
  b = buffer.build_logged(ds, env, params, gamma=0.5, n_step=2, to_device=False)
  # user 0: 0, 2 stay; 1 is within 1 of 0 (in the window) -> leaves; 3 starts afresh and is
  # the user's last item. user 1: 4, then 4 again (distance 0) -> leaves, also its last.
  np.testing.assert_array_equal(b.done, [False, False, True, True, False, True])
  np.testing.assert_array_equal(b.items, [[-1, -1, -1, -1], [-1, -1, -1, 0], [-1, -1, 0, 2],
                                          [-1, -1, -1, -1], [-1, -1, -1, -1],
                                          [-1, -1, -1, 4]])
  np.testing.assert_array_equal(b.next_items[2], [-1, 0, 2, 1])
  np.testing.assert_array_equal(b.action, [0, 2, 1, 3, 4, 4])
  np.testing.assert_array_equal(b.reward, [1, 2, 3, 4, 5, 5])
  np.testing.assert_array_equal(b.env_reward, true[0, [0, 2, 1, 3, 4, 4]])
  # the logged behaviour in the env: episodes (0, 2, 1), (3), (4, 4) -> R 3.5, 6, 18
  beh = buffer.summary(b)["behaviour"]
  np.testing.assert_allclose([beh["R"], beh["Len"], beh["Ravg"]],
                             [27.5 / 3, 2.0, (3.5 / 3 + 6.0 + 9.0) / 3], rtol=1e-6)
  # The reward input: ratings normalised by the logged min / max (1, 5), the fresh episode's
  # initial reward 1 -> 0 (capped at 1 either way).
  np.testing.assert_allclose(b.next_rewards[1], [0, 0, 0, 0.25])
  np.testing.assert_allclose(b.rewards[2], [0, 0, 0, 0.25])
  # n = 2, gamma 0.5: 1 + 0.5 * 2 bootstraps from after item 2 with 0.25; 2 + 0.5 * 3 ends.
  np.testing.assert_allclose(b.nstep_return, [2.0, 3.5, 3.0, 4.0, 7.5, 5.0])
  np.testing.assert_allclose(b.boot_discount, [0.25, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(b.boot[:1], [1])
  # Without the leave rule: one episode per user.
  b = buffer.build_logged(ds, env, params, gamma=0.5, n_step=2, leave_split=False,
                          to_device=False)
  np.testing.assert_array_equal(b.done, [False, False, False, True, False, True])
  np.testing.assert_array_equal(b.items[3], [-1, 0, 2, 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_random_walks_match_the_numpy_peer(seed):
  rng = np.random.default_rng(seed)
  num_users, num_items = 6, 12
  true = rng.integers(1, 6, size=(num_users, num_items)).astype(np.float32)
  vecs = true.T
  pair = np.linalg.norm(vecs[:, None] - vecs[None], axis=-1)
  threshold = float(np.quantile(pair[pair > 0], 0.3))
  seqs = [list(rng.integers(0, num_items, size=int(rng.integers(2, 14)))) for _ in
          range(num_users)]
  rats = [list(rng.integers(1, 6, size=len(s)).astype(float)) for s in seqs]
  ds = rated_dataset(seqs, rats, num_items)
  env, params = true_env(true, threshold, history_len=5, window=4, max_turn=6)
  b = buffer.build_logged(ds, env, params, gamma=0.9, n_step=3, to_device=False)
  obs, dones = np_walk(true, threshold, seqs, 5, 4, 6)
  np.testing.assert_array_equal(b.done, dones)
  np.testing.assert_array_equal(b.items, obs)
  assert 0 < dones.sum() - num_users  # the rule fired inside some sequences


def test_user_tokens_start_every_episode():
  true = np.array([[0.0, 0.5, 3.0], [1.0, 1.0, 1.0]], np.float32)
  ds = rated_dataset([[0, 1, 2], [2]], [[1, 1, 1], [2]], 3)
  env, params = true_env(true, 1.0, user_token=True)
  b = buffer.build_logged(ds, env, params, gamma=0.9, n_step=1, to_device=False)
  np.testing.assert_array_equal(b.done, [False, True, True, True])
  np.testing.assert_array_equal(b.items, [[-1, -1, -1, 3], [3, -1, -1, 0],
                                          [-1, -1, -1, 3], [-1, -1, -1, 4]])


def test_nstep_matches_tianshou_by_hand():
  r = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
  done = np.array([False, False, False, True, True])
  ret, boot, disc = buffer.nstep(r, done, gamma=0.5, n=3)
  # t0: 1 + 1 + 0.75 then gamma^3 from after t2; t1: 2 + 1.5 + 1 (ends at t3); t2: 3 + 2.
  np.testing.assert_allclose(ret, [2.75, 4.5, 5.0, 4.0, 5.0])
  np.testing.assert_allclose(disc, [0.125, 0, 0, 0, 0])
  assert boot[0] == 2


def test_a_true_matrix_of_other_users_is_refused():
  true = np.array([[0.0, 0.5]], np.float32)
  env, params = true_env(true, 1.0)
  with pytest.raises(DataError, match="2 users, the true env's matrix 1"):
    buffer.build_logged(rated_dataset([[0], [1]], [[1], [1]], 2), env, params, 0.9, 1)


def test_data_without_ratings_is_refused():
  true = np.array([[0.0, 0.5]], np.float32)
  ds = rated_dataset([[0, 1]], [[1, 1]], 2)
  ds = Dataset(**{**ds.__dict__, "ratings": np.zeros(0, np.float32)})
  env, params = true_env(true, 1.0)
  with pytest.raises(DataError, match="no ratings"):
    buffer.build_logged(ds, env, params, gamma=0.9, n_step=1)
