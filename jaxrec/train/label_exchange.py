"""Pre-training's side of the preference-shard exchange (jaxrec.shards is the format):
lockstep requests and their labels (`--labeler=dir`), and offline shard pairs turned into
D_LLM transitions (`--labeler=shards`). Host-side code: reads and writes files."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import shards
from jaxrec.agents import ialp
from jaxrec.agents.types import Transition
from jaxrec.envs.store import EnvMeta
from jaxrec.errors import DataError


def request_meta(env_meta: dict, k: int, history_len: int, num_items: int) -> dict:
  """The meta every request shard of a pre-training run records (checked by jaxrec.shards)."""
  return {"dataset": env_meta.dataset, "fingerprint": env_meta.fingerprint, "k": k,
          "history_len": history_len, "num_items": num_items, "producer": "jaxrec.pretrain"}


def post_request(req_dir: str, name: str, shard: shards.RequestShard, meta: dict) -> None:
  """Writes a request shard; a rerun after a crash finds its own shard and keeps it."""
  if os.path.exists(os.path.join(req_dir, name + ".json")):
    have = shards.read_requests(req_dir, name)
    if not all(np.array_equal(a, b) for a, b in zip(have, shard)):
      raise DataError(f"{req_dir}/{name}.npz: exists and differs from this run's request; the "
                      "labeler directory belongs to another run (use a fresh --labeler_dir)")
    return
  shards.write_requests(req_dir, name, shard, meta)


def _label_exists(lab_dir: str, name: str) -> bool:
  return os.path.exists(os.path.join(lab_dir, shards.label_name(name) + ".json"))


def _read_labels(lab_dir: str, name: str, rows: int, need_logprobs: bool) -> shards.LabelShard:
  labels = shards.read_labels(lab_dir, name)  # verified: one-line DataError naming the shard
  if labels.choice.shape[0] != rows:
    raise DataError(f"{lab_dir}/{name}.npz: {labels.choice.shape[0]} labels for {rows} requests")
  if need_logprobs and labels.logprobs is None:
    raise DataError(f"{lab_dir}/{name}.npz: no logprobs, which --labels=soft needs")
  return labels


def await_labels(lab_dir: str, name: str, rows: int, timeout: float,
                  need_logprobs: bool) -> shards.LabelShard:
  """Polls (backing off to 0.5 s) for the label shard of request `name`."""
  t0, wait = time.monotonic(), 0.005
  while not _label_exists(lab_dir, name):
    if time.monotonic() - t0 > timeout:
      raise DataError(f"{lab_dir}: no label shard {name!r} after {timeout:g} s (--label_timeout)"
                      f"; is `python -m llm_labeler.label --requests=... --out={lab_dir} "
                      "--follow` running?")
    time.sleep(wait)
    wait = min(wait * 1.5, 0.5)
  return _read_labels(lab_dir, name, rows, need_logprobs)


def load_shard_transitions(labeler_dir: str, env_meta: EnvMeta, env, num_items: int,
                           labels: str = "hard", seed: int = 0,
                           negatives: bool = False) -> tuple[Transition, dict]:
  """Every (request, label) shard pair of LABELER_DIR/{requests,labels} -> (transitions [M],
  their None / invalid rates and mean r^p).

  done = True: an offline row is one judgment of a state that some other policy reached; the
  state after the labeled action was never visited, so there is nothing sound to bootstrap
  from (Q(s_{t+1}, .) of unvisited states is noise) and Eq. 8's target is r^p itself.

  negatives (hard labels only): after the labeled rows, one row (s, c, r^p = 0, done) for each
  candidate c of a request whose label chose another candidate (not None, valid): what the
  judgment says about the k - 1 items it passed over. Not in the paper.
  """
  req_dir, lab_dir = (os.path.join(labeler_dir, d) for d in ("requests", "labels"))
  names = shards.list_shards(req_dir)
  if not names:
    raise DataError(f"{req_dir}: no request shards (write them with "
                    "python -m jaxrec.sample_requests)")
  meta = shards.directory_meta(req_dir)
  if meta.get("fingerprint") not in (None, env_meta.fingerprint):
    raise DataError(f"{req_dir}: shards of dataset {meta.get('dataset')!r} (fingerprint "
                    f"{meta.get('fingerprint')}), not of --env ({env_meta.fingerprint})")
  parts = []
  for name in names:
    req = shards.read_requests(req_dir, name)
    if not _label_exists(lab_dir, name):
      raise DataError(f"{lab_dir}: request shard {name!r} has no label shard; run "
                      f"python -m llm_labeler.label --requests={req_dir} --out={lab_dir}")
    lab = _read_labels(lab_dir, name, req.session.shape[0], labels == "soft")
    if req.history.shape[1] != env.history_len:
      raise DataError(f"{req_dir}/{name}.npz: history length {req.history.shape[1]}, the env's "
                      f"is {env.history_len}")
    if req.candidates.max() >= num_items:
      raise DataError(f"{req_dir}/{name}.npz: item id {int(req.candidates.max())} out of range "
                      f"for {num_items} items")
    parts.append((req, lab))
  ks = {p[0].candidates.shape[1] for p in parts}
  if len(ks) != 1:
    raise DataError(f"{req_dir}: shards with different k {sorted(ks)}")
  cat = lambda f: np.concatenate([f(r, l) for r, l in parts])
  history = cat(lambda r, l: r.history)
  candidates = cat(lambda r, l: r.candidates)
  choice = cat(lambda r, l: l.choice)
  valid = cat(lambda r, l: l.valid)
  logprobs = cat(lambda r, l: l.logprobs) if labels == "soft" else None
  action, reward, none = ialp.preference_actions(
      jax.random.PRNGKey(seed), jnp.asarray(candidates), jnp.asarray(choice),
      jnp.asarray(valid), None if logprobs is None else jnp.asarray(logprobs), labels)
  history = jnp.asarray(history)
  stats = {"none_rate": float(none.mean()), "invalid_rate": float(1.0 - valid.mean()),
           "mean_rp": float(reward.mean())}
  if negatives:
    if labels != "hard":
      raise ValueError("negatives need hard labels")
    k = candidates.shape[1]
    chose = np.asarray(~none)
    passed = chose[:, None] & (np.arange(k)[None, :] != np.asarray(choice)[:, None])
    rows, slots = np.nonzero(passed)  # row-major: each request's passed-over candidates in order
    history = jnp.concatenate([history, history[rows]])
    action = jnp.concatenate([action, jnp.asarray(candidates[rows, slots], jnp.int32)])
    reward = jnp.concatenate([reward, jnp.zeros(rows.shape, jnp.float32)])
    stats["negative_rows"] = int(rows.shape[0])
  return Transition(history=history, action=action, reward=reward,
                    done=jnp.ones(action.shape, bool),
                    next_history=ialp.extend(history, action)), stats
