"""LEA's augmentation (jaxrec/offline/lea.py, augment.py) and `experiments.lea`: the augmented
losses on hand-computed inputs, a round trip through request / label shards with the oracle,
refused directories (another dataset, another template), and a tiny experiments.lea run that
writes every file and resumes without retraining."""

import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import shards
from jaxrec.data import SyntheticConfig, load_dataset
from jaxrec.envs import build
from jaxrec.errors import DataError
from jaxrec.offline import augment, lea
from jaxrec.offline.learners import LEARNERS, HParams
from jaxrec.offline.networks import SupervisedQNet
from jaxrec.offline.run import OfflineConfig, train_and_evaluate
from jaxrec.offline.transitions import build_transitions

SYN = SyntheticConfig(num_users=120, num_items=40, num_genres=4, mean_length=8)
TINY = {"dim": 16, "batch_size": 64, "synthetic": SYN, "dataset": "synthetic"}


# --- the losses -------------------------------------------------------------------------------
class LeaLossTest(chex.TestCase):

  @chex.all_variants(with_jit=True, without_jit=True, with_pmap=False)
  def test_lea_loss_on_hand_computed_inputs(self):
    _lea_loss_case(self.variant(lea.lea_loss), self.variant(lea.lea_ce_loss))


def _lea_loss_case(fn, ce_only):
  logits = jnp.array([1.0, 2.0, 0.0])
  q = jnp.array([0.5, 1.0, -1.0])
  q_t_value = jnp.array([2.0, 0.0, 1.0])
  q_t_selector = jnp.array([0.0, 3.0, 1.0])  # argmax 1 -> the target copy's value 0.0
  ce, td = fn(logits, q, jnp.int32(0), jnp.float32(1.0), jnp.float32(0.5), q_t_value,
              q_t_selector, jnp.bool_(True))
  np.testing.assert_allclose(ce, np.log(np.e + np.e ** 2 + 1.0) - 1.0, rtol=1e-6)
  # target 1 + 0.5 * 0.0 = 1, Q(s, 0) = 0.5: td 0.5, loss 0.5 * 0.25
  np.testing.assert_allclose(td, 0.125, rtol=1e-6)
  ce, td = fn(logits, q, jnp.int32(0), jnp.float32(1.0), jnp.float32(0.5), q_t_value,
              q_t_selector, jnp.bool_(False))
  assert float(ce) == 0.0 and float(td) == 0.0
  np.testing.assert_allclose(ce_only(logits, jnp.int32(1), jnp.bool_(True)),
                             np.log(np.e + np.e ** 2 + 1.0) - 2.0, rtol=1e-6)


def test_extend_appends_the_item_as_the_newest():
  h = jnp.array([[-1, 3, 4], [1, 2, 3]])
  np.testing.assert_array_equal(lea.extend(h, jnp.array([7, 8])), [[3, 4, 7], [2, 3, 8]])


def _tiny_batch(num_items=7, length=3):
  rng = np.random.default_rng(0)
  seqs = [list(rng.integers(0, num_items, 5)) for _ in range(4)]
  from offline.test_offline import make_dataset
  t = build_transitions(make_dataset(seqs, num_items), length)
  aug = jnp.array([2, -1, 5, 0, -1, 6, 1, 3, -1, 4, 0, 2, -1, 1, 5, 6, 3, 2, 1, 0][:t.size])
  return t._replace(aug_action=aug)


@pytest.mark.parametrize("agent", ["normal", "sqn"])
def test_augmented_batch_loss_adds_the_weighted_terms(agent):
  learner = LEARNERS[agent]
  net = SupervisedQNet(OfflineConfig(history_len=3, dim=8).net(7), q_head=learner.q_head)
  batch = _tiny_batch()
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  example = net.cfg.example_input((1,))
  main, target = net.init(k1, example), net.init(k2, example)
  hp = HParams(w_ah=0.3, w_aq=0.2, augment_start=5)
  base_fn = learner.loss_module().batch_loss
  fn = lea.with_augmentation(base_fn, learner.q_head)
  key = jax.random.PRNGKey(2)
  base, _ = base_fn(net, main, target, batch, hp, key, 5)
  total, m = fn(net, main, target, batch, hp, key, 5)
  # by hand: rows with a label add w_ah * ce + w_aq * 0.5 td^2 of the labeled item
  logits, q = net.apply(main, batch.history)
  a = np.maximum(np.asarray(batch.aug_action), 0)
  on = np.asarray(batch.aug_action) >= 0
  lsm = np.asarray(jax.nn.log_softmax(logits))
  ce = -lsm[np.arange(len(a)), a] * on
  td2 = np.zeros_like(ce)
  if learner.q_head:
    nxt = np.concatenate([np.asarray(batch.history)[:, 1:], a[:, None]], 1)
    sel = np.asarray(net.apply(main, jnp.asarray(nxt))[1])
    val = np.asarray(net.apply(target, jnp.asarray(nxt))[1])
    boot = val[np.arange(len(a)), sel.argmax(1)]
    disc = hp.gamma * (1.0 - np.asarray(batch.done, np.float32))
    td = 1.0 + disc * boot - np.asarray(q)[np.arange(len(a)), a]
    td2 = 0.5 * td ** 2 * on
  want = float(base) + np.mean(hp.w_ah * ce + hp.w_aq * td2)
  np.testing.assert_allclose(float(total), want, rtol=1e-5)
  np.testing.assert_allclose(float(m["aug_share"]), on.mean(), rtol=1e-6)
  # before augment_start, and with no labels, the learner's own loss exactly
  before, _ = fn(net, main, target, batch, hp, key, 4)
  none, _ = fn(net, main, target, batch._replace(aug_action=jnp.full_like(batch.aug_action, -1)),
               hp, key, 5)
  assert float(before) == float(base) and float(none) == float(base)


# --- through the shards ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """(dataset, env dir built from it, a 1-epoch sa2c run on it)."""
  root = tmp_path_factory.mktemp("lea")
  ds = load_dataset("synthetic", synthetic_cfg=SYN)
  env = str(root / "env")
  build.build_envs(ds, build.BuildConfig(seq_steps=50, max_len=8), env, log=lambda s: None)
  run = str(root / "run")
  train_and_evaluate(OfflineConfig(agent="sa2c", epochs=1, warmup=5, **TINY), run,
                     log=lambda s: None, dataset=ds)
  return ds, env, run


def _label(env, aug_dir):
  from llm_labeler.job import LabelConfig, label_directory
  return label_directory(LabelConfig(requests=os.path.join(aug_dir, "requests"),
                                     out=os.path.join(aug_dir, "labels"), backend="oracle",
                                     env=env), log=lambda s: None)


@pytest.fixture(scope="module")
def labeled(world, tmp_path_factory):
  ds, env, run = world
  out = str(tmp_path_factory.mktemp("aug") / "aug")
  augment.write_requests(run, out, augment.AugmentConfig(num=100, shard_size=40),
                         log=lambda s: None, dataset=ds)
  _label(env, out)
  return out


@pytest.mark.slow
def test_round_trip_through_shards_with_the_oracle(world, labeled, tmp_path):
  ds, _, run = world
  req_dir, lab_dir = (os.path.join(labeled, d) for d in ("requests", "labels"))
  meta = shards.directory_meta(req_dir)
  assert meta["template_version"] == shards.LEA_TEMPLATE and meta["k"] == 5
  assert meta["fingerprint"] == build.fingerprint(ds) and meta["epoch"] == 1
  lab_meta = shards.directory_meta(lab_dir)
  assert lab_meta["template_version"] == shards.LEA_TEMPLATE
  names = shards.list_shards(req_dir)
  assert names == shards.list_shards(lab_dir) and len(names) == 3  # 40 + 40 + 20 rows
  cfg = OfflineConfig(agent="sa2c", epochs=1, warmup=5, **TINY)
  from jaxrec.offline.run import load_splits
  _, tr, _ = load_splits(cfg, ds)
  train = build_transitions(tr, cfg.history_len, to_device=False)
  got = augment.load_augmentation(labeled, ds, train, cfg.history_len)
  assert (got.action >= 0).sum() == 100 and got.stats["augment_dropped"] == 0
  for name in names:
    req, lab = shards.read_requests(req_dir, name), shards.read_labels(lab_dir, name)
    assert (lab.choice < 5).all()  # no None option
    np.testing.assert_array_equal(req.history, train.history[req.session])
    np.testing.assert_array_equal(
        got.action[req.session], req.candidates[np.arange(len(lab.choice)), lab.choice])
  # the run continued with the augmentation
  cont = str(tmp_path / "cont")
  shutil.copytree(run, cont)
  rows = train_and_evaluate(OfflineConfig(agent="sa2c", epochs=2, warmup=5, augment=labeled,
                                          augment_start=10, **TINY), cont,
                            log=lambda s: None, dataset=ds)
  assert rows[-1]["epoch"] == 2 and rows[-1]["aug_share"] > 0
  with open(os.path.join(cont, "results.json")) as f:
    res = json.load(f)
  assert res["augment_rows"] == 100


@pytest.mark.slow
def test_another_dataset_is_refused_by_the_cli(labeled, tmp_path):
  work = tmp_path / "w"
  res = subprocess.run([sys.executable, "-m", "jaxrec.offline", "--dataset=synthetic",
                        "--synthetic_users=100", "--synthetic_items=40", "--epochs=1",
                        f"--augment={labeled}", f"--workdir={work}"],
                       check=False, capture_output=True, text=True, timeout=300)
  assert res.returncode == 2, res.stderr
  line = res.stderr.strip().splitlines()[-1]
  assert line.startswith("error: ") and "manifest.json" in line and "fingerprint" in line
  assert not work.exists()


@pytest.mark.slow
def test_another_template_is_refused_before_anything_is_written(world, labeled, tmp_path):
  ds, _, _ = world
  other = tmp_path / "table1"
  req = shards.read_requests(os.path.join(labeled, "requests"), "requests-00000")
  meta = dict(shards.directory_meta(os.path.join(labeled, "requests")))
  del meta["template_version"]  # a Table 1 preference request directory
  shards.write_requests(str(other / "requests"), "requests-00000", req, meta)
  shards.write_labels(str(other / "labels"), "requests-00000",
                      shards.read_labels(os.path.join(labeled, "labels"), "requests-00000"),
                      {"k": 5, "fingerprint": meta["fingerprint"]})
  work = tmp_path / "w"
  with pytest.raises(DataError, match="requests/manifest.json: prompt template None"):
    train_and_evaluate(OfflineConfig(epochs=1, augment=str(other), **TINY), str(work),
                       log=lambda s: None, dataset=ds)
  assert not work.exists()


# --- experiments.lea ------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_experiment_writes_every_file_and_resumes_without_training(world, tmp_path,
                                                                        monkeypatch):
  from experiments import lea as lea_exp
  ds, env, _ = world
  cfg = lea_exp.LeaConfig(labeler="oracle", env=env, seeds=1, backbones=("sasrec",),
                          agents=("normal",), epochs=2, augment_epoch=1, num_requests=100,
                          offline=OfflineConfig(dim=16, batch_size=64), synthetic=SYN,
                          workdir=str(tmp_path / "lea"))
  res = lea_exp.run_lea(cfg, log=lambda s: None, dataset=ds)
  for f in ("results.json", "tables.md", "curves.png", "lea.json"):
    assert os.path.isfile(tmp_path / "lea" / f), f
  assert set(res["methods"]) == {"sasrec-normal", "sasrec-normal+aug", "popularity"}
  for vals in res["methods"].values():
    assert set(vals) == set(lea_exp.NAMES) and all(len(v) == 1 for v in vals.values())
  # plain and +aug share the early stage: equal at epoch 1, apart after the augmentation
  curves = res["curves_HR@10"]
  assert curves["sasrec-normal"][0][:2] == curves["sasrec-normal+aug"][0][:2]
  assert "| sasrec-normal+aug |" in (tmp_path / "lea" / "tables.md").read_text()

  def no_training(*a, **k):
    raise AssertionError("a finished run was trained again")

  monkeypatch.setattr(lea_exp, "train_and_evaluate", no_training)
  again = lea_exp.run_lea(cfg, log=lambda s: None, dataset=ds)
  assert again["methods"] == res["methods"]


def test_lea_template_has_no_none_label():
  from llm_labeler.backends.base import choose
  from llm_labeler.prompts import LEA_TEMPLATE_VERSION, PromptRenderer, has_none
  scores = np.array([[0.1, 0.5, 0.2, 3.0], [2.0, 0.0, 1.0, 0.5]])  # k = 3, None scored highest
  choice, logprobs = choose(scores, none_option=False)
  np.testing.assert_array_equal(choice, [1, 0])
  assert np.isneginf(logprobs[:, 3]).all()
  np.testing.assert_allclose(np.exp(logprobs).sum(1), 1.0, rtol=1e-6)
  assert not has_none(LEA_TEMPLATE_VERSION) and LEA_TEMPLATE_VERSION == shards.LEA_TEMPLATE
  cat = shards.Catalog("d", "f", "music", "tracks", "listen", ("title",),
                       np.array([["t0"], ["t1"], ["t2"], ["t3"]]))
  prompt = PromptRenderer(cat, 3, template=LEA_TEMPLATE_VERSION).render_one([-1, 0], [1, 2, 3])
  assert "In the list of following 3 tracks, based on the history, select the letter" in prompt
  assert "None" not in prompt and "\nc. t3\nResponse: " in prompt


def test_augment_cli_refuses_a_missing_run(tmp_path):
  out = tmp_path / "aug"
  res = subprocess.run([sys.executable, "-m", "jaxrec.offline.augment",
                        f"--run={tmp_path / 'nope'}", f"--out={out}"],
                       check=False, capture_output=True, text=True, timeout=120)
  assert res.returncode == 2
  assert res.stderr.strip().splitlines()[-1].startswith("error: --run ")
  assert not out.exists()


@pytest.mark.slow
def test_augmented_run_resumed_equals_the_uninterrupted_one(world, labeled, tmp_path):
  ds, _, run = world
  cfg = lambda epochs: OfflineConfig(agent="sa2c", epochs=epochs, warmup=5, augment=labeled,
                                     augment_start=30, **TINY)
  whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
  for d in (whole, parts):
    shutil.copytree(run, d)
  a = train_and_evaluate(cfg(3), whole, log=lambda s: None, dataset=ds)
  train_and_evaluate(cfg(2), parts, log=lambda s: None, dataset=ds)
  b = train_and_evaluate(cfg(3), parts, log=lambda s: None, dataset=ds)
  drop = lambda rows: [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]
  assert drop(a) == drop(b)
