"""KuaiRec 2.0 (Gao et al., CIKM 2022) loader: short-video watching logs, plus the fully observed
small matrix as the EasyRL4Rec / DORL protocol's ground truth.

Files in data_dir (the unzipped `KuaiRec 2.0/data/` folder), comma-separated, header line first:
  big_matrix.csv       user_id, video_id, play_duration, video_duration, time, date, timestamp,
                       watch_ratio: 12.5M logged views of 7,176 users on 10,728 videos.
                       timestamp is unix seconds with milliseconds (1593878903.438).
  small_matrix.csv     the same columns: 1,411 users x 3,327 videos, 99.6% of the cells observed
                       (the rest: users who blocked the video's author). time, date and timestamp
                       are empty on some rows; only user_id, video_id and watch_ratio are read.
  item_categories.csv  video_id, feat: the video's tag ids as a list, `[8]` or `"[27, 9]"`.
Other columns and files (user_features.csv, social_network.csv, ...) are not read.

What the peer does, read from chongminggao/EasyRL4Rec (environments/KuaiRec/KuaiData.py,
environments/KuaiRec/preprocessing_kuairec.py, src/core/util/data.py) and chongminggao/DORL-codes
(environments/KuaiRec/env/KuaiEnv.py):
  - logged reward: `watch_ratio_normed`, the watch_ratio min-max normalised per video over
    big_matrix and small_matrix together (preprocessing_kuairec.py, default --method maxmin);
    0 where that is undefined (0/0, NaN). The user model and the offline buffer read it
    (get_features / get_env_args: yfeat watch_ratio_normed).
  - ground truth (KuaiData.load_mat): small_matrix's watch_ratio clipped at 5, as a dense matrix
    over its sorted user ids x sorted video ids; a missing cell is 0 (scipy csr_matrix.toarray),
    a repeated (user, video) cell is the sum of its rows (csr_matrix adds duplicates), NaN and
    inf cells (after the clip) become the mean watch_ratio of the rows (NaN skipped).
  - the offline data of the batch RL learners (construct_buffer_from_offline_data, KuaiEnv-v0):
    the big_matrix rows of small_matrix's users on small_matrix's videos.

So the Dataset here (`kuairec`) is that block: big_matrix's rows whose user and video are in
small_matrix; `kuairec_big` (load_big) keeps every big_matrix row, for the envs fitted on logs.
Keys are the raw KuaiRec ids ("14", "3650"), so `true_matrix` aligns the ground truth to the
dataset's users and videos by id: after the k-core filter the dataset's users / videos are a
subset of small_matrix's, and the true matrix keeps exactly those rows / columns (the peer's env
evaluates all 1,411 users; here, the ones the filter keeps). Item = video; attribute `tags` (the
tag ids joined with ", ", "unknown" when the video has no line); item_features: one 0/1 column per
tag id (`tag:8`). A user's sequence is their rows sorted by timestamp (ties keep file order;
repeated views stay); times are unix milliseconds; ratings are watch_ratio_normed.
"""

from __future__ import annotations

import re

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.data.interactions import from_interactions
from jaxrec.data.loaders._common import (UNKNOWN, find_file, iter_csv_rows, multi_hot,
                                         read_csv_columns, require_dir, to_int)
from jaxrec.errors import DataError

BIG = "big_matrix.csv"
SMALL = "small_matrix.csv"
CATEGORIES = "item_categories.csv"
ATTRIBUTES = ("tags",)
TRUTH_CLIP = 5.0  # KuaiData.load_mat: df_small.loc[watch_ratio > 5, 'watch_ratio'] = 5
_IDS = (("user_id", "int"), ("video_id", "int"))


def load(data_dir: str) -> Dataset:
  """Reads the KuaiRec files in data_dir into the raw (unfiltered) Dataset of the peer's block."""
  return _load(data_dir, "kuairec", block=True)


def load_big(data_dir: str) -> Dataset:
  """Every big_matrix.csv row (`kuairec_big`), for the envs fitted on logs alone; the same
  rules otherwise. Its users outside small_matrix have no ground truth, so --protocol=peer
  refuses it."""
  return _load(data_dir, "kuairec_big", block=False)


def _load(data_dir: str, name: str, block: bool) -> Dataset:
  require_dir(data_dir, name)
  big_path, small_path, cat_path = (find_file(data_dir, n) for n in (BIG, SMALL, CATEGORIES))
  big = read_csv_columns(big_path, _IDS + (("timestamp", "seconds"), ("watch_ratio", "float_nan")))
  small = _read_small(small_path)
  normed = watch_ratio_normed(big["video_id"], big["watch_ratio"], small["video_id"],
                              small["watch_ratio"])
  keep = np.ones(len(normed), bool)
  if block:
    keep = (np.isin(big["user_id"], small["user_id"])
            & np.isin(big["video_id"], small["video_id"]))
  users, videos = big["user_id"][keep], big["video_id"][keep]
  tags = _read_categories(cat_path, set(np.unique(videos).tolist()))
  return from_interactions(
      name, scenario="short video", item_noun="video", behavior="watching",
      attribute_names=ATTRIBUTES, users=users, items=videos,
      item_text={k: (", ".join(map(str, row)) or UNKNOWN,) for k, row in tags.items()},
      times=big["timestamp"][keep], ratings=normed[keep],
      item_features=multi_hot(tags), source=big_path)


def watch_ratio_normed(big_video: np.ndarray, big_ratio: np.ndarray, small_video: np.ndarray,
                       small_ratio: np.ndarray) -> np.ndarray:
  """[N] float32 watch_ratio of the big_matrix rows, min-max normalised per video over both
  files (preprocessing_kuairec.py, --method maxmin): (r - min) / (max - min), where min / max
  skip NaN as pandas does and keep inf; 0 where that is NaN (0/0, inf/inf, NaN rows)."""
  video = np.concatenate([big_video, small_video])
  ratio = np.concatenate([big_ratio, small_ratio])
  ids, inv = np.unique(video, return_inverse=True)
  lo = np.full(len(ids), np.inf)
  hi = np.full(len(ids), -np.inf)
  np.minimum.at(lo, inv, np.where(np.isnan(ratio), np.inf, ratio))
  np.maximum.at(hi, inv, np.where(np.isnan(ratio), -np.inf, ratio))
  n = len(big_video)
  with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
    out = (big_ratio - lo[inv[:n]]) / (hi[inv[:n]] - lo[inv[:n]])
  return np.where(np.isnan(out), 0.0, out).astype(np.float32)


def true_matrix(data_dir: str, user_keys: np.ndarray, item_keys: np.ndarray) -> np.ndarray:
  """[U, I] float32 ground truth from small_matrix.csv (the peer's rules, module docstring) for
  the given user / video keys in that order; a key small_matrix lacks is a DataError."""
  path = find_file(data_dir, SMALL)
  small = _read_small(path)
  ratio = np.minimum(small["watch_ratio"], TRUTH_CLIP)  # NaN stays NaN, inf becomes 5
  finite = ratio[np.isfinite(ratio)]
  fill = float(finite.mean()) if len(finite) else 0.0
  rows = _positions(path, small["user_id"], user_keys, "user")
  cols = _positions(path, small["video_id"], item_keys, "video")
  keep = (rows >= 0) & (cols >= 0)
  out = np.zeros((len(user_keys), len(item_keys)), np.float64)
  np.add.at(out, (rows[keep], cols[keep]), ratio[keep])
  out[~np.isfinite(out)] = fill
  with np.errstate(over="ignore"):
    out = out.astype(np.float32)
  if not np.isfinite(out).all():  # only from absurd values, e.g. -1e300 (the clip is at +5)
    raise DataError(f"{path}: watch_ratio values beyond float32's range; expected ratios of "
                    "play_duration to video_duration")
  return out


def _positions(path: str, ids: np.ndarray, keys: np.ndarray, what: str) -> np.ndarray:
  """[N] position of each row's id among `keys` [K] (-1: not a key); every key must occur."""
  def missing(key: str) -> DataError:
    return DataError(f"{path}: {what} {key!r} of the dataset has no row in the ground truth "
                     "(the peer's env covers only small_matrix's users and videos)")

  for k in keys.tolist():
    if not re.fullmatch(r"-?\d{1,18}", k):  # KuaiRec's ids are integers
      raise missing(k)
  if len(keys) == 0:
    return np.full(len(ids), -1)
  wanted = keys.astype(np.int64)
  order = np.argsort(wanted, kind="stable")
  at = np.minimum(np.searchsorted(wanted[order], ids), len(keys) - 1)
  hit = wanted[order][at] == ids
  present = np.zeros(len(keys), bool)
  present[order[at[hit]]] = True
  if not present.all():
    raise missing(str(keys[int(np.argmin(present))]))
  return np.where(hit, order[at], -1)


def _read_small(path: str) -> dict[str, np.ndarray]:
  small = read_csv_columns(path, _IDS + (("watch_ratio", "float_nan"),))
  if len(small["user_id"]) == 0:
    raise DataError(f"{path}: no rows after the header")
  return small


def _read_categories(path: str, needed: set[int]) -> dict[str, tuple[int, ...]]:
  """video key -> its tag ids, for the videos in `needed`; the first line of a video wins."""
  col, rows = iter_csv_rows(path, ("video_id", "feat"))
  out: dict[str, tuple[int, ...]] = {}
  for lineno, cells in rows:
    video = to_int(path, lineno, "video_id", cells[col["video_id"]].strip())
    tags = _tag_list(path, lineno, cells[col["feat"]])
    if video in needed and str(video) not in out:
      out[str(video)] = tags
  return out


def _tag_list(path: str, lineno: int, text: str) -> tuple[int, ...]:
  """`[27, 9]` -> (27, 9); the order is the file's (the peer's list_feat)."""
  text = text.strip()
  if not (text.startswith("[") and text.endswith("]")):
    raise DataError(f"{path}:{lineno}: field feat: expected a list of tag ids like [27, 9], "
                    f"got {text!r}")
  inner = text[1:-1].strip()
  if not inner:
    return ()
  tags = tuple(to_int(path, lineno, "feat", t.strip()) for t in inner.split(","))
  return tuple(dict.fromkeys(tags))  # a repeated tag counts once
