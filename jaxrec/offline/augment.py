"""LEA's augmentation through the labeler (paper 002, Sec. 3.4): request shards from a trained
offline run, and the labeled choices read back as one augmented action per train transition.

  python -m jaxrec.offline.augment --run=RUN --out=DIR [--num=0 --seed=0 --shard_size=S --k=5]

writes DIR/requests (catalog.npz, request shards `requests-00000`, ..., DONE): for train-split
transitions of RUN's dataset (every one with --num=0, else --num drawn without replacement),
the history and the top-k items of the supervised head of RUN's latest checkpoint (network
copy 0, the one evaluated), in rank order. Then

  python -m llm_labeler.label --requests=DIR/requests --out=DIR/labels --backend=...

labels them with LEA's selection prompt (template shards.LEA_TEMPLATE: no None option), and

  python -m jaxrec.offline ... --augment=DIR [--w_ah --w_aq --augment_start]

trains with each labeled (history, chosen item) as an extra positive (jaxrec/offline/lea.py).
DIR holds requests/ and labels/ as pre-training's --labeler=shards directory does: a label
shard carries only the choice, its request the history and candidates.

A request row: session = the index of the transition in the train transitions (dataset order,
jaxrec.offline.transitions), step = its position in the user's sequence, user = the user's
index in the whole dataset, history = the transition's history, candidates = the top-k items.
The request manifest records the dataset and its fingerprint, the template version, the run,
its epoch and update count, and the split; `load_augmentation` refuses a directory of another
dataset (fingerprint), another template, another history length, or whose histories are not
this run's train transitions (another split), before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import shards
from jaxrec.data.dataset import Dataset
from jaxrec.envs.store import fingerprint
from jaxrec.errors import ConfigError, DataError
from jaxrec.io import read_json_object
from jaxrec.offline.transitions import Transitions
from jaxrec.train import driver

REQUESTS, LABELS = "requests", "labels"
PRODUCER = "jaxrec.offline.augment"


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """`python -m jaxrec.offline.augment`'s settings."""
  num: int = 0  # requests: 0 = every train transition, else this many drawn at random
  k: int = 5  # candidates (LEA: the top 5 of the supervised head)
  shard_size: int = 10000
  seed: int = 0  # which transitions, with --num > 0
  chunk: int = 1024  # histories scored per step

  def validate(self) -> None:
    if self.num < 0:
      raise ConfigError(f"--num must be >= 0 (0 = every train transition), got {self.num}")
    if not 1 <= self.k <= shards.MAX_K:
      raise ConfigError(f"--k must be in 1..{shards.MAX_K}, got {self.k}")
    for f in ("shard_size", "chunk"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")


def read_run_config(run: str):
  """The OfflineConfig of a run directory (its flags.json)."""
  from jaxrec.checkpoint import _dataclass_from_dict
  from jaxrec.data.registry import PrepConfig
  from jaxrec.data.synthetic import SyntheticConfig
  from jaxrec.offline.run import OfflineConfig
  path = os.path.join(run, "flags.json")
  if not os.path.isfile(path):
    raise DataError(f"--run {run}: not an offline run directory (no flags.json); train one with "
                    "python -m jaxrec.offline --workdir=RUN")
  d = read_json_object(path)
  nested = {"synthetic": SyntheticConfig, "prep": PrepConfig}
  parts = {k: _dataclass_from_dict(c, d.pop(k, {}), path) for k, c in nested.items()}
  return _dataclass_from_dict(OfflineConfig, d | parts, path)


def restore_params(cfg, run: str, num_items: int):
  """(params of network copy 0, SupervisedQNet, epoch, updates) of RUN's latest checkpoint."""
  from jaxrec.offline.learners import LEARNERS
  from jaxrec.offline.loop import make_train, take
  from jaxrec.offline.networks import SupervisedQNet
  learner = LEARNERS[cfg.agent]
  net = SupervisedQNet(cfg.net(num_items), q_head=learner.q_head)
  init_state, _ = make_train(learner, net, cfg.optimizer(), cfg.hparams(), cfg.batch_size, 1)
  abstract = jax.eval_shape(init_state, jax.random.PRNGKey(0))
  with driver.checkpoint_manager(run) as manager:
    step = manager.latest_step()
    if step is None:
      raise DataError(f"--run {run}: no checkpoint yet (train it first)")
    state, _ = driver.restore(manager, step, abstract)
  return take(state.params, 0), net, int(step), int(state.updates)


def top_k_items(net, params, history: np.ndarray, k: int, chunk: int) -> np.ndarray:
  """[N, k] int32: the supervised head's k highest-scored items per history [N, L], best
  first (ties: the smaller id, as the evaluation ranks)."""
  n = history.shape[0]
  chunk = min(chunk, max(n, 1))
  pad = -n % chunk
  h = np.concatenate([history, np.full((pad, history.shape[1]), -1, np.int32)])

  @jax.jit
  def run(h):
    return jax.lax.map(lambda x: jax.lax.top_k(net.apply(params, x)[0], k)[1],
                       h.reshape(-1, chunk, h.shape[1]))

  return np.asarray(run(jnp.asarray(h))).reshape(-1, k)[:n].astype(np.int32)


def positions(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
  """(position in its sequence [N], the user's index [N]) of every interaction of ds."""
  users = ds.user_of_interaction()
  return (np.arange(ds.num_interactions) - ds.offsets[users]).astype(np.int32), users


def write_requests(run: str, out: str, acfg: AugmentConfig, log=print,
                   dataset: Dataset | None = None) -> dict:
  """DIR/requests from RUN (module docstring); returns the request meta. dataset: use it
  instead of loading the run's (tests). Existing shards of the same meta are kept."""
  from jaxrec.offline.run import load_splits
  from jaxrec.offline.transitions import build_transitions
  acfg.validate()
  cfg = read_run_config(run)
  ds, train_ds, _ = load_splits(cfg, dataset)
  if acfg.k > ds.num_items:
    raise ConfigError(f"--k={acfg.k} exceeds the {ds.num_items} items of {ds.name!r}")
  train = build_transitions(train_ds, cfg.history_len, to_device=False)
  n = train.size
  if acfg.num > n:
    raise ConfigError(f"--num={acfg.num} exceeds the {n} train transitions of {ds.name!r}")
  rows = (np.arange(n) if acfg.num == 0 else
          np.sort(np.random.default_rng([acfg.seed, 20]).choice(n, acfg.num, replace=False)))
  params, net, epoch, updates = restore_params(cfg, run, ds.num_items)
  fp = fingerprint(ds)
  req_dir = os.path.join(out, REQUESTS)
  meta = {"dataset": ds.name, "fingerprint": fp, "k": acfg.k, "history_len": cfg.history_len,
          "num_items": ds.num_items, "template_version": shards.LEA_TEMPLATE,
          "producer": PRODUCER, "run": os.path.abspath(run), "method": cfg.method,
          "epoch": epoch, "updates": updates, "split": cfg.split, "train_frac": cfg.train_frac,
          "split_seed": cfg.split_seed, "rows": int(rows.size), "seed": acfg.seed}
  have = shards.directory_meta(req_dir)
  shards.check_meta(req_dir, meta, have)
  if have and (have.get("run"), have.get("epoch")) != (meta["run"], epoch):
    raise DataError(f"{req_dir}: holds requests of {have.get('run')} at epoch "
                    f"{have.get('epoch')}, not {meta['run']} at epoch {epoch}; use another --out")
  cands = top_k_items(net, params, train.history[rows], acfg.k, acfg.chunk)
  pos, train_user = positions(train_ds)
  index = {key: i for i, key in enumerate(ds.user_keys.tolist())}
  user = np.array([index[key] for key in train_ds.user_keys.tolist()], np.int32)[train_user]
  req = shards.RequestShard(session=rows.astype(np.int32), step=pos[rows],
                            history=train.history[rows], candidates=cands, user=user[rows])
  shards.write_catalog(req_dir, shards.catalog_of(ds, fp))
  written = 0
  for i, start in enumerate(range(0, rows.size, acfg.shard_size)):
    part = shards.RequestShard(*(a[start:start + acfg.shard_size] for a in req))
    try:
      shards.write_requests(req_dir, f"requests-{i:05d}", part, meta)
      written += 1
    except shards.ShardExistsError:
      pass
  shards.mark_done(req_dir)
  log(f"wrote {written} request shards ({rows.size} rows, top-{acfg.k} of {cfg.method} epoch "
      f"{epoch}, template {shards.LEA_TEMPLATE}) to {req_dir}; label them with python -m "
      f"llm_labeler.label --requests={req_dir} --out={os.path.join(out, LABELS)} --backend=...")
  return meta


class Augmentation(NamedTuple):
  """action [N] int32: the labeled item of each train transition, -1 where none (not
  requested, unparsed, or None); stats: counts for the log and the metrics."""
  action: np.ndarray
  stats: dict


def _check_meta(where: str, meta: dict, fp: str, ds_name: str, history_len: int) -> None:
  if meta.get("fingerprint") != fp:
    raise DataError(f"{where}: built on dataset {meta.get('dataset')!r} (fingerprint "
                    f"{meta.get('fingerprint')}), not this run's {ds_name!r} ({fp})")
  if meta.get("template_version") != shards.LEA_TEMPLATE:
    raise DataError(f"{where}: prompt template {meta.get('template_version')!r}, --augment "
                    f"needs LEA's {shards.LEA_TEMPLATE!r} (python -m jaxrec.offline.augment)")
  if meta.get("history_len") not in (None, history_len):
    raise DataError(f"{where}: history length {meta.get('history_len')}, this run's "
                    f"--history_len is {history_len}")


def load_augmentation(directory: str, ds: Dataset, train: Transitions,
                      history_len: int) -> Augmentation:
  """DIR/{requests,labels} -> the augmented action of every train transition (host-side; one-
  line DataError naming the file on any mismatch). train: the run's train transitions."""
  req_dir, lab_dir = (os.path.join(directory, d) for d in (REQUESTS, LABELS))
  for d in (req_dir, lab_dir):
    if not os.path.isdir(d):
      raise ConfigError(f"--augment={directory}: no {os.path.basename(d)}/ directory (write "
                        "requests with python -m jaxrec.offline.augment, labels with python -m "
                        "llm_labeler.label)")
  fp = fingerprint(ds)
  names = shards.list_shards(req_dir)
  if not names:
    raise DataError(f"{req_dir}: no request shards")
  _check_meta(os.path.join(req_dir, shards.MANIFEST), shards.directory_meta(req_dir), fp,
              ds.name, history_len)
  lab_meta = shards.directory_meta(lab_dir)
  if lab_meta:
    _check_meta(os.path.join(lab_dir, shards.MANIFEST), lab_meta, fp, ds.name, history_len)
  labeled = set(shards.list_shards(lab_dir))
  history = np.asarray(train.history)
  n = history.shape[0]
  action = np.full(n, -1, np.int32)
  rows = dropped = 0
  for name in names:
    if shards.label_name(name) not in labeled:
      raise DataError(f"{os.path.join(lab_dir, name)}.npz: request shard {name!r} has no label "
                      f"shard; run python -m llm_labeler.label --requests={req_dir} "
                      f"--out={lab_dir}")
    req = shards.read_requests(req_dir, name)
    lab = shards.read_labels(lab_dir, name)
    where = os.path.join(req_dir, name + ".npz")
    if lab.choice.shape[0] != req.session.shape[0]:
      raise DataError(f"{os.path.join(lab_dir, name)}.npz: {lab.choice.shape[0]} labels for "
                      f"{req.session.shape[0]} requests")
    s = req.session
    if s.size and (s.min() < 0 or s.max() >= n):
      raise DataError(f"{where}: transition index {int(s.max())} out of range for this run's "
                      f"{n} train transitions (another split?)")
    if not np.array_equal(history[s], req.history):
      bad = int(np.argmax((history[s] != req.history).any(1)))
      raise DataError(f"{where}: row {bad}'s history is not train transition {int(s[bad])}'s "
                      "in this run (built with another split or history length)")
    k = req.candidates.shape[1]
    ok = lab.valid & (lab.choice < k)
    chosen = np.take_along_axis(req.candidates, np.minimum(lab.choice, k - 1)[:, None], 1)[:, 0]
    action[s[ok]] = chosen[ok]
    rows += int(s.size)
    dropped += int((~ok).sum())
  stats = {"augment_requests": rows, "augment_rows": int((action >= 0).sum()),
           "augment_dropped": dropped,
           "augment_is_logged": float(np.mean(action[action >= 0] == np.asarray(train.action)[
               action >= 0])) if (action >= 0).any() else 0.0}
  return Augmentation(action, stats)


def main(argv):
  from absl import flags

  from jaxrec import cli
  cli.reject_extra_args(argv)
  f = flags.FLAGS
  if not f.run or not f.out:
    raise ConfigError("--run and --out are required")
  acfg = AugmentConfig(num=f.num, k=f.k, shard_size=f.shard_size, seed=f.seed)
  write_requests(f.run, f.out, acfg)


def _define_flags() -> None:
  from absl import flags
  d = AugmentConfig()
  flags.DEFINE_string("run", None, "offline run directory (python -m jaxrec.offline --workdir)")
  flags.DEFINE_string("out", None, "augmentation directory: requests/ written here, labels/ "
                      "for the labeler")
  flags.DEFINE_integer("num", d.num, "requests: 0 = every train transition, else this many "
                       "drawn without replacement")
  flags.DEFINE_integer("k", d.k, "candidates per request (LEA: the supervised head's top 5)")
  flags.DEFINE_integer("shard_size", d.shard_size, "rows per request shard")
  flags.DEFINE_integer("seed", d.seed, "which transitions are drawn (with --num > 0)")


if __name__ == "__main__":
  from jaxrec import cli
  _define_flags()
  cli.run(main)
