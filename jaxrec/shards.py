"""Preference shards: the one format shared by jaxrec (pre-training) and llm_labeler.

A shard directory holds shards of one kind, "requests" or "labels":

  NAME.npz         the arrays (np.savez, uncompressed; read with allow_pickle=False)
  NAME.json        the shard's record: kind, rows, sha256 of NAME.npz, the directory meta
  manifest.json    the directory manifest: format, kind, meta, {name: {rows, sha256}}
  catalog.npz      (request directories) the item catalog for prompts, written once
  DONE             (request directories) written by the producer when no shard will follow

Request shard (N rows, k candidates, L history slots):
  session [N] int32, step [N] int32, history [N, L] int32 (item ids, right-aligned, -1 padding,
  as env observations), candidates [N, k] int32 (item ids >= 0), user [N] int32 (-1 where the
  env does not model users).
Label shard: choice [N] int32 (0..k-1 a candidate, k = "None"), valid [N] bool (False: the
  response could not be parsed; choice is then k), optional logprobs [N, k+1] float32.
A label shard has the name of its request shard (`label_name`) and lives in its own directory.

Several writers, one directory (labeler workers on different hosts sharing a filesystem):
the per-shard records NAME.json are the source of truth; manifest.json is derived from them.
Committing a shard takes an exclusive POSIX lock (fcntl.lockf, which NFS forwards to its lock
manager) on DIR/.lock and, under it: refuses a name that already has a verified shard, checks
that the meta agrees with the directory's, renames NAME.npz then NAME.json into place, and
rewrites manifest.json from every record present. Each commit re-derives the manifest under the
lock after its own record exists, so the last commit's manifest lists every committed shard: no
read-modify-write of a shared list can lose an entry, and a writer killed between the rename of
NAME.npz and NAME.json leaves a shard with no record, which counts as absent and is rewritten.
Readers never take the lock: they verify NAME.npz against NAME.json (rows, sha256, fields,
dtypes, shapes) and fail with a one-line DataError naming the shard.

Temporary files are `.tmp-HOST-PID-*`: a later run on the same host removes those of dead
processes (`remove_stale_temps`) and leaves live writers' and other hosts' files alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from jaxrec.errors import DataError
from jaxrec.faults import failpoint
from jaxrec.io import one_line, read_json_object, read_npz

FORMAT = 1
MANIFEST = "manifest.json"
CATALOG = "catalog.npz"
DONE = "DONE"
_LOCK = ".lock"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_RESERVED = {"manifest", "catalog", "DONE"}
_KINDS = ("requests", "labels")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_UMASK = os.umask(0)
os.umask(_UMASK)
# Keys that must agree between every shard of a directory (others, e.g. timings, may differ).
CONSISTENT_KEYS = ("dataset", "fingerprint", "k", "history_len", "num_items", "template_version",
                   "backend", "model")


class ShardExistsError(DataError):
  """A verified shard of that name is already committed; shards are never rewritten."""


class RequestShard(NamedTuple):
  session: np.ndarray  # [N] int32
  step: np.ndarray  # [N] int32
  history: np.ndarray  # [N, L] int32 item ids, right-aligned, -1 = padding
  candidates: np.ndarray  # [N, k] int32 item ids
  user: np.ndarray  # [N] int32, -1 where the env does not model users


class LabelShard(NamedTuple):
  choice: np.ndarray  # [N] int32 in 0..k (k = "None")
  valid: np.ndarray  # [N] bool
  logprobs: np.ndarray | None = None  # [N, k+1] float32 log-probabilities of the labels


class Catalog(NamedTuple):
  """The item text of a dataset, as the prompts need it."""
  dataset: str
  fingerprint: str
  scenario: str
  item_noun: str
  behavior: str
  attribute_names: tuple[str, ...]
  item_text: np.ndarray  # [I, A] str


# --- names and paths ------------------------------------------------------------------------
def check_name(name: str) -> str:
  """Returns `name` if it is a safe shard name (no '/', no '..', no leading dot), else raises."""
  if (not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name
      or name in _RESERVED or name.endswith((".npz", ".json"))):
    raise DataError(f"shard name {name!r} refused: use 1-128 of [A-Za-z0-9_.-], starting with a "
                    "letter or digit, without '..' or a .npz/.json suffix")
  return name


def label_name(request_name: str) -> str:
  """The name of the label shard of a request shard: the same name, in the label directory."""
  return check_name(request_name)


def _paths(directory: str, name: str) -> tuple[str, str]:
  base = os.path.join(directory, check_name(name))
  return base + ".npz", base + ".json"


# --- atomic writes and the directory lock ---------------------------------------------------
def _temp_prefix() -> str:
  return f".tmp-{socket.gethostname()}-{os.getpid()}-"


def _write_temp(directory: str, data: bytes, suffix: str) -> str:
  fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(), suffix=suffix, dir=directory)
  try:
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide shards from other users
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
  return tmp


def _atomic_write(path: str, data: bytes, point: str = "") -> None:
  tmp = _write_temp(os.path.dirname(path), data, os.path.splitext(path)[1])
  try:
    if point:
      failpoint(point)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


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


# --- records and the manifest ---------------------------------------------------------------


def _is_count(value, least: int = 0) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_entry(entry) -> bool:
  """A manifest entry {rows, sha256} of the right types."""
  return (isinstance(entry, dict) and _is_count(entry.get("rows"))
          and isinstance(entry.get("sha256"), str) and bool(_SHA256_RE.fullmatch(entry["sha256"])))


def _load_manifest_file(directory: str) -> dict:
  """manifest.json if it is well formed, else {}: it is derived data, rebuilt from the records,
  so a damaged one is ignored rather than trusted or fatal."""
  try:
    m = read_json_object(os.path.join(directory, MANIFEST), "manifest")
  except (FileNotFoundError, DataError):
    return {}
  entries = m.get("shards")
  ok = (m.get("format") == FORMAT and isinstance(m.get("meta"), dict)
        and isinstance(entries, dict) and m.get("kind") in (_KINDS if entries else (None, *_KINDS))
        and all(_is_shard_name(n) and _is_entry(e) for n, e in entries.items()))
  return m if ok else {}


def _is_shard_name(name) -> bool:
  try:
    check_name(name)
  except DataError:
    return False
  return True


def _short(value) -> str:
  text = repr(value)
  return text if len(text) <= 40 else text[:37] + "..."


def _record_problem(rec: dict, name: str, kind: str) -> str | None:
  """What is wrong with a shard record of `name` expected to be of `kind`, or None."""
  if rec.get("format") != FORMAT or rec.get("name") != name or rec.get("kind") != kind:
    return f"not a {kind} shard record of {name!r} (format {FORMAT})"
  if not _is_entry(rec):
    return (f"rows {_short(rec.get('rows'))} / sha256 {_short(rec.get('sha256'))}: expected a "
            "row count and a hex sha256")
  meta = rec.get("meta")
  if not isinstance(meta, dict):
    return f"meta {_short(meta)}: expected a JSON object"
  if kind == "labels" and "k" not in meta:
    return "meta has no k"
  for key in ("k", "num_items", "history_len"):
    if key in meta and not _is_count(meta[key], 1):
      return f"meta {key} {_short(meta[key])}: expected a positive integer"
  return None


def read_manifest(directory: str) -> dict:
  """The directory manifest, derived from the shard records: {format, kind, meta, shards:
  {name: {rows, sha256}}}. manifest.json serves as a cache of records already merged (it is
  only written under the lock); records it lacks (a writer killed before updating it) are read,
  and entries whose record is gone are dropped."""
  names = []
  if os.path.isdir(directory):
    names = sorted(fn[:-5] for fn in os.listdir(directory)
                   if fn.endswith(".json") and _is_shard_name(fn[:-5]))
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
    problem = (_record_problem(rec, name, rec_kind) if rec_kind in _KINDS
               else f"kind {_short(rec_kind)}: expected requests or labels")
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
    _atomic_write(os.path.join(directory, MANIFEST),
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


# --- encode / decode ------------------------------------------------------------------------
_REQUEST_DTYPES = {"session": np.int32, "step": np.int32, "history": np.int32,
                   "candidates": np.int32, "user": np.int32}
_LABEL_DTYPES = {"choice": np.int32, "valid": np.bool_, "logprobs": np.float32}


def _encode(arrays: dict[str, np.ndarray]) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def _check_request(shard: RequestShard, where: str, k: int | None = None,
                   num_items: int | None = None) -> None:
  n = shard.session.shape[0] if shard.session.ndim == 1 else -1
  for field, dtype in _REQUEST_DTYPES.items():
    a = getattr(shard, field)
    if a.dtype != dtype:
      raise DataError(f"{where}: {field} has dtype {a.dtype}, expected {np.dtype(dtype)}")
  for field in ("session", "step", "user"):
    if getattr(shard, field).shape != (n,):
      raise DataError(f"{where}: {field} has shape {getattr(shard, field).shape}, "
                      f"expected ({n},)")
  for field in ("history", "candidates"):
    a = getattr(shard, field)
    if a.ndim != 2 or a.shape[0] != n or a.shape[1] == 0:
      raise DataError(f"{where}: {field} has shape {a.shape}, expected ({n}, >0)")
  if k is not None and shard.candidates.shape[1] != k:
    raise DataError(f"{where}: candidates has shape {shard.candidates.shape}, expected k={k}")
  if n and shard.candidates.min() < 0:
    raise DataError(f"{where}: row {int(np.argmin(shard.candidates.min(1)))} has a negative "
                    "candidate item id")
  if n and shard.history.min() < -1:
    raise DataError(f"{where}: history ids must be >= -1 (-1 = padding)")
  if num_items is not None and n:
    top = max(int(shard.candidates.max()), int(shard.history.max()))
    if top >= num_items:
      raise DataError(f"{where}: item id {top} out of range for {num_items} items")


def _check_label(shard: LabelShard, where: str, k: int) -> None:
  n = shard.choice.shape[0] if shard.choice.ndim == 1 else -1
  for field, dtype in _LABEL_DTYPES.items():
    a = getattr(shard, field)
    if a is not None and a.dtype != dtype:
      raise DataError(f"{where}: {field} has dtype {a.dtype}, expected {np.dtype(dtype)}")
  if shard.valid.shape != (n,):
    raise DataError(f"{where}: valid has shape {shard.valid.shape}, expected ({n},)")
  if shard.logprobs is not None and shard.logprobs.shape != (n, k + 1):
    raise DataError(f"{where}: logprobs has shape {shard.logprobs.shape}, "
                    f"expected ({n}, {k + 1})")
  if n and (shard.choice.min() < 0 or shard.choice.max() > k):
    bad = int(np.nonzero((shard.choice < 0) | (shard.choice > k))[0][0])
    raise DataError(f"{where}: row {bad} has choice {int(shard.choice[bad])}, "
                    f"expected 0..{k}")
  unparsed = ~shard.valid & (shard.choice != k)
  if unparsed.any():
    bad = int(np.nonzero(unparsed)[0][0])
    raise DataError(f"{where}: row {bad} is not valid but has choice "
                    f"{int(shard.choice[bad])}; an unparsed response is stored as choice {k}")
  if shard.logprobs is not None and n:
    wrong = np.isnan(shard.logprobs) | (shard.logprobs > 1e-3)  # -inf (p = 0) is fine
    if wrong.any():
      bad = int(np.nonzero(wrong.any(1))[0][0])
      raise DataError(f"{where}: row {bad} has logprobs {shard.logprobs[bad].tolist()}; "
                      "log-probabilities must be <= 0 and not NaN")


def _as_request(shard: RequestShard) -> RequestShard:
  return RequestShard(*(np.asarray(a) for a in shard))


def _as_label(shard: LabelShard) -> LabelShard:
  lp = None if shard.logprobs is None else np.asarray(shard.logprobs)
  return LabelShard(np.asarray(shard.choice), np.asarray(shard.valid), lp)


# --- write ----------------------------------------------------------------------------------
def _commit(directory: str, name: str, kind: str, arrays: dict, rows: int, meta: dict) -> None:
  npz_path, rec_path = _paths(directory, name)
  os.makedirs(directory, exist_ok=True)
  data = _encode(arrays)
  record = {"format": FORMAT, "kind": kind, "name": name, "rows": rows,
            "sha256": hashlib.sha256(data).hexdigest(), "meta": meta}
  tmp = _write_temp(directory, data, ".npz")
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
      _atomic_write(rec_path, (json.dumps(record, sort_keys=True) + "\n").encode())
      failpoint("shards.record_written")
      have["shards"][name] = {"rows": rows, "sha256": record["sha256"]}
      have["kind"] = kind
      have["meta"] = have["meta"] or meta
      _atomic_write(os.path.join(directory, MANIFEST),
                    (json.dumps(have, indent=1, sort_keys=True) + "\n").encode(),
                    "shards.manifest_temp")
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)


def write_requests(directory: str, name: str, shard: RequestShard, meta: dict) -> None:
  """Commits a request shard (see the module docstring); meta: dataset, fingerprint, k, ..."""
  shard = _as_request(shard)
  _check_request(shard, f"request shard {name!r}", meta.get("k"), meta.get("num_items"))
  if "k" not in meta:
    meta = meta | {"k": int(shard.candidates.shape[1])}
  _commit(directory, name, "requests", shard._asdict(), int(shard.session.shape[0]), meta)


def write_labels(directory: str, name: str, shard: LabelShard, meta: dict) -> None:
  """Commits a label shard; meta must hold k (and records backend, model, template_version)."""
  shard = _as_label(shard)
  if "k" not in meta:
    raise DataError(f"label shard {name!r}: meta must record k")
  _check_label(shard, f"label shard {name!r}", int(meta["k"]))
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
  problem = _record_problem(rec, name, kind)
  if problem:
    raise DataError(f"{rec_path}: {problem}")
  return rec


def _load(directory: str, name: str, kind: str) -> tuple[dict, dict]:
  rec = _record(directory, name, kind)
  return _verify(directory, name, rec), rec


def _fields(arrays: dict, fields, optional, where: str) -> list:
  missing = [f for f in fields if f not in arrays and f not in optional]
  if missing:
    raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
  return [arrays.get(f) for f in fields]


def read_requests(directory: str, name: str) -> RequestShard:
  """Reads and verifies a request shard; one-line DataError naming the shard otherwise."""
  arrays, rec = _load(directory, name, "requests")
  where = f"{_paths(directory, name)[0]}: request shard {name!r}"
  shard = RequestShard(*_fields(arrays, RequestShard._fields, (), where))
  _check_request(shard, where, rec["meta"].get("k"), rec["meta"].get("num_items"))
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
  shard = LabelShard(*_fields(arrays, LabelShard._fields, ("logprobs",), where))
  _check_label(shard, where, int(rec["meta"]["k"]))
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
  _atomic_write(os.path.join(directory, DONE), b"")


# --- catalog --------------------------------------------------------------------------------
def write_catalog(directory: str, catalog: Catalog) -> None:
  """Writes DIR/catalog.npz once; an existing one must be the same dataset (fingerprint)."""
  path = os.path.join(directory, CATALOG)
  if os.path.exists(path):
    have = read_catalog(directory)
    if have.fingerprint != catalog.fingerprint:
      raise DataError(f"{path}: catalog of {have.dataset!r} (fingerprint {have.fingerprint}), "
                      f"not {catalog.dataset!r} ({catalog.fingerprint})")
    return
  meta = {k: v for k, v in catalog._asdict().items() if k != "item_text"}
  os.makedirs(directory, exist_ok=True)
  _atomic_write(path, _encode({"meta": np.array(json.dumps(meta)),
                               "item_text": np.asarray(catalog.item_text, dtype=str)}))


def read_catalog(directory: str) -> Catalog:
  path = os.path.join(directory, CATALOG)
  try:
    arrays = read_npz(path, label="not an item catalog")
  except FileNotFoundError:
    raise DataError(f"{path}: no item catalog (written by llm_labeler.sample_requests, or pass "
                    "--env)") from None
  try:
    meta = json.loads(str(arrays["meta"]))
    text = arrays["item_text"]
  except (KeyError, ValueError, RecursionError) as e:
    raise DataError(f"{path}: not an item catalog ({type(e).__name__}: {one_line(e)})") from None
  fields = [f for f in Catalog._fields if f != "item_text"]
  if not isinstance(meta, dict) or sorted(meta) != sorted(fields):
    raise DataError(f"{path}: not an item catalog (meta must hold exactly {', '.join(fields)})")
  names = meta["attribute_names"]
  if not (all(isinstance(meta[f], str) for f in fields if f != "attribute_names")
          and isinstance(names, list) and all(isinstance(a, str) for a in names)):
    raise DataError(f"{path}: not an item catalog (meta values must be strings, "
                    "attribute_names a list of strings)")
  if text.dtype.kind != "U" or text.ndim != 2 or text.shape[1] != len(names):
    raise DataError(f"{path}: item_text is {text.dtype}{list(text.shape)}, expected strings "
                    f"[items, {len(names)} attributes]")
  return Catalog(item_text=text, **(meta | {"attribute_names": tuple(names)}))


def catalog_of(dataset, fingerprint: str) -> Catalog:
  """The Catalog of a `jaxrec.data.Dataset` (fingerprint: jaxrec.envs.build.fingerprint)."""
  return Catalog(dataset=dataset.name, fingerprint=fingerprint, scenario=dataset.scenario,
                 item_noun=dataset.item_noun, behavior=dataset.behavior,
                 attribute_names=tuple(dataset.attribute_names), item_text=dataset.item_text)
