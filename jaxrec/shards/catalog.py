"""The item catalog of a request directory (DIR/catalog.npz): the item text prompts need."""

from __future__ import annotations

import json
import os

import numpy as np

from jaxrec.errors import DataError
from jaxrec.io import one_line, read_npz
from jaxrec.shards.format import CATALOG, Catalog, encode
from jaxrec.shards.store import atomic_write


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
  atomic_write(path, encode({"meta": np.array(json.dumps(meta)),
                               "item_text": np.asarray(catalog.item_text, dtype=str)}))


def read_catalog(directory: str) -> Catalog:
  path = os.path.join(directory, CATALOG)
  try:
    arrays = read_npz(path, label="not an item catalog")
  except FileNotFoundError:
    raise DataError(f"{path}: no item catalog (written by jaxrec.sample_requests, or pass "
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
