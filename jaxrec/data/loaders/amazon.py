"""Amazon Review Data (2018) loader: one category's reviews -> per-user purchase sequences.

Files in data_dir, JSON lines (one object per line), UTF-8, plain or gzipped (`.gz` suffix):
  reviews   exactly one file whose name ends in `.json` or `.json.gz` and does not start with
            `meta_`, e.g. `Clothing_Shoes_and_Jewelry_5.json.gz`. Fields used: `reviewerID`
            (string), `asin` (string), `unixReviewTime` (integer, unix seconds), `overall`
            (rating, optional).
  metadata  exactly one `meta_*.json` or `meta_*.json.gz`, e.g.
            `meta_Clothing_Shoes_and_Jewelry.json.gz`. Fields used: `asin`, `title`,
            `category` (list of strings), `brand`.
Other fields and other files are ignored.

Item = product (key: the asin). Attributes `title; category; brand`:
  title     HTML entities decoded, whitespace collapsed.
  category  the last non-empty entry of the list. The list runs from the top-level category
            (the same for every item of a file, so useless to tell items apart) down to the most
            specific one.
  brand     as title.
A missing or empty value is "unknown"; an asin without a metadata line is "unknown" throughout;
when an asin has several metadata lines the first one wins.

A user's sequence is their reviews sorted by unixReviewTime (ties keep file order): the review
date stands in for the purchase date. Exact duplicate reviews (same reviewerID, asin and
unixReviewTime, which the 2018 dumps contain) are kept once. Ratings (`overall`) are kept when
every review has one; otherwise the dataset has no ratings.
"""

from __future__ import annotations

import html
import json
import os

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.data.interactions import from_interactions
from jaxrec.data.loaders._common import (UNKNOWN, clean_text, iter_lines, require_dir, to_float,
                                         to_int)
from jaxrec.errors import DataError

ATTRIBUTES = ("title", "category", "brand")


def load(data_dir: str) -> Dataset:
  """Reads the reviews and metadata files in data_dir into the raw (unfiltered) Dataset."""
  require_dir(data_dir, "amazon")
  reviews_path, meta_path = _find_files(data_dir)
  users, items, times, ratings = _read_reviews(reviews_path)
  item_text = _read_metadata(meta_path, set(items))
  users, items, times = np.array(users, str), np.array(items, str), np.array(times, np.int64)
  keep = _first_of_duplicates(users, items, times)
  ratings = None if ratings is None else np.array(ratings, np.float32)[keep]
  return from_interactions(
      "amazon", scenario="e-commerce", item_noun="product", behavior="purchase",
      attribute_names=ATTRIBUTES, users=users[keep], items=items[keep], item_text=item_text,
      times=times[keep], ratings=ratings, source=reviews_path)


def _find_files(data_dir: str) -> tuple[str, str]:
  names = sorted(n for n in os.listdir(data_dir)
                 if os.path.isfile(os.path.join(data_dir, n))
                 and (n.endswith(".json") or n.endswith(".json.gz")))
  meta = [n for n in names if n.startswith("meta_")]
  reviews = [n for n in names if not n.startswith("meta_")]
  for found, what in ((reviews, "reviews file (*.json[.gz] not starting with meta_)"),
                      (meta, "metadata file (meta_*.json[.gz])")):
    if len(found) != 1:
      listed = ", ".join(found) if found else "none"
      raise DataError(f"{data_dir}: expected exactly one {what}, found {listed}")
  return os.path.join(data_dir, reviews[0]), os.path.join(data_dir, meta[0])


def _read_reviews(path: str):
  """Lists of user, asin, time and rating per review; ratings is None unless all have one."""
  users, items, times, ratings = [], [], [], []
  for lineno, line in iter_lines(path, "utf-8"):
    obj = _parse_json(path, lineno, line)
    users.append(_json_id(path, lineno, obj, "reviewerID"))
    items.append(_json_id(path, lineno, obj, "asin"))
    times.append(_json_int(path, lineno, obj, "unixReviewTime"))
    value = obj.get("overall")
    # A present rating is still validated after one review lacked it: bad data stays an error.
    ratings.append(None if value is None else _json_float(path, lineno, value))
  return users, items, times, (None if None in ratings else ratings)


def _read_metadata(path: str, needed: set[str]) -> dict[str, tuple[str, str, str]]:
  text: dict[str, tuple[str, str, str]] = {}
  for lineno, line in iter_lines(path, "utf-8"):
    obj = _parse_json(path, lineno, line)
    asin = _json_id(path, lineno, obj, "asin")
    if asin in text or asin not in needed:
      continue
    category = obj.get("category")
    if isinstance(category, str):
      category = [category]
    if category is not None and not (
        isinstance(category, list) and all(isinstance(c, str) for c in category)):
      raise DataError(f"{path}:{lineno}: field category: expected a list of strings, "
                      f"got {type(category).__name__}")
    specific = [c for c in map(_display, category or ()) if c != UNKNOWN]
    text[asin] = (_display(_json_text(path, lineno, obj, "title")),
                  specific[-1] if specific else UNKNOWN,
                  _display(_json_text(path, lineno, obj, "brand")))
  return text


def _first_of_duplicates(users: np.ndarray, items: np.ndarray, times: np.ndarray) -> np.ndarray:
  """[N'] sorted indices of the first occurrence of each (user, item, time) triple."""
  if len(users) == 0:
    return np.zeros(0, np.int64)
  _, u = np.unique(users, return_inverse=True)
  _, i = np.unique(items, return_inverse=True)
  triples = np.stack([u.ravel(), i.ravel(), times], axis=1)
  _, first = np.unique(triples, axis=0, return_index=True)
  return np.sort(first)


def _display(value: str | None) -> str:
  return clean_text(None if value is None else html.unescape(value))


def _parse_json(path: str, lineno: int, line: str) -> dict:
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
  except RecursionError:
    raise DataError(f"{path}:{lineno}: malformed JSON (nested too deeply)") from None
  if not isinstance(obj, dict):
    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
  return obj


def _json_id(path: str, lineno: int, obj: dict, field: str) -> str:
  value = obj.get(field)
  if value is None:
    raise DataError(f"{path}:{lineno}: field {field}: missing")
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise DataError(f"{path}:{lineno}: field {field}: expected a string id, "
                    f"got {type(value).__name__}")
  value = str(value).strip()
  if not value:
    raise DataError(f"{path}:{lineno}: field {field}: empty")
  return value


def _json_text(path: str, lineno: int, obj: dict, field: str) -> str | None:
  value = obj.get(field)
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return str(value)
  raise DataError(f"{path}:{lineno}: field {field}: expected a string, got {type(value).__name__}")


def _json_int(path: str, lineno: int, obj: dict, field: str) -> int:
  value = obj.get(field)
  if value is None:
    raise DataError(f"{path}:{lineno}: field {field}: missing")
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise DataError(f"{path}:{lineno}: field {field}: expected an integer, got {value!r}")
  return to_int(path, lineno, field, value)


def _json_float(path: str, lineno: int, value: object) -> float:
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    raise DataError(f"{path}:{lineno}: field overall: expected a number, got {value!r}")
  return to_float(path, lineno, "overall", str(value))
