"""The shard format: names, the request / label / catalog record types, the per-shard record
and array checks, and the npz encoding (see jaxrec.shards for the directory layout)."""

from __future__ import annotations

import io
import re
from typing import NamedTuple

import numpy as np

from jaxrec.errors import DataError

FORMAT = 1
MANIFEST = "manifest.json"
CATALOG = "catalog.npz"
DONE = "DONE"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_RESERVED = {"manifest", "catalog", "DONE"}
KINDS = ("requests", "labels")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# Candidates per request: each of the k + 1 labels (k candidates and "None") is one lowercase
# letter in the prompts, so k <= 25.
MAX_K = 25
# The prompt template of LEA's augmentation requests (jaxrec.offline.augment; rendered by
# llm_labeler.prompts): k candidates, no "None" option. Requests without a template_version
# are the Table 1 preference requests.
LEA_TEMPLATE = "lea-select-v1"
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


# --- shard records ---------------------------------------------------------------------------
def is_count(value, least: int = 0) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= least


def is_entry(entry) -> bool:
  """A manifest entry {rows, sha256} of the right types."""
  return (isinstance(entry, dict) and is_count(entry.get("rows"))
          and isinstance(entry.get("sha256"), str) and bool(_SHA256_RE.fullmatch(entry["sha256"])))


def is_shard_name(name) -> bool:
  try:
    check_name(name)
  except DataError:
    return False
  return True


def short(value) -> str:
  text = repr(value)
  return text if len(text) <= 40 else text[:37] + "..."


def record_problem(rec: dict, name: str, kind: str) -> str | None:
  """What is wrong with a shard record of `name` expected to be of `kind`, or None."""
  if rec.get("format") != FORMAT or rec.get("name") != name or rec.get("kind") != kind:
    return f"not a {kind} shard record of {name!r} (format {FORMAT})"
  if not is_entry(rec):
    return (f"rows {short(rec.get('rows'))} / sha256 {short(rec.get('sha256'))}: expected a "
            "row count and a hex sha256")
  meta = rec.get("meta")
  if not isinstance(meta, dict):
    return f"meta {short(meta)}: expected a JSON object"
  if kind == "labels" and "k" not in meta:
    return "meta has no k"
  for key in ("k", "num_items", "history_len"):
    if key in meta and not is_count(meta[key], 1):
      return f"meta {key} {short(meta[key])}: expected a positive integer"
  return None


# --- encode / decode ------------------------------------------------------------------------
_REQUEST_DTYPES = {"session": np.int32, "step": np.int32, "history": np.int32,
                   "candidates": np.int32, "user": np.int32}
_LABEL_DTYPES = {"choice": np.int32, "valid": np.bool_, "logprobs": np.float32}


def encode(arrays: dict[str, np.ndarray]) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def check_request(shard: RequestShard, where: str, k: int | None = None,
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


def check_label(shard: LabelShard, where: str, k: int) -> None:
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


def as_request(shard: RequestShard) -> RequestShard:
  return RequestShard(*(np.asarray(a) for a in shard))


def as_label(shard: LabelShard) -> LabelShard:
  lp = None if shard.logprobs is None else np.asarray(shard.logprobs)
  return LabelShard(np.asarray(shard.choice), np.asarray(shard.valid), lp)


def fields_of(arrays: dict, fields, optional, where: str) -> list:
  missing = [f for f in fields if f not in arrays and f not in optional]
  if missing:
    raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
  return [arrays.get(f) for f in fields]
