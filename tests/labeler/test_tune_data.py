"""Tuning and label-quality data (jaxrec.labeling.heldout), position debiasing on a fake scorer,
label_quality's metrics on hand-made labels, and the bad-input refusals of tune / --lora /
label_quality that need no model."""

import dataclasses
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import label_quality as lq
from jaxrec import shards
from jaxrec.errors import ConfigError, DataError
from jaxrec.labeling import heldout
from llm_labeler import debias, lora
from llm_labeler.backends.base import choose
from llm_labeler.job import LabelConfig, label_directory
from llm_labeler.prompts import TEMPLATE_VERSION
from train.conftest import seq_env_dir  # noqa: F401 - the session fixture

K = 4


@pytest.fixture(scope="module")
def sides(seq_env_dir):  # noqa: F811
  train, ds = heldout.split_of_env(seq_env_dir, "train")
  test, _ = heldout.split_of_env(seq_env_dir, "test")
  return train, test, ds


def _examples(side, ds, **kw):
  cfg = heldout.ExampleConfig(**({"num": 1000, "k": K, "history_len": 3} | kw))
  return heldout.make_examples(side, ds.num_items, side.item_popularity(), cfg)


def test_the_true_items_letter_is_uniform_and_none_rows_exclude_it(sides):
  train, _, ds = sides
  ex = _examples(train, ds, none_frac=0.2)
  n = len(ex.target)
  for row in ex.candidates:
    assert len(set(row.tolist())) == K  # distinct candidates
  shown = ex.target < K
  np.testing.assert_array_equal(ex.candidates[shown, ex.target[shown]], ex.true_item[shown])
  assert not (ex.candidates[~shown] == ex.true_item[~shown, None]).any()
  assert 0.15 < (~shown).mean() < 0.25
  counts = np.bincount(ex.target[shown], minlength=K)
  expect = shown.sum() / K  # uniform letters: every count within 4 standard deviations
  assert np.all(np.abs(counts - expect) < 4 * np.sqrt(expect)), counts
  assert n == 1000 and ex.history.shape == (n, 3)


def test_histories_are_the_items_logged_before_the_true_item(sides):
  train, _, ds = sides
  ex = _examples(train, ds, num=200)
  seqs = {int(u): train.sequence(int(u)).tolist() for u in np.unique(ex.user)}
  for h, item, u in zip(ex.history, ex.true_item, ex.user):
    seq, hist = seqs[int(u)], [int(x) for x in h if x >= 0]
    assert hist, "every example has a history (positions >= 1)"
    starts = [i for i in range(len(seq) - len(hist)) if seq[i:i + len(hist)] == hist
              and seq[i + len(hist)] == item]
    assert starts


def test_tuning_and_quality_data_come_from_disjoint_splits(sides, seq_env_dir):  # noqa: F811
  train, test, ds = sides
  assert not set(train.user_keys.tolist()) & set(test.user_keys.tolist())
  assert train.num_interactions + test.num_interactions == ds.num_interactions
  assert train.num_interactions == json.load(open(os.path.join(
      seq_env_dir, "env.json")))["reports"]["train"]["interactions"]


def test_examples_are_deterministic_given_the_seed(sides):
  train, _, ds = sides
  a, b, c = (_examples(train, ds, num=100, seed=s, negatives="popular") for s in (3, 3, 4))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.candidates, c.candidates)


@pytest.mark.parametrize("kw, match", [({"num": 10**6}, "--num"), ({"none_frac": 1.0}, "none_frac"),
                                       ({"none_frac": -0.1}, "none_frac"),
                                       ({"negatives": "hard"}, "negatives")])
def test_bad_example_flags_are_one_line_errors(sides, kw, match):
  train, _, ds = sides
  with pytest.raises(ConfigError, match=match):
    _examples(train, ds, **kw)


def test_an_env_without_item_text_is_refused(sides):
  _, _, ds = sides
  blank = ds.item_text.copy()
  blank[3] = ""
  with pytest.raises(DataError, match="without text"):
    heldout.check_item_text(dataclasses.replace(ds, item_text=blank), "ENV")


# --- position debiasing -----------------------------------------------------------------------
def _fake_backend(letter_bias, item_value):
  """Scores letter j of a row as letter_bias[j] + item_value[candidate at j]; None scores 0."""
  def label(req, shard=""):
    del shard
    scores = np.asarray(letter_bias)[None, :] + np.asarray(item_value)[req.candidates]
    choice, logprobs = choose(np.concatenate([scores, np.zeros((len(scores), 1))], axis=1))
    return shards.LabelShard(choice, np.ones(len(choice), bool), logprobs)
  return label


def _requests(n=50, k=K, items=12, seed=0):
  rng = np.random.default_rng(seed)
  cands = np.argsort(rng.random((n, items)), axis=1)[:, :k].astype(np.int32)
  z = np.zeros(n, np.int32)
  return shards.RequestShard(z, z, np.full((n, 2), -1, np.int32), cands, z - 1)


def test_one_permutation_is_the_backends_own_labels():
  req, label = _requests(), _fake_backend([3.0, 0, 0, 0], np.linspace(0, 2, 12))
  a, b = label(req), debias.average(label, req, 1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_rotations_cancel_a_pure_letter_bias():
  req, label = _requests(), _fake_backend([5.0, 1.0, 0.0, -1.0], np.zeros(12))
  assert (label(req).choice == 0).all()  # the biased model answers "a" every time
  lab = debias.average(label, req, K)
  p = np.exp(lab.logprobs)
  np.testing.assert_allclose(p[:, :K], p[:, :1] * np.ones(K), rtol=1e-5)  # no item preferred
  np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)


def test_averaging_maps_letters_back_to_items():
  req, value = _requests(n=20), np.linspace(-1, 1, 12)
  label = _fake_backend([2.0, 0.5, 0.0, 0.0], value)
  lab = debias.average(label, req, 2)
  assert debias.shifts(K, 2) == [0, 2]
  want = np.zeros((20, K + 1))
  for s in (0, 2):
    order = (np.arange(K) + s) % K
    p = np.exp(label(req._replace(candidates=req.candidates[:, order])).logprobs)
    want[:, order] += p[:, :K] / 2
    want[:, K] += p[:, K] / 2
  np.testing.assert_allclose(np.exp(lab.logprobs), want, rtol=1e-5)
  np.testing.assert_array_equal(lab.choice, want.argmax(1))
  # a position-free model is unchanged by averaging
  free = _fake_backend(np.zeros(K), value)
  np.testing.assert_array_equal(debias.average(free, req, K).choice, free(req).choice)


def test_permutations_beyond_k_are_refused():
  with pytest.raises(ConfigError, match="--permutations"):
    debias.shifts(K, K + 1)


# --- label_quality metrics ----------------------------------------------------------------------
def test_quality_metrics_on_hand_made_labels():
  # k = 2: labels a, b, None (= 2)
  probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.25, 0.25]])
  choice = np.array([0, 1, 2, 0])
  target = np.array([0, 0, 2, 1])
  m = lq.metrics(choice, probs, target, oracle_choice=np.array([0, 0, 0, 0]))
  assert m["hit_at_1"] == 0.5
  assert m["p_true"] == pytest.approx((1.0 + 0.0 + 1.0 + 0.25) / 4)
  assert m["none_rate"] == 0.25
  assert m["letter_share_max"] == 0.5 and m["letter_share"] == [0.5, 0.25, 0.25]
  assert m["agree_oracle"] == 0.5
  # bins: confidence 1.0 (3 rows, 2 right: |2/3 - 1| * 3/4) and 0.5 (1 row, wrong: 0.5 * 1/4)
  assert m["ece"] == pytest.approx(0.25 + 0.125)
  assert lq.metrics(choice, probs, target)["agree_oracle"] is None


def test_label_quality_references_on_the_test_split(seq_env_dir, tmp_path):  # noqa: F811
  out = str(tmp_path / "q.json")
  res = lq.run(lq.QualityConfig(env=seq_env_dir, out=out, num=300, k=K, seed=2), log=lambda s: None)
  saved = json.load(open(out))
  assert set(saved["rows"]) == {"random", "popularity", "oracle"}
  assert saved["k"] == K and saved["num"] == 300 and saved["split"] == "test"
  for row in saved["rows"].values():
    assert set(lq.METRICS) <= set(row)
  assert abs(saved["rows"]["random"]["hit_at_1"] - 1 / K) < 0.08
  assert saved["rows"]["random"]["p_true"] == pytest.approx(1 / K)
  assert saved["rows"]["oracle"]["agree_oracle"] == 1.0
  assert open(str(tmp_path / "q.md")).read() == res["table"]
  assert "| popularity |" in res["table"]


def test_label_quality_cli_refuses_a_num_beyond_the_split(seq_env_dir, tmp_path):  # noqa: F811
  out = tmp_path / "q.json"
  res = subprocess.run([sys.executable, "-m", "experiments.label_quality", f"--env={seq_env_dir}",
                        f"--out={out}", "--num=100000"], capture_output=True, text=True,
                       timeout=300)
  assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
  assert "--num=100000" in res.stderr and not out.exists()


# --- adapter refusals that need no model ----------------------------------------------------------
def _fake_adapter(directory, k=K, template=TEMPLATE_VERSION, **extra):
  os.makedirs(directory)
  for name in lora.ADAPTER_FILES:
    with open(os.path.join(directory, name), "w") as f:
      f.write("{}" if name.endswith(".json") else "not weights")
  lora.write_manifest(directory, {"base_model": {"weights_sha256": "0"}, "tokenizer_sha256": "0",
                                  "template_version": template, "k": k, "chat_template": False,
                                  **extra})
  return directory


@pytest.fixture
def request_dir(tmp_path):
  d = str(tmp_path / "req")
  meta = {"dataset": "x", "fingerprint": "0" * 16, "k": K, "history_len": 2, "num_items": 12}
  shards.write_requests(d, "requests-00000", _requests(n=4), meta)
  return d


@pytest.mark.parametrize("mutate, match", [
    (lambda d: os.remove(os.path.join(d, "adapter_model.safetensors")), "missing"),
    (lambda d: open(os.path.join(d, "adapter_model.safetensors"), "a").write("x"), "sha256"),
    (lambda d: open(os.path.join(d, "manifest.json"), "w").write("{"), "not valid JSON"),
])
def test_missing_or_corrupt_adapter_files_are_refused(tmp_path, request_dir, mutate, match):
  adapter = _fake_adapter(str(tmp_path / "ad"))
  mutate(adapter)
  out = str(tmp_path / "lab")
  with pytest.raises(DataError, match=match):
    label_directory(LabelConfig(requests=request_dir, out=out, backend="hf", model="m",
                                lora=adapter), log=lambda s: None)
  assert not os.path.exists(out)


@pytest.mark.parametrize("kw, match", [({"k": K + 1}, "k=5"), ({"template": "table1-v0"}, "template")])
def test_an_adapter_for_another_k_or_template_is_refused_by_the_cli(tmp_path, request_dir, kw,
                                                                    match):
  adapter = _fake_adapter(str(tmp_path / "ad"), **kw)
  out = tmp_path / "lab"
  res = subprocess.run([sys.executable, "-m", "llm_labeler.label", f"--requests={request_dir}",
                        f"--out={out}", "--backend=hf", "--model=nonexistent", f"--lora={adapter}"],
                       capture_output=True, text=True, timeout=300)
  assert res.returncode == 2 and res.stderr.startswith("error: "), res.stderr
  assert res.stderr.strip().count("\n") == 0 and match in res.stderr
  assert not out.exists()


def test_tune_refuses_bad_flags_before_loading_a_model(seq_env_dir, tmp_path):  # noqa: F811
  for flag, match in (("--none_frac=1.0", "--none_frac"), ("--num=1000000", "--num"),
                      ("--layers=29-15", "--layers"), ("--device=gpu", "--device")):
    out = tmp_path / "ad"
    res = subprocess.run([sys.executable, "-m", "llm_labeler.tune", f"--env={seq_env_dir}",
                          "--model=nonexistent", f"--out={out}", flag], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and match in res.stderr, res.stderr
    assert res.stderr.strip().count("\n") == 0 and not out.exists()
    assert not [f for f in os.listdir(tmp_path) if "tune-ckpt" in f or f.startswith(".tmp")]


def test_the_device_is_not_part_of_the_resume_key():
  from llm_labeler.tune import TuneConfig
  cpu = TuneConfig(env="e", model="m", out="o")
  assert cpu.result_flags() == TuneConfig(env="e", model="m", out="o",
                                          device="cuda:1").result_flags()
  for ok in ("cpu", "cuda", "cuda:0"):
    TuneConfig(env="e", model="m", out="o", device=ok).validate()


def test_tune_resume_key_uses_absolute_paths(tmp_path, monkeypatch):
  from llm_labeler.tune import TuneConfig
  monkeypatch.chdir(tmp_path)
  rel = TuneConfig(env="env", model="model.gguf", out="a")
  absolute = TuneConfig(env=str(tmp_path / "env"), model=str(tmp_path / "model.gguf"), out="b")
  assert rel.result_flags() == absolute.result_flags()  # --out is not part of the key
  assert rel.result_flags() != TuneConfig(env="other", model="model.gguf").result_flags()


# --- prompts shaped as the adapter's tuning prompts ----------------------------------------------
def test_labeling_shows_the_adapters_history_window(tmp_path):
  from llm_labeler.job import Windowed, prompt_history
  adapter = _fake_adapter(str(tmp_path / "a"), history=3)
  cfg = lambda **kw: LabelConfig(requests="r", out="o", backend="hf", model="m", **kw)
  assert prompt_history(cfg(lora=adapter)) == 3  # the tuning window
  assert prompt_history(cfg(lora=adapter, history=5)) == 5  # the flag wins
  assert prompt_history(cfg()) == 0  # no adapter: every item the request holds
  seen = []

  class Inner:
    name, model, meta, prompt_tokens = "fake", "m", {}, 0

    def label(self, req, shard=""):
      seen.append(req.history)
      return "labels"

  z = np.zeros(2, np.int32)
  req = shards.RequestShard(z, z, np.asarray([[-1, 5, 6, 7, 8], [1, 2, 3, 4, 9]], np.int32),
                            np.zeros((2, K), np.int32), z - 1)
  assert Windowed(Inner(), 3).label(req) == "labels"
  np.testing.assert_array_equal(seen[0], [[6, 7, 8], [3, 4, 9]])
  for bad in (dict(history=-1), dict(history=3, backend="oracle")):
    with pytest.raises(ConfigError, match="--history"):
      LabelConfig(requests="r", out="o", env="e", **bad).validate()


def test_the_labels_loss_is_the_cross_entropy_of_the_label_tokens_alone():
  torch = pytest.importorskip("torch")
  from llm_labeler.tune import label_loss
  rng = np.random.default_rng(0)
  label_ids = np.array([7, 2, 11])  # k = 2: "a", "b", None
  target = np.array([0, 2, 1, 0])
  raw = rng.normal(size=(4, 16))
  logits = torch.tensor(raw, dtype=torch.float64, requires_grad=True)
  loss = label_loss(logits, target, label_ids, "labels")
  z = raw[:, label_ids]  # by hand: log-softmax over the three label logits
  want = -np.mean(z[np.arange(4), target] - np.log(np.exp(z).sum(1)))
  assert float(loss) == pytest.approx(want, rel=1e-6)
  vocab = label_loss(logits, target, label_ids, "vocab")
  assert float(vocab) == pytest.approx(-np.mean(raw[np.arange(4), label_ids[target]]
                                                - np.log(np.exp(raw).sum(1))), rel=1e-6)
  assert float(vocab) > float(loss)  # the vocabulary's other tokens take probability too
  loss.backward()  # no gradient reaches a token that is not a label
  others = np.setdiff1d(np.arange(16), label_ids)
  assert np.all(logits.grad.numpy()[:, others] == 0) and np.abs(logits.grad.numpy()).max() > 0
  bumped = raw.copy()
  bumped[:, others] += 5.0  # mass on non-label tokens: vocab loss rises, labels loss does not
  b = torch.tensor(bumped)
  assert float(label_loss(b, target, label_ids, "labels")) == pytest.approx(float(loss))
  assert float(label_loss(b, target, label_ids, "vocab")) > float(vocab) + 1.0
  with pytest.raises(ConfigError, match="--loss"):
    label_loss(b, target, label_ids, "other")


def test_the_shared_prefix_is_the_common_head_and_leaves_every_prompt_a_token():
  from llm_labeler.backends.hf_backend import common_prefix
  assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 3, 4, 7]]) == 3
  assert common_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # identical: the last token is each one's
  assert common_prefix([[1, 2], [9, 2]]) == 0
  assert common_prefix([[4, 5, 6]]) == 2


def test_tune_refuses_an_unknown_loss(tmp_path):
  out = tmp_path / "ad"
  res = subprocess.run([sys.executable, "-m", "llm_labeler.tune", "--env=x", "--model=y",
                        f"--out={out}", "--loss=focal"], capture_output=True, text=True,
                       timeout=300)
  assert res.returncode == 2 and "--loss" in res.stderr and not out.exists(), res.stderr
  assert res.stderr.strip().count("\n") == 0


def test_validation_rows_are_distinct_interactions_set_aside_from_the_tuning_rows(sides):
  from llm_labeler.tune import split_validation
  train, _, ds = sides
  ex = _examples(train, ds, num=300, none_frac=0.1)
  assert split_validation(ex, 0, 0) == (ex, None)
  tr, val = split_validation(ex, 60, 0)
  assert len(tr.target) == 240 and len(val.target) == 60
  row = lambda e, i: (int(e.user[i]), int(e.true_item[i]), tuple(e.history[i].tolist()))
  rows_tr = {row(tr, i) for i in range(240)}
  rows_val = {row(val, i) for i in range(60)}
  assert len(rows_tr) == 240 and len(rows_val) == 60 and not rows_tr & rows_val
  assert rows_tr | rows_val == {row(ex, i) for i in range(300)}
  again, _ = split_validation(ex, 60, 0)
  for x, y in zip(tr, again):  # deterministic given the seed
    np.testing.assert_array_equal(x, y)


def test_the_label_priors_loss_and_a_model_that_answers_every_prompt_alike():
  """The 2026-12-01 L1 adapter's failure: the same label distribution for every prompt (None
  on top), so hit@1 0 and one label 100% of the choices; validation must show it."""
  from llm_labeler.tune import label_stats, target_entropy
  assert target_entropy(np.arange(10), 9) == pytest.approx(np.log(10))
  assert target_entropy(np.array([3, 3, 3]), 4) == 0.0
  target = np.arange(40) % 4  # k = 4: letters only
  flat = np.tile(np.log([0.2, 0.2, 0.2, 0.1, 0.3]), (40, 1))
  s = label_stats(flat, target)
  assert s == {"hit_at_1": 0.0, "label_share_max": 1.0, "prompt_spread": pytest.approx(0.0)}
  right = np.full((40, 5), -3.0)
  right[np.arange(40), target] = 3.0
  s = label_stats(right, target)
  assert s["hit_at_1"] == 1.0 and s["label_share_max"] == 0.25 and s["prompt_spread"] > 0.5


def test_lora_layers_flag():
  from llm_labeler.tune import TuneConfig, layer_range
  assert layer_range("") is None and layer_range("15-17") == [15, 16, 17]
  for bad in ("15", "a-b", "17-15", "-3"):
    with pytest.raises(ConfigError, match="--layers"):
      layer_range(bad)
  with pytest.raises(ConfigError, match="--val_num"):
    TuneConfig(env="e", model="m", out="o", val_num=-1).validate()


def test_learning_rate_warm_up_and_decay():
  from llm_labeler.tune import TuneConfig, lr_factor
  assert [lr_factor(s, 10, 0, "constant") for s in range(10)] == [1.0] * 10
  assert [lr_factor(s, 10, 4, "constant") for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
  lin = [lr_factor(s, 10, 2, "linear") for s in range(10)]
  assert lin[:3] == [0.5, 1.0, 1.0] and lin[-1] == pytest.approx(1 / 8)
  assert all(a > b for a, b in itertools.pairwise(lin[2:]))  # decays after the warm-up, never to 0
  cos = [lr_factor(s, 102, 2, "cosine") for s in range(102)]
  assert cos[2] == 1.0 and cos[52] == pytest.approx(0.5) and 0 < cos[-1] < 1e-3
  assert all(a >= b for a, b in itertools.pairwise(cos[2:]))
  assert lr_factor(5, 3, 10, "linear") == 0.6  # a warm-up longer than the run: still warming
  with pytest.raises(ConfigError, match="--warmup"):
    TuneConfig(env="e", model="m", out="o", warmup=-1).validate()


def test_each_order_shows_the_same_candidates_rotated_with_the_target_following_its_item(sides):
  from llm_labeler.tune import TuneConfig, in_orders
  train, _, ds = sides
  ex = _examples(train, ds, num=50, none_frac=0.2)
  assert in_orders(ex, 1) is ex
  rot = in_orders(ex, K)  # every letter once per example
  assert len(rot.target) == 50 * K
  for n in range(50):
    rows = slice(n * K, (n + 1) * K)
    np.testing.assert_array_equal(rot.candidates[n * K], ex.candidates[n])  # order 0: as drawn
    for f in ("history", "true_item", "user"):
      assert (getattr(rot, f)[rows] == getattr(ex, f)[n]).all()
    for c in rot.candidates[rows]:
      assert sorted(c.tolist()) == sorted(ex.candidates[n].tolist())
    if ex.target[n] == K:  # None stays None
      assert (rot.target[rows] == K).all()
    else:
      assert sorted(rot.target[rows].tolist()) == list(range(K))  # one order per letter
      np.testing.assert_array_equal(rot.candidates[rows][np.arange(K), rot.target[rows]],
                                    ex.true_item[n])
  two = in_orders(ex, 2)
  np.testing.assert_array_equal(two.candidates[1::2], np.roll(ex.candidates, -2, axis=1))
  for bad in (0, K + 1):
    with pytest.raises(ConfigError, match="--orders"):
      TuneConfig(env="e", model="m", out="o", k=K, orders=bad).validate()
