"""Request sampling: histories are real windows (dataset) or env observations (env), candidates
are distinct items of the catalog, runs are deterministic, and the CLI writes catalog + DONE."""

import subprocess
import sys

import numpy as np
import pytest

from jaxrec import shards
from jaxrec.envs import build
from jaxrec.labeling import sampling as sr
from train.conftest import NUM_ITEMS


def _check_candidates(req, k, num_items):
  assert req.candidates.shape[1] == k
  assert req.candidates.min() >= 0 and req.candidates.max() < num_items
  srt = np.sort(req.candidates, axis=1)
  assert np.all(srt[:, 1:] != srt[:, :-1])  # distinct within a row


@pytest.mark.parametrize("policy", ["random", "popular"])
def test_dataset_requests_are_windows_of_real_sequences(small_dataset, policy):
  cfg = sr.SampleConfig(num=300, k=6, policy=policy, history_len=5, seed=1)
  req = sr.from_dataset(small_dataset, cfg)
  _check_candidates(req, 6, small_dataset.num_items)
  for row in range(0, 300, 7):
    u, t = req.user[row], req.step[row]
    seq = small_dataset.sequence(u)
    assert 1 <= t < len(seq)
    want = seq[max(0, t - 5):t]
    h = req.history[row]
    np.testing.assert_array_equal(h[h >= 0], want)
    assert np.all(h[:5 - len(want)] == -1)
  again = sr.from_dataset(small_dataset, cfg)
  for a, b in zip(req, again):
    np.testing.assert_array_equal(a, b)
  if policy == "popular":  # the most popular item is proposed more often than the median one
    counts = np.bincount(req.candidates.ravel(), minlength=small_dataset.num_items)
    pop = small_dataset.item_popularity()
    assert counts[np.argmax(pop)] > np.median(counts)


def test_env_requests_are_env_observations(matrix_env_dir, tmp_path):
  env, params, _ = build.load_env(matrix_env_dir, "train")
  cfg = sr.SampleConfig(num=50, k=4, num_sessions=8, seed=0)
  req = sr.from_env(env, params, np.zeros(NUM_ITEMS, np.float32), cfg)
  assert req.history.shape == (50, env.history_len) and len(req.session) == 50
  _check_candidates(req, 4, NUM_ITEMS)
  assert req.user.min() >= 0 and req.user.max() < params.table.shape[0]
  first = req.step == 0  # a matrix episode starts with an empty history
  assert np.all(req.history[first] == -1)
  # Within a session, each step's history is the previous one plus the proposal's first item.
  for s in np.unique(req.session):
    rows = np.nonzero(req.session == s)[0]
    for a, b in zip(rows[:-1], rows[1:]):
      assert req.step[b] == req.step[a] + 1
      np.testing.assert_array_equal(req.history[b][:-1], req.history[a][1:])
      assert req.history[b][-1] == req.candidates[a][0]


@pytest.mark.parametrize("module", ["jaxrec.sample_requests", "llm_labeler.sample_requests"])
def test_cli_writes_catalog_shards_and_done(small_dataset, tmp_path, module):
  """The command, and its earlier name kept for existing command lines."""
  out = str(tmp_path / "req")
  args = [sys.executable, "-m", module, "--dataset=synthetic",
          "--synthetic_users=60", "--synthetic_items=50", "--synthetic_genres=4",
          "--synthetic_mean_length=8", "--num=25", "--k=3", "--shard_size=10", f"--out={out}"]
  res = subprocess.run(args, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr
  assert shards.list_shards(out, verify=True) == [f"requests-{i:05d}" for i in range(3)]
  assert shards.is_done(out)
  cat = shards.read_catalog(out)
  meta = shards.directory_meta(out)
  assert cat.fingerprint == meta["fingerprint"] == build.fingerprint(small_dataset)
  assert meta["k"] == 3 and meta["num_items"] == small_dataset.num_items
