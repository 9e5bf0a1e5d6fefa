"""iALP pre-training: the policy learns what the labeler prefers; resume equals an
uninterrupted run; the shard-directory labelers (lockstep with a labeler in another process,
and offline shards); the pre-trained policy as --init_from; bad flags."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxrec import shards
from jaxrec.errors import ConfigError, DataError
from jaxrec.oracle_config import OracleConfig
from jaxrec.train.pretraining import PretrainConfig, load_policy, pretrain
from jaxrec.nets.networks import NetConfig
from tests.train.conftest import PRETRAIN_TINY, tiny_agent_config

quiet = lambda s: None


def _cfg(env_dir, **kw):
  base = dict(env=env_dir, agent_cfg=tiny_agent_config()) | PRETRAIN_TINY
  return PretrainConfig(**(base | kw))


def _rows(path):
  rows = [json.loads(l) for l in open(path)]
  for r in rows:
    r.pop("epoch_s", None)
    r.pop("label_wait_s", None)
  return rows


@pytest.fixture(scope="module")
def runs(pretrained_dir, best_item_env_dir, tmp_path_factory):
  """The inproc labeler: 4 epochs uninterrupted (the session's pretrained_dir), and 2 epochs
  then rerun to 4."""
  root = tmp_path_factory.mktemp("pretrain")
  os.symlink(pretrained_dir, root / "full")
  full = _rows(root / "full" / "metrics.jsonl")
  pretrain(_cfg(best_item_env_dir, epochs=2), str(root / "part"), log=quiet)
  resumed_log = []
  pretrain(_cfg(best_item_env_dir), str(root / "part"), log=resumed_log.append)
  return root, full, resumed_log


def test_pretraining_learns_what_the_oracle_prefers(runs):
  _, full, _ = runs
  # Epoch 0 is the random init (a near-uniform policy earns ~2.5 here); the oracle picks item 3
  # (reward 4) whenever it is among the 5 candidates, else one of items 0-9 (2.5, the user
  # stays), never 10-19 (they pay 1 < min_reward 2: the user leaves).
  assert full[0]["R"] < 6.0
  assert full[-1]["R"] > full[0]["R"] + 10.0, [r["R"] for r in full]
  assert [r["epoch"] for r in full] == [0, 1, 2, 3, 4]
  assert all(r["none_rate"] < 0.05 and r["mean_rp"] > 0.95 for r in full[1:])


def test_resume_equals_uninterrupted(runs):
  root, _, resumed_log = runs
  assert any("resumed from epoch 2" in l for l in resumed_log)
  assert _rows(root / "full" / "metrics.jsonl") == _rows(root / "part" / "metrics.jsonl")
  net = NetConfig(num_items=20, history_len=4, dim=16, num_layers=0, num_heads=1)
  a, b = (load_policy(str(root / d), net) for d in ("full", "part"))
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)


def _leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_policy_files_and_init_from_checks(runs):
  root, _, _ = runs
  info = json.loads(open(root / "full" / "policy" / "policy.json").read())
  assert info["net"]["dim"] == 16 and info["epochs"] == 4 and info["labeler"] == "inproc"
  with pytest.raises(ConfigError, match="pre-trained with dim=16, this run has --dim=32"):
    load_policy(str(root / "full"), NetConfig(num_items=20, history_len=4, dim=32,
                                              num_layers=0, num_heads=1))
  with pytest.raises(ConfigError, match="no pre-trained policy"):
    load_policy(str(root / "nope"), NetConfig(num_items=20))


def _start_labeler(labeler_dir, env_dir, log_path, *extra):
  # The labeler's log goes to a file, not a pipe: nobody reads a pipe while pre-training runs,
  # and a full pipe would block the labeler (and so pre-training) until the label timeout.
  with open(log_path, "w") as log:
    return subprocess.Popen(
        [sys.executable, "-m", "llm_labeler.label", f"--requests={labeler_dir}/requests",
         f"--out={labeler_dir}/labels", "--backend=oracle", f"--env={env_dir}", "--follow",
         "--oracle_temperature=0", "--poll_seconds=0.02", *extra],
        stdout=log, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_lockstep_through_a_shard_directory_matches_inproc(runs, best_item_env_dir, tmp_path):
  """A labeler in another process (llm_labeler.label --follow, oracle backend at temperature 0,
  so its labels are those of the in-process oracle) serves every lockstep step."""
  pytest.importorskip("llm_labeler.job")  # a library module: CLI modules define absl flags
  root, full, _ = runs
  labeler_dir = tmp_path / "exchange"
  log_path = tmp_path / "labeler.log"
  proc = _start_labeler(labeler_dir, best_item_env_dir, log_path)
  try:
    rows = pretrain(_cfg(best_item_env_dir, labeler="dir", labeler_dir=str(labeler_dir),
                         epochs=2, label_timeout=300), str(tmp_path / "run"), log=quiet)
    proc.wait(timeout=300)
  finally:
    proc.kill()
  assert proc.returncode == 0, log_path.read_text()[-3000:]
  assert shards.is_done(str(labeler_dir / "requests"))
  names = shards.list_shards(str(labeler_dir / "requests"))
  assert len(names) == 2 * 2 * 5 and names == shards.list_shards(str(labeler_dir / "labels"))
  req = shards.read_requests(str(labeler_dir / "requests"), names[0])
  assert req.candidates.shape == (64, 5) and np.all(req.user >= 0)
  # Same keys, same (argmax) labels: the same run as the in-process oracle, up to float
  # reassociation between one fused scan and step-by-step jitted calls.
  assert [r["epoch"] for r in rows] == [0, 1, 2]
  assert rows[0] == full[0]  # the same random init, evaluated with the same key
  for got, want in zip(rows[1:], full[1:3]):
    for f in ("R", "Len", "none_rate", "mean_rp", "critic_loss"):
      np.testing.assert_allclose(got[f], want[f], rtol=1e-3, err_msg=f)


def test_dir_labeler_timeout_is_a_one_line_error(best_item_env_dir, tmp_path):
  with pytest.raises(DataError, match=r"no label shard 'e00001-p0000-t0000' after 0.2 s"):
    pretrain(_cfg(best_item_env_dir, labeler="dir", label_timeout=0.2), str(tmp_path / "w"),
             log=quiet)


def _write_offline_shards(lab, n=128, k=5, num_shards=2):
  """Request + label shards as an offline job writes them: item 3 is always a candidate and
  always chosen, except 10 "None" answers per shard."""
  rng = np.random.default_rng(0)
  meta = {"dataset": "best_item", "fingerprint": "0" * 16, "k": k}
  for i in range(num_shards):
    cands = np.stack([rng.permutation(np.delete(np.arange(20), 3))[:k] for _ in range(n)])
    cands[np.arange(n), rng.integers(0, k, n)] = 3
    history = rng.integers(-1, 20, size=(n, 4)).astype(np.int32)
    req = shards.RequestShard(session=np.arange(n, dtype=np.int32), step=np.zeros(n, np.int32),
                              history=history, candidates=cands.astype(np.int32),
                              user=np.zeros(n, np.int32))
    shards.write_requests(str(lab / "requests"), f"s{i}", req, meta)
    choice = np.argmax(cands == 3, axis=1).astype(np.int32)
    choice[:10] = k
    shards.write_labels(str(lab / "labels"), f"s{i}",
                        shards.LabelShard(choice, np.ones(n, bool)), meta | {"backend": "test"})


def test_offline_shards_become_one_step_transitions(best_item_env_dir, tmp_path):
  from jaxrec.envs import build
  from jaxrec.train.label_exchange import load_shard_transitions
  _write_offline_shards(tmp_path)
  env, _, meta = build.load_env(best_item_env_dir)
  t, stats = load_shard_transitions(str(tmp_path), meta, env, 20)
  a = np.asarray(t.action)
  assert a.shape == (256,) and np.all(a[10:128] == 3) and np.all(a[138:] == 3)
  np.testing.assert_array_equal(np.asarray(t.reward), np.where(a == 3, 1.0, 0.0) * (
      np.arange(256) % 128 >= 10))
  assert np.all(np.asarray(t.done))  # one judgment each: nothing to bootstrap from
  np.testing.assert_array_equal(np.asarray(t.next_history)[:, -1], a)
  np.testing.assert_array_equal(np.asarray(t.next_history)[:, :-1], np.asarray(t.history)[:, 1:])
  assert stats == {"none_rate": 20 / 256, "invalid_rate": 0.0, "mean_rp": 236 / 256}


def test_shard_negatives_add_the_passed_over_candidates(best_item_env_dir, tmp_path):
  """--shard_negatives: after the labeled rows, one r^p = 0 row per candidate a label passed
  over (k - 1 per answered request; none for a None answer), with that request's history."""
  from jaxrec.envs import build
  from jaxrec.train.label_exchange import load_shard_transitions
  _write_offline_shards(tmp_path)
  env, _, meta = build.load_env(best_item_env_dir)
  plain, _ = load_shard_transitions(str(tmp_path), meta, env, 20)
  t, stats = load_shard_transitions(str(tmp_path), meta, env, 20, negatives=True)
  n_neg = 2 * (128 - 10) * 4  # answered requests x (k - 1)
  assert stats["negative_rows"] == n_neg and t.action.shape == (256 + n_neg,)
  for f in ("history", "action", "reward"):  # the labeled rows first, unchanged
    np.testing.assert_array_equal(np.asarray(getattr(t, f))[:256],
                                  np.asarray(getattr(plain, f)))
  neg_a, neg_h = np.asarray(t.action)[256:], np.asarray(t.history)[256:]
  assert np.all(np.asarray(t.reward)[256:] == 0.0) and np.all(np.asarray(t.done))
  assert not np.any(neg_a == 3)  # item 3 is the chosen one in every answered request
  # the first request answered (row 10 of shard s0) gives the first 4 negatives, its history
  req = shards.read_requests(str(tmp_path / "requests"), "s0")
  np.testing.assert_array_equal(np.sort(neg_a[:4]), np.sort(req.candidates[10][
      req.candidates[10] != 3]))
  assert np.all(neg_h[:4] == req.history[10])


def test_shard_negatives_need_hard_offline_labels(best_item_env_dir, tmp_path):
  with pytest.raises(ConfigError, match="--shard_negatives needs --labeler=shards"):
    pretrain(_cfg(best_item_env_dir, shard_negatives=True), str(tmp_path / "run"), log=quiet)
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_pretraining_from_offline_shards(best_item_env_dir, tmp_path):
  _write_offline_shards(tmp_path / "offline")
  rows = pretrain(_cfg(best_item_env_dir, labeler="shards", labeler_dir=str(tmp_path / "offline"),
                       epochs=2), str(tmp_path / "run"), log=quiet)
  assert [r["epoch"] for r in rows] == [0, 1, 2]
  assert rows[-1]["none_rate"] == 20 / 256 and rows[-1]["updates"] == 2 * 2 * 5 * 2
  assert rows[-1]["critic_loss"] < rows[1]["critic_loss"]  # it fits D_LLM
  assert os.path.isfile(tmp_path / "run" / "policy" / "policy.json")


def test_shards_without_labels_are_refused(best_item_env_dir, tmp_path):
  _write_offline_shards(tmp_path, num_shards=1)
  os.remove(tmp_path / "labels" / "s0.json")
  with pytest.raises(DataError, match="request shard 's0' has no label shard"):
    pretrain(_cfg(best_item_env_dir, labeler="shards", labeler_dir=str(tmp_path)),
             str(tmp_path / "run"), log=quiet)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kw, message", [
    ({"labeler": "llm"}, "--labeler must be one of inproc, dir, shards"),
    ({"labels": "fuzzy"}, "--labels must be one of hard, soft"),
    ({"candidates": "best"}, "--candidates must be one of topk, sample"),
    ({"episode_len": 0}, "--episode_len must be positive"),
    ({"num_candidates": 21}, "--num_candidates must be in 1..20"),
    ({"oracle": OracleConfig(flip_prob=2.0)}, "--oracle_flip_prob must be in"),
    ({"labeler": "shards"}, "--labeler=shards needs --labeler_dir"),
])
def test_bad_config_is_refused(kw, message, best_item_env_dir, tmp_path):
  with pytest.raises(ConfigError, match=message):
    pretrain(_cfg(best_item_env_dir, **kw), str(tmp_path / "w"), log=quiet)
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("flag, message", [
    ("--labeler=llm", "error: --labeler must be one of"),
    # pre-training always uses the paper's Q critic: the online critic's flags are refused
    ("--critic=v", "error: --critic set the online critic"),
    ("--gae_lambda=0.9", "error: --gae_lambda set the online critic"),
])
def test_cli_bad_flag_is_one_line_error(flag, message, tmp_path):
  res = subprocess.run([sys.executable, "-m", "jaxrec.pretrain", flag,
                        f"--env={tmp_path}", f"--workdir={tmp_path / 'w'}"],
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 2
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(message), res.stderr
  assert not (tmp_path / "w").exists()
