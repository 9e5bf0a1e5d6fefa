"""KuaiRand-Pure (Gao et al., CIKM 2022) loader: the standard-feed logs of 27,285 users on the
7,583 videos of the random-exposure pool, as the EasyRL4Rec / DORL peer trains on them.

Files in data_dir (the unzipped `KuaiRand-Pure/data/` folder), comma-separated, header line first:
  log_standard_4_08_to_4_21_pure.csv  user_id, video_id, date, hourmin, time_ms, is_click,
                                      is_like, is_follow, is_comment, is_forward, is_hate,
                                      long_view, play_time_ms, duration_ms, profile_stay_time,
                                      comment_stay_time, is_profile_enter, is_rand, tab
                                      (all integers; time_ms: unix milliseconds).
  video_features_basic_pure.csv       video_id, author_id, video_type, upload_dt, upload_type,
                                      visible_status, video_duration, server_width,
                                      server_height, music_id, music_type, tag; tag holds the
                                      video's tag ids, comma-separated (`8`, `"12,65"`) or empty.
The other files of the download are not read: log_standard_4_22_to_5_08_pure.csv (the peer does
not train on it) and log_random_4_22_to_5_08_pure.csv (the peer's held-out test set of randomly
exposed videos), nor the user features and video statistics.

What the peer does, read from chongminggao/EasyRL4Rec (environments/KuaiRand_Pure/KuaiRandData.py,
environments/KuaiRand_Pure/preprocessing_kuairand.py, src/core/util/data.py):
  - logged data: log_standard_4_08_to_4_21_pure.csv (train_processed.csv), each user's rows
    sorted by (user_id, time_ms) (KuaiRandData.get_df);
  - reward: is_click (get_features: reward_features ["is_click"], get_env_args: yfeat is_click);
  - item features: the tag list of video_features_basic_pure.csv (load_category: eval(f"[{x}]"),
    an empty tag is no tag);
  - ground truth: not in the download; the peer reads a matrix completed by its own MF model
    (MF_results_GT/kuairand_is_click.csv), so `--protocol=peer` needs `--true_matrix` here.

Item = video (key: video_id); attribute `tags` (the tag ids joined with ", "; "unknown" when empty
or when the video has no line); item_features: one 0/1 column per tag id (`tag:12`). A user's
sequence is their rows by time_ms (ties keep file order); ratings are is_click (0 or 1).
"""

from __future__ import annotations

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.data.interactions import from_interactions
from jaxrec.data.loaders._common import (UNKNOWN, find_file, iter_csv_rows, multi_hot,
                                         read_csv_columns, require_dir, to_int)

LOG = "log_standard_4_08_to_4_21_pure.csv"
VIDEOS = "video_features_basic_pure.csv"
ATTRIBUTES = ("tags",)


def load(data_dir: str) -> Dataset:
  """Reads the KuaiRand-Pure files in data_dir into the raw (unfiltered) Dataset."""
  require_dir(data_dir, "kuairand")
  log_path, video_path = find_file(data_dir, LOG), find_file(data_dir, VIDEOS)
  log = read_csv_columns(log_path, (("user_id", "int"), ("video_id", "int"),
                                    ("time_ms", "int"), ("is_click", "flag")))
  tags = _read_tags(video_path, set(np.unique(log["video_id"]).tolist()))
  return from_interactions(
      "kuairand", scenario="short video", item_noun="video", behavior="watching",
      attribute_names=ATTRIBUTES, users=log["user_id"], items=log["video_id"],
      item_text={k: (", ".join(map(str, row)) or UNKNOWN,) for k, row in tags.items()},
      times=log["time_ms"], ratings=log["is_click"].astype(np.float32),
      item_features=multi_hot(tags), source=log_path)


def _read_tags(path: str, needed: set[int]) -> dict[str, tuple[int, ...]]:
  """video key -> its tag ids, for the videos in `needed`; the first line of a video wins."""
  col, rows = iter_csv_rows(path, ("video_id", "tag"))
  out: dict[str, tuple[int, ...]] = {}
  for lineno, cells in rows:
    video = to_int(path, lineno, "video_id", cells[col["video_id"]].strip())
    text = cells[col["tag"]].strip()
    tags = tuple(to_int(path, lineno, "tag", t.strip()) for t in text.split(",")) if text else ()
    if video in needed and str(video) not in out:
      out[str(video)] = tuple(dict.fromkeys(tags))
  return out
