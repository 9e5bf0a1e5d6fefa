"""jaxrec.offline: transitions, HR/NDCG, the SQN loss, the fused loop (learning, double-Q role
swap, resume) and the CLI's refusals."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError
from jaxrec.offline import metrics, sqn
from jaxrec.offline.learners import LEARNERS, HParams
from jaxrec.offline.loop import make_train
from jaxrec.offline.networks import SupervisedQNet
from jaxrec.offline.run import OfflineConfig, train_and_evaluate
from jaxrec.offline.transitions import build_transitions
from jaxrec.agents.optim import adam


def make_dataset(sequences, num_items, name="hand"):
  """A Dataset of the given item sequences (one user each), no text or side information."""
  lengths = [len(s) for s in sequences]
  return Dataset(
      name=name, scenario="test", item_noun="item", behavior="click", attribute_names=(),
      item_text=np.zeros((num_items, 0), "<U1"),
      item_keys=np.array([str(i) for i in range(num_items)]),
      user_keys=np.array([f"u{u}" for u in range(len(sequences))]),
      seq_items=np.concatenate([np.asarray(s, np.int32) for s in sequences]),
      offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
      ratings=np.zeros(0, np.float32), times=np.zeros(0, np.int64),
      item_features=np.zeros((num_items, 0), np.float32),
      user_features=np.zeros((len(sequences), 0), np.float32))


def chain_dataset(num_users=200, num_items=30, length=8, seed=0):
  """Each user starts at a random item; then the next item is always (7 * last + 1) mod I,
  so the last item determines the next one (popularity: about uniform)."""
  rng = np.random.default_rng(seed)
  seqs = []
  for _ in range(num_users):
    s = [int(rng.integers(num_items))]
    for _ in range(length - 1):
      s.append((7 * s[-1] + 1) % num_items)
    seqs.append(s)
  return make_dataset(seqs, num_items, "chain")


# --- transitions -------------------------------------------------------------------------------
def test_transitions_of_a_hand_made_dataset():
  ds = make_dataset([[3, 1, 4], [2, 0]], num_items=5)
  t = build_transitions(ds, history_len=2, to_device=False)
  np.testing.assert_array_equal(t.history, [[-1, -1], [-1, 3], [3, 1], [-1, -1], [-1, 2]])
  np.testing.assert_array_equal(t.action, [3, 1, 4, 2, 0])
  np.testing.assert_array_equal(t.next_history, [[-1, 3], [3, 1], [1, 4], [-1, 2], [2, 0]])
  np.testing.assert_array_equal(t.done, [False, False, True, False, True])
  np.testing.assert_array_equal(t.reward, np.ones(5, np.float32))
  assert t.history.dtype == np.int32 and t.action.dtype == np.int32
  # The end of each sequence is the dataset's own padded history layout (online observations).
  np.testing.assert_array_equal(t.next_history[t.done], ds.padded(2))


def test_short_sequences_are_refused():
  with pytest.raises(DataError, match="u1.*1 item"):
    build_transitions(make_dataset([[3, 1, 4], [2]], num_items=5), history_len=2)


# --- HR / NDCG ----------------------------------------------------------------------------------
def test_hr_ndcg_on_a_hand_made_ranking():
  table = jnp.array([[0.1, 0.9, 0.3, 0.5, 0.2, 0.0],   # truth 3: one item above -> rank 2
                     [0.1, 0.9, 0.3, 0.5, 0.2, 0.0],   # truth 0: 0.9 0.3 0.5 0.2 above -> 5
                     [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])  # truth 2: ties, ids 0 and 1 first -> 3
  truth = jnp.array([3, 0, 2])
  np.testing.assert_array_equal(metrics.rank_of_truth(table, truth), [2, 5, 3])
  # chunk 2 pads the third example's chunk: the padding must not count
  out = metrics.evaluate_ranking(lambda h: table[h[:, 0]], jnp.arange(3)[:, None], truth,
                                 ks=(1, 2, 5), chunk=2)
  expect = {"HR@1": 0.0, "HR@2": 1 / 3, "HR@5": 1.0, "NDCG@1": 0.0,
            "NDCG@2": (1 / np.log2(3)) / 3,
            "NDCG@5": (1 / np.log2(3) + 1 / np.log2(6) + 1 / np.log2(4)) / 3}
  for k, v in expect.items():
    np.testing.assert_allclose(float(out[k]), v, rtol=1e-6, err_msg=k)


def _authors_hit_ndcg(scores, truth, topk):
  """A NumPy port of the SQN authors' `calculate_hit` (argsort, top-k slice, rank from the
  end), for one reward type."""
  sorted_list = np.argsort(scores)
  hit, ndcg = np.zeros(len(topk)), np.zeros(len(topk))
  for i, k in enumerate(topk):
    rec = sorted_list[:, -k:]
    for j in range(len(truth)):
      if truth[j] in rec[j]:
        rank = k - np.argwhere(rec[j] == truth[j])[0, 0]
        hit[i] += 1.0
        ndcg[i] += 1.0 / np.log2(rank + 1)
  return hit / len(truth), ndcg / len(truth)


def test_metrics_match_the_authors_computation_on_random_scores():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(300, 50)).astype(np.float32)
  truth = rng.integers(0, 50, 300)
  hit, ndcg = _authors_hit_ndcg(scores, truth, metrics.KS)
  out = metrics.evaluate_ranking(lambda h: jnp.asarray(scores)[h[:, 0]],
                                 jnp.arange(300)[:, None], jnp.asarray(truth), chunk=128)
  for i, k in enumerate(metrics.KS):
    np.testing.assert_allclose(float(out[f"HR@{k}"]), hit[i], rtol=1e-6)
    np.testing.assert_allclose(float(out[f"NDCG@{k}"]), ndcg[i], rtol=1e-5)


# --- the SQN loss -------------------------------------------------------------------------------
class SQNLossTest(chex.TestCase):

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_one_example_against_numpy(self):
    rng = np.random.default_rng(1)
    logits, q, q_val, q_sel = (rng.normal(size=7).astype(np.float32) for _ in range(4))
    a, r, disc = 4, 1.0, 0.5
    ce, td_loss = self.variant(sqn.sqn_loss)(logits, q, jnp.int32(a), jnp.float32(r),
                                             jnp.float32(disc), q_val, q_sel)
    l64 = logits.astype(np.float64)
    ce_np = np.log(np.exp(l64).sum()) - l64[a]
    # double Q: the main copy's Q(s', .) selects, the target copy's evaluates
    td_np = r + disc * q_val[np.argmax(q_sel)] - q[a]
    np.testing.assert_allclose(ce, ce_np, rtol=1e-5)
    np.testing.assert_allclose(td_loss, 0.5 * td_np**2, rtol=1e-5)
    # the end of a sequence (discount 0): the target is the reward alone
    _, td_end = self.variant(sqn.sqn_loss)(logits, q, jnp.int32(a), jnp.float32(r),
                                           jnp.float32(0.0), q_val, q_sel)
    np.testing.assert_allclose(td_end, 0.5 * (r - q[a])**2, rtol=1e-5)

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_no_gradient_through_the_target(self):
    q_val = jnp.array([0.0, 3.0, 1.0])
    grad = self.variant(jax.grad(lambda v: sqn.double_q_learning(
        jnp.zeros(3), jnp.int32(0), jnp.float32(1.0), jnp.float32(0.5), v,
        jnp.array([0.0, 1.0, 0.0]))))(q_val)
    np.testing.assert_array_equal(grad, np.zeros(3))


def test_each_update_changes_one_copy_and_both_roles_occur():
  ds = chain_dataset(num_users=20)
  data = build_transitions(ds, 4)
  net = SupervisedQNet(OfflineConfig(history_len=4, dim=8, num_layers=0).net(ds.num_items),
                       q_head=True)  # no blocks: the smallest encoder compiles fastest
  init, epoch = make_train(LEARNERS["sqn"], net, adam(0.01, 0.0), HParams(), 16, 1)
  epoch = jax.jit(chex.assert_max_traces(epoch, n=1))
  state = jax.jit(init)(jax.random.PRNGKey(0))
  updated = []
  for e in range(8):
    new, _ = epoch(state, data, jax.random.PRNGKey(e))
    before, after = (jax.device_get(jax.tree.leaves(s.params)) for s in (state, new))
    changed = [not all(np.array_equal(a[c], b[c]) for a, b in zip(before, after))
               for c in (0, 1)]
    assert sum(changed) == 1, changed  # the main copy moves, the target copy does not
    updated.append(changed.index(True))
    state = new
  assert set(updated) == {0, 1}  # the roles swap at random
  assert int(state.updates) == 8


# --- the loop end to end ------------------------------------------------------------------------
TINY = dict(history_len=4, dim=16, batch_size=64, learning_rate=0.01, topk=(1, 5, 10),
            eval_chunk=256)


def rows_of(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  for r in rows:
    r.pop("samples_per_s", None)
  return rows


@pytest.fixture(scope="module")
def chain_runs(tmp_path_factory):
  ds = chain_dataset()
  root = tmp_path_factory.mktemp("offline")
  quiet = lambda s: None
  runs = {}
  runs["normal"] = str(root / "normal")
  train_and_evaluate(OfflineConfig(agent="normal", epochs=4, **TINY), runs["normal"], quiet, ds)
  sqn_cfg = OfflineConfig(agent="sqn", backbone="gru", epochs=4, **TINY)
  runs["sqn"] = str(root / "sqn")
  train_and_evaluate(sqn_cfg, runs["sqn"], quiet, ds)
  runs["resumed"] = str(root / "resumed")
  train_and_evaluate(OfflineConfig(agent="sqn", backbone="gru", epochs=2, **TINY),
                     runs["resumed"], quiet, ds)
  train_and_evaluate(sqn_cfg, runs["resumed"], quiet, ds)
  return runs


@pytest.mark.parametrize("run", ["normal", "sqn"])
def test_learners_beat_popularity_when_the_last_item_decides(chain_runs, run):
  rows = rows_of(chain_runs[run])
  assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
  last = rows[-1]
  # 7 of 8 positions are determined by the previous item (the first one is a random start)
  assert last["HR@5"] > 0.7, last
  assert last["HR@5"] > 3 * last["popularity_HR@5"], last
  assert last["NDCG@10"] > rows[0]["NDCG@10"] + 0.3
  assert last["updates"] == 4 * (1280 // 64)  # 160 train users x 8 items, batches of 64
  results = json.load(open(os.path.join(chain_runs[run], "results.json")))
  method = f"{'sasrec' if run == 'normal' else 'gru'}-{run}"
  assert results["methods"][method]["HR@5"] == last["HR@5"]
  assert results["methods"]["popularity"]["HR@5"] == last["popularity_HR@5"]
  if run == "sqn":
    assert np.isfinite(last["q_loss"]) and last["q_loss"] > 0


def test_resume_equals_uninterrupted(chain_runs):
  assert rows_of(chain_runs["resumed"]) == rows_of(chain_runs["sqn"])


# --- the CLI ------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,message", [
    (["--agent=foo"], "--agent"),
    (["--eval_head=q"], "--eval_head=q"),
    (["--topk=5,10,500", "--synthetic_users=50", "--synthetic_items=40"], "--topk 500"),
    (["--agent=sqn", "--neg=5", "--clip=1"], "--clip, --neg do not apply to --agent=sqn"),
    (["--agent=snqn", "--warmup=5"], "--warmup does not apply to --agent=snqn"),
    (["--agent=sa2c", "--neg=0"], "--neg must be positive"),
    (["--max_seq_len=1"], "--max_seq_len must be >= 2"),
    # a test split with no positions
    (["--split=chrono", "--train_frac=0.99999", "--synthetic_users=50", "--synthetic_items=40"],
     "--split=chrono) at --train_frac=0.99999 leaves the test side with no positions"),
])
def test_cli_refuses_bad_input_with_one_line_and_writes_nothing(flags, message, tmp_path):
  workdir = tmp_path / "run"
  res = subprocess.run([sys.executable, "-m", "jaxrec.offline", f"--workdir={workdir}", *flags],
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 2, res.stderr
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
  assert not workdir.exists()


def test_a_dataset_of_one_item_users_is_refused_before_anything_is_written(tmp_path):
  ds = make_dataset([[u % 5] for u in range(20)], num_items=5, name="singles")
  with pytest.raises(DataError, match=r"'singles-train': 16 of 16 users have a sequence "
                     r"shorter than 2 items .*--min_user"):
    train_and_evaluate(OfflineConfig(epochs=1, **(TINY | {"topk": (1,)})),
                       str(tmp_path / "run"), lambda s: None, ds)
  assert not (tmp_path / "run").exists()


def test_nan_epoch_is_refused_and_not_saved(tmp_path):
  from jaxrec.errors import NonFiniteError
  cfg = OfflineConfig(agent="normal", epochs=2, **(TINY | {"learning_rate": 1e30}))
  with pytest.raises(NonFiniteError, match=r"at update \d+ \(update \d+ of epoch 1\)"):
    train_and_evaluate(cfg, str(tmp_path / "run"), lambda s: None, chain_dataset())
  assert os.listdir(tmp_path / "run" / "checkpoints") == []
