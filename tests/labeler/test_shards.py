"""Preference shards: round trips, every corruption refused with a one-line error naming the
shard, names that could escape the directory, crashes between the steps of a commit, and
concurrent writers that must not lose manifest entries."""

import hashlib
import io
import json
import multiprocessing
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxrec import shards
from jaxrec.errors import DataError
from labeler import shard_writer
from labeler.conftest import make_requests, temp_files

META = {"dataset": "toy", "fingerprint": "f" * 16, "k": 4, "history_len": 4, "num_items": 30}
LMETA = META | {"backend": "test", "model": "m", "template_version": "v"}


def _labels(n, k=4, logprobs=True, seed=0):
  rng = np.random.default_rng(seed)
  lp = None
  if logprobs:
    x = rng.normal(size=(n, k + 1))
    lp = (x - np.log(np.exp(x).sum(1, keepdims=True))).astype(np.float32)
  valid = rng.random(n) > 0.1
  choice = np.where(valid, rng.integers(0, k + 1, n), k).astype(np.int32)  # unparsed -> k
  return shards.LabelShard(choice, valid, lp)


def _one_line_error(fn, match):
  with pytest.raises(DataError, match=match) as e:
    fn()
  assert "\n" not in str(e.value)
  return str(e.value)


def test_round_trip_and_manifest(tmp_path):
  d = str(tmp_path / "req")
  reqs = [make_requests(n, 4, 30, seed=n) for n in (5, 0, 7)]
  for i, r in enumerate(reqs):
    shards.write_requests(d, f"s{i}", r, META)
  assert shards.list_shards(d, verify=True) == ["s0", "s1", "s2"]
  for i, r in enumerate(reqs):
    got = shards.read_requests(d, f"s{i}")
    for a, b in zip(got, r):
      np.testing.assert_array_equal(a, b)
      assert a.dtype == b.dtype
  manifest = json.load(open(os.path.join(d, shards.MANIFEST)))
  assert manifest["kind"] == "requests" and manifest["meta"] == META
  assert {n: e["rows"] for n, e in manifest["shards"].items()} == {"s0": 5, "s1": 0, "s2": 7}
  assert manifest == shards.read_manifest(d)
  lab = str(tmp_path / "lab")
  for logprobs in (True, False):
    name = f"l{int(logprobs)}"
    want = _labels(6, logprobs=logprobs)
    shards.write_labels(lab, name, want, LMETA)
    got = shards.read_labels(lab, name)
    np.testing.assert_array_equal(got.choice, want.choice)
    np.testing.assert_array_equal(got.valid, want.valid)
    assert (got.logprobs is None) == (not logprobs)
    if logprobs:
      np.testing.assert_array_equal(got.logprobs, want.logprobs)
  assert shards.directory_meta(lab)["template_version"] == "v"
  assert not temp_files(d) and not temp_files(lab)


def test_equal_shards_have_equal_bytes_at_any_time(tmp_path, monkeypatch):
  """A shard's sha256 is a function of its arrays, not of the clock (np.savez stamps members
  1980-01-01): a rerun or a rewritten shard matches the original's digest."""
  import time
  lab = _labels(9)
  digests = []
  localtime = time.localtime
  for i, now in enumerate((1.0e9, 1.7e9)):  # 2001 and 2023: any clock-dependent byte differs
    monkeypatch.setattr(time, "time", lambda now=now: now)
    monkeypatch.setattr(time, "localtime",
                        lambda secs=None, now=now: localtime(now if secs is None else secs))
    d = str(tmp_path / f"lab{i}")
    shards.write_labels(d, "s0", lab, LMETA)
    digests.append(shards.read_manifest(d)["shards"]["s0"]["sha256"])
    with open(os.path.join(d, "s0.npz"), "rb") as f:
      assert hashlib.sha256(f.read()).hexdigest() == digests[-1]
  assert digests[0] == digests[1]


def test_committed_shards_are_never_rewritten(tmp_path):
  d = str(tmp_path)
  shards.write_labels(d, "a", _labels(3), LMETA)
  before = open(os.path.join(d, "a.npz"), "rb").read()
  with pytest.raises(shards.ShardExistsError, match="never rewritten"):
    shards.write_labels(d, "a", _labels(3, seed=1), LMETA)
  assert open(os.path.join(d, "a.npz"), "rb").read() == before
  assert not temp_files(d)


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "/abs", ".hidden", "", "a..b", "x.npz",
                                  "manifest", "DONE", "a b", "é"])
def test_unsafe_names_are_refused(tmp_path, name):
  _one_line_error(lambda: shards.write_requests(str(tmp_path / "d"), name,
                                                make_requests(2, 4, 30), META), "refused")
  _one_line_error(lambda: shards.read_labels(str(tmp_path / "d"), name), "refused")
  assert not (tmp_path / "x").exists() and not os.path.exists("/abs.npz")


def _corrupt_and_rehash(d, name, arrays):
  """Replaces a shard's npz by `arrays` and fixes its record's sha256, so only the content
  checks (fields, dtypes, shapes) can catch it."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  data = buf.getvalue()
  open(os.path.join(d, name + ".npz"), "wb").write(data)
  rec_path = os.path.join(d, name + ".json")
  rec = json.load(open(rec_path))
  rec["sha256"] = hashlib.sha256(data).hexdigest()
  json.dump(rec, open(rec_path, "w"))


def test_every_corruption_is_a_one_line_error_naming_the_shard(tmp_path):
  d = str(tmp_path)
  good = make_requests(6, 4, 30)
  for i in range(7):
    shards.write_requests(d, f"s{i}", good, META)
  path = os.path.join(d, "s0.npz")
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])  # truncated
  msg = _one_line_error(lambda: shards.read_requests(d, "s0"), "sha256")
  assert "'s0'" in msg
  flipped = bytearray(open(os.path.join(d, "s1.npz"), "rb").read())
  flipped[-100] ^= 1  # one changed byte
  open(os.path.join(d, "s1.npz"), "wb").write(bytes(flipped))
  _one_line_error(lambda: shards.read_requests(d, "s1"), "s1.*sha256")
  with pytest.raises(DataError, match="s0"):
    shards.list_shards(d, verify=True)
  arrays = good._asdict()
  _corrupt_and_rehash(d, "s2", arrays | {"history": good.history.astype(np.float32)})
  _one_line_error(lambda: shards.read_requests(d, "s2"), "'s2'.*history has dtype float32")
  _corrupt_and_rehash(d, "s3", arrays | {"candidates": good.candidates[:, :3]})
  _one_line_error(lambda: shards.read_requests(d, "s3"), "'s3'.*candidates.*k=4")
  _corrupt_and_rehash(d, "s4", {f: a for f, a in arrays.items() if f != "user"})
  _one_line_error(lambda: shards.read_requests(d, "s4"), "'s4'.*missing field.*user")
  _corrupt_and_rehash(d, "s5", arrays | {f: a[:5] for f, a in arrays.items()})
  _one_line_error(lambda: shards.read_requests(d, "s5"), "'s5'.*5 rows, manifest says 6")
  _corrupt_and_rehash(d, "s6", arrays | {"candidates": good.candidates + 100})
  _one_line_error(lambda: shards.read_requests(d, "s6"), "'s6'.*out of range for 30 items")
  open(os.path.join(d, "s6.json"), "w").write("{not json")
  _one_line_error(lambda: shards.read_requests(d, "s6"), "s6.json: unreadable")
  _one_line_error(lambda: shards.read_requests(d, "nope"), "no committed requests shard")


def test_bad_label_content_is_refused_on_write_and_read(tmp_path):
  d = str(tmp_path)
  bad = _labels(4)._replace(choice=np.array([0, 1, 5, 2], np.int32))
  _one_line_error(lambda: shards.write_labels(d, "x", bad, LMETA), "row 2 has choice 5")
  _one_line_error(lambda: shards.write_labels(d, "x", _labels(4)._replace(
      logprobs=np.zeros((4, 3), np.float32)), LMETA), "logprobs has shape")
  _one_line_error(lambda: shards.write_labels(d, "x", _labels(4)._replace(
      valid=np.ones(4, np.int32)), LMETA), "valid has dtype int32")
  _one_line_error(lambda: shards.write_labels(d, "x", _labels(4)._replace(
      valid=np.array([True, False, True, True])), LMETA), "row 1 is not valid but has choice")
  nan = np.full((4, 5), -1.6, np.float32)
  nan[3, 0] = np.nan
  _one_line_error(lambda: shards.write_labels(d, "x", _labels(4)._replace(logprobs=nan), LMETA),
                  "row 3 has logprobs")
  ok = np.full((4, 5), -np.inf, np.float32)
  ok[:, 0] = 0.0  # p = 1 for one label, 0 for the others: valid
  shards.write_labels(d, "inf", _labels(4)._replace(logprobs=ok), LMETA)
  shards.write_labels(d, "x", _labels(4), LMETA)
  _corrupt_and_rehash(d, "x", {"choice": np.array([0, 1, 9, 2], np.int32),
                               "valid": np.ones(4, bool)})
  _one_line_error(lambda: shards.read_labels(d, "x"), "row 2 has choice 9, expected 0..4")
  assert shards.list_shards(d) == ["inf", "x"]


def test_meta_and_kind_must_agree_within_a_directory(tmp_path):
  d = str(tmp_path)
  shards.write_labels(d, "a", _labels(3), LMETA)
  _one_line_error(lambda: shards.write_labels(d, "b", _labels(3), LMETA | {"model": "other"}),
                  "model='m'")
  _one_line_error(lambda: shards.write_requests(d, "c", make_requests(2, 4, 30), META),
                  "holds labels shards")
  assert shards.list_shards(d) == ["a"]


def test_crash_between_npz_and_record_leaves_no_shard(tmp_path):
  """A writer killed after renaming NAME.npz but before NAME.json: the shard is absent
  (unlisted, unreadable) and the next writer commits it normally."""
  d = str(tmp_path)
  shards.write_requests(d, "a", make_requests(3, 4, 30), META)
  open(os.path.join(d, "b.npz"), "wb").write(b"half a shard")
  assert shards.list_shards(d) == ["a"]
  _one_line_error(lambda: shards.read_requests(d, "b"), "no committed requests shard 'b'")
  want = make_requests(4, 4, 30, seed=3)
  shards.write_requests(d, "b", want, META)
  np.testing.assert_array_equal(shards.read_requests(d, "b").candidates, want.candidates)
  os.remove(os.path.join(d, shards.MANIFEST))  # derived: rebuilt from the records
  assert sorted(shards.read_manifest(d)["shards"]) == ["a", "b"]


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
  d = str(tmp_path)
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True).stdout.strip()
  host = socket.gethostname()
  stale = f".tmp-{host}-{dead}-abc.npz"
  live = f".tmp-{host}-{os.getpid()}-abc.npz"
  other_host = f".tmp-otherhost-{dead}-abc.npz"
  for f in (stale, live, other_host):
    open(os.path.join(d, f), "w").close()
  assert shards.remove_stale_temps(d) == [stale]
  assert sorted(temp_files(d)) == sorted([live, other_host])


def test_catalog_round_trip_and_mismatch(tmp_path, catalog):
  d = str(tmp_path)
  shards.write_catalog(d, catalog)
  got = shards.read_catalog(d)
  assert got._replace(item_text=None) == catalog._replace(item_text=None)
  np.testing.assert_array_equal(got.item_text, catalog.item_text)
  shards.write_catalog(d, catalog)  # same dataset: a no-op
  _one_line_error(lambda: shards.write_catalog(d, catalog._replace(fingerprint="x")),
                  "catalog of")
  _one_line_error(lambda: shards.read_catalog(str(tmp_path / "none")), "no item catalog")


def test_concurrent_writers_lose_no_manifest_entry(tmp_path):
  d = str(tmp_path)
  workers, count = 4, 12
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    pool.map(shard_writer.write_many, [(d, w, count) for w in range(workers)])
  want = sorted(f"w{w}-{i:03d}" for w in range(workers) for i in range(count))
  on_disk = json.load(open(os.path.join(d, shards.MANIFEST)))
  assert sorted(on_disk["shards"]) == want  # the file itself, not only the derived view
  assert shards.list_shards(d, verify=True) == want
  assert not temp_files(d)
