"""The shard store: atomic commits under the directory lock, the derived manifest, verified
reads, the DONE marker (see jaxrec.shards for the protocol)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator

import numpy as np

from jaxrec.errors import DataError
from jaxrec.faults import failpoint
from jaxrec.io import atomic_open, read_json_object, read_npz, write_temp
from jaxrec.shards.format import (CONSISTENT_KEYS, DONE, FORMAT, KINDS, MANIFEST, LabelShard,
                                  RequestShard, ShardExistsError, as_label, as_request,
                                  check_label, check_name, check_request, encode, fields_of,
                                  is_entry, is_shard_name, label_name, record_problem, short)

_LOCK = ".lock"


def _paths(directory: str, name: str) -> tuple[str, str]:
  base = os.path.join(directory, check_name(name))
  return base + ".npz", base + ".json"


# --- atomic writes and the directory lock ---------------------------------------------------
def _temp_prefix() -> str:
  return f".tmp-{socket.gethostname()}-{os.getpid()}-"


def atomic_write(path: str, data: bytes, point: str = "") -> None:
  """`data` into `path` by a temp file of this host and process (`remove_stale_temps` knows
  them) renamed into place; `point`: a failpoint between the two."""
  with atomic_open(path, "wb", _temp_prefix(), point) as f:
    f.write(data)


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
  """Holds the exclusive lock of a shard directory (blocks until it is free)."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, _LOCK), "a+b") as f:
    fcntl.lockf(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.lockf(f, fcntl.LOCK_UN)


def remove_stale_temps(directory: str) -> list[str]:
  """Deletes this host's temporary files whose writer process is gone; returns their names."""
  host = socket.gethostname()
  removed = []
  if not os.path.isdir(directory):
    return removed
  for fn in os.listdir(directory):
    m = re.fullmatch(rf"\.tmp-{re.escape(host)}-(\d+)-.*", fn)
    if m and not _alive(int(m.group(1))):
      with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, fn))
      removed.append(fn)
  return removed


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except OSError as e:
    return e.errno == errno.EPERM
  return True


# --- the manifest ----------------------------------------------------------------------------
def _load_manifest_file(directory: str) -> dict:
  """manifest.json if it is well formed, else {}: it is derived data, rebuilt from the records,
  so a damaged one is ignored rather than trusted or fatal."""
  try:
    m = read_json_object(os.path.join(directory, MANIFEST), "manifest")
  except (FileNotFoundError, DataError):
    return {}
  entries = m.get("shards")
  ok = (m.get("format") == FORMAT and isinstance(m.get("meta"), dict)
        and isinstance(entries, dict) and m.get("kind") in (KINDS if entries else (None, *KINDS))
        and all(is_shard_name(n) and is_entry(e) for n, e in entries.items()))
  return m if ok else {}


def read_manifest(directory: str) -> dict:
  """The directory manifest, derived from the shard records: {format, kind, meta, shards:
  {name: {rows, sha256}}}. manifest.json serves as a cache of records already merged (it is
  only written under the lock); records it lacks (a writer killed before updating it) are read,
  and entries whose record is gone are dropped."""
  names = []
  if os.path.isdir(directory):
    names = sorted(fn[:-5] for fn in os.listdir(directory)
                   if fn.endswith(".json") and is_shard_name(fn[:-5]))
  cached = _load_manifest_file(directory)
  shards, kind, meta = {}, cached.get("kind"), cached.get("meta") or {}
  old = cached.get("shards", {})
  for name in names:
    if name in old:
      shards[name] = old[name]
      continue
    try:
      rec = read_json_object(os.path.join(directory, name + ".json"), "shard record")
    except FileNotFoundError:
      continue
    if rec.get("name") != name or rec.get("format") != FORMAT:
      continue
    rec_kind = rec.get("kind")
    problem = (record_problem(rec, name, rec_kind) if rec_kind in KINDS
               else f"kind {short(rec_kind)}: expected requests or labels")
    if problem:
      raise DataError(f"{os.path.join(directory, name + '.json')}: {problem}")
    if kind not in (None, rec.get("kind")):
      raise DataError(f"{directory}: mixes {kind} and {rec.get('kind')} shards")
    kind, meta = rec.get("kind"), meta or rec.get("meta", {})
    shards[name] = {"rows": rec["rows"], "sha256": rec["sha256"]}
  if not shards:
    kind, meta = None, {}
  return {"format": FORMAT, "kind": kind, "meta": meta, "shards": shards}


def repair_manifest(directory: str) -> bool:
  """Rewrites manifest.json from the shard records if it lags behind them (a writer killed
  between its record and the manifest, with no later commit to re-derive it); True if it did.
  Readers never need this (they derive the manifest); it keeps the file itself complete."""
  if not os.path.isdir(directory):
    return False
  with locked(directory):
    derived = read_manifest(directory)
    if not derived["shards"]:
      return False
    try:
      on_disk = read_json_object(os.path.join(directory, MANIFEST), "manifest")
    except (FileNotFoundError, DataError):
      on_disk = None
    if on_disk == derived:
      return False
    atomic_write(os.path.join(directory, MANIFEST),
                  (json.dumps(derived, indent=1, sort_keys=True) + "\n").encode())
    return True


def directory_meta(directory: str) -> dict:
  """The meta shared by a directory's shards ({} when it has none yet)."""
  return read_manifest(directory)["meta"]


def check_meta(directory: str, meta: dict, have: dict) -> None:
  """Raises unless `meta` agrees with the directory's existing meta `have` on CONSISTENT_KEYS."""
  for key in CONSISTENT_KEYS:
    if key in have and meta.get(key) != have[key]:
      raise DataError(f"{directory}: holds shards with {key}={have[key]!r}, not "
                      f"{meta.get(key)!r}; use another directory")


# --- write ----------------------------------------------------------------------------------
def _commit(directory: str, name: str, kind: str, arrays: dict, rows: int, meta: dict) -> None:
  npz_path, rec_path = _paths(directory, name)
  os.makedirs(directory, exist_ok=True)
  data = encode(arrays)
  record = {"format": FORMAT, "kind": kind, "name": name, "rows": rows,
            "sha256": hashlib.sha256(data).hexdigest(), "meta": meta}
  tmp = write_temp(directory, data, ".npz", _temp_prefix())
  try:
    failpoint("shards.temp_written")
    with locked(directory):
      have = read_manifest(directory)
      if have["kind"] not in (None, kind):
        raise DataError(f"{directory}: holds {have['kind']} shards, not {kind}")
      if os.path.exists(rec_path):
        _load(directory, name, kind)  # raises if it does not verify
        raise ShardExistsError(f"{npz_path}: a verified {kind} shard already exists; shards "
                               "are never rewritten")
      check_meta(directory, meta, have["meta"])
      os.replace(tmp, npz_path)
      failpoint("shards.npz_renamed")
      atomic_write(rec_path, (json.dumps(record, sort_keys=True) + "\n").encode())
      failpoint("shards.record_written")
      have["shards"][name] = {"rows": rows, "sha256": record["sha256"]}
      have["kind"] = kind
      have["meta"] = have["meta"] or meta
      atomic_write(os.path.join(directory, MANIFEST),
                    (json.dumps(have, indent=1, sort_keys=True) + "\n").encode(),
                    "shards.manifest_temp")
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)


def write_requests(directory: str, name: str, shard: RequestShard, meta: dict) -> None:
  """Commits a request shard (see the module docstring); meta: dataset, fingerprint, k, ..."""
  shard = as_request(shard)
  check_request(shard, f"request shard {name!r}", meta.get("k"), meta.get("num_items"))
  if "k" not in meta:
    meta = meta | {"k": int(shard.candidates.shape[1])}
  _commit(directory, name, "requests", shard._asdict(), int(shard.session.shape[0]), meta)


def write_labels(directory: str, name: str, shard: LabelShard, meta: dict) -> None:
  """Commits a label shard; meta must hold k (and records backend, model, template_version)."""
  shard = as_label(shard)
  if "k" not in meta:
    raise DataError(f"label shard {name!r}: meta must record k")
  check_label(shard, f"label shard {name!r}", int(meta["k"]))
  arrays = {f: a for f, a in shard._asdict().items() if a is not None}
  _commit(directory, label_name(name), "labels", arrays, int(shard.choice.shape[0]), meta)


# --- read -----------------------------------------------------------------------------------
def _verify(directory: str, name: str, rec: dict) -> dict[str, np.ndarray]:
  """The arrays of NAME.npz once its bytes match the sha256 of its (checked) record."""
  npz_path, _ = _paths(directory, name)
  try:
    with open(npz_path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DataError(f"{npz_path}: shard {name!r} unreadable ({type(e).__name__})") from None
  if hashlib.sha256(data).hexdigest() != rec["sha256"]:
    raise DataError(f"{npz_path}: shard {name!r} does not match the sha256 of its record "
                    "(truncated or modified)")
  return read_npz(npz_path, data, f"shard {name!r} is not a readable npz")


def _record(directory: str, name: str, kind: str) -> dict:
  """The checked record NAME.json of a committed shard of `kind`."""
  npz_path, rec_path = _paths(directory, name)
  try:
    rec = read_json_object(rec_path, "shard record")
  except FileNotFoundError:
    raise DataError(f"{npz_path}: no committed {kind} shard {name!r} in {directory}") from None
  problem = record_problem(rec, name, kind)
  if problem:
    raise DataError(f"{rec_path}: {problem}")
  return rec


def _load(directory: str, name: str, kind: str) -> tuple[dict, dict]:
  rec = _record(directory, name, kind)
  return _verify(directory, name, rec), rec


def read_requests(directory: str, name: str) -> RequestShard:
  """Reads and verifies a request shard; one-line DataError naming the shard otherwise."""
  arrays, rec = _load(directory, name, "requests")
  where = f"{_paths(directory, name)[0]}: request shard {name!r}"
  shard = RequestShard(*fields_of(arrays, RequestShard._fields, (), where))
  check_request(shard, where, rec["meta"].get("k"), rec["meta"].get("num_items"))
  history_len = rec["meta"].get("history_len")
  if history_len is not None and shard.history.shape[1] != history_len:
    raise DataError(f"{where}: history has shape {shard.history.shape}, expected "
                    f"history_len={history_len}")
  if shard.session.shape[0] != rec["rows"]:
    raise DataError(f"{where}: {shard.session.shape[0]} rows, manifest says {rec['rows']}")
  return shard


def read_labels(directory: str, name: str) -> LabelShard:
  """Reads and verifies a label shard; one-line DataError naming the shard otherwise."""
  name = label_name(name)
  arrays, rec = _load(directory, name, "labels")
  where = f"{_paths(directory, name)[0]}: label shard {name!r}"
  shard = LabelShard(*fields_of(arrays, LabelShard._fields, ("logprobs",), where))
  check_label(shard, where, int(rec["meta"]["k"]))
  if shard.choice.shape[0] != rec["rows"]:
    raise DataError(f"{where}: {shard.choice.shape[0]} rows, manifest says {rec['rows']}")
  return shard


def list_shards(directory: str, verify: bool = False) -> list[str]:
  """Sorted names of the committed shards (those with a record; each is verified when read).

  verify=True also checks every npz against its sha256 now and raises on the first bad one.
  """
  manifest = read_manifest(directory)
  if verify:
    for name in manifest["shards"]:  # against the records, the source of truth
      _verify(directory, name, _record(directory, name, manifest["kind"]))
  return sorted(manifest["shards"])


def is_done(directory: str) -> bool:
  """True once the producer of a request directory wrote its DONE marker."""
  return os.path.exists(os.path.join(directory, DONE))


def mark_done(directory: str) -> None:
  atomic_write(os.path.join(directory, DONE), b"")
