"""Small but real-format copies of each loader's files, written into tmp_path.

The expected values the tests assert are spelled out beside each fixture's rows.
"""

from __future__ import annotations

import gzip
import json
import pathlib

import numpy as np
import pytest


def write_lines(path: pathlib.Path, lines: list[str], encoding: str = "utf-8") -> pathlib.Path:
  """Writes lines (newline-terminated) plainly, or gzipped when the name ends in .gz."""
  path.parent.mkdir(parents=True, exist_ok=True)
  data = "".join(line + "\n" for line in lines).encode(encoding)
  if path.name.endswith(".gz"):
    data = gzip.compress(data)
  path.write_bytes(data)
  return path


# --- Last.fm ----------------------------------------------------------------------------------
# user 1 by time: 1001 (t=100, line 2), 1000 (t=100, line 7: tie keeps file order), 1002, 1000.
# user 2 by time: 1000, 1001, 1003. Track 1001's album is that of its first event (100, not 102);
# track 1003 and album 103 have no name rows.
LASTFM_EVENTS = [
    "1\t10\t100\t1000\t300",
    "1\t10\t100\t1001\t100",
    "1\t11\t101\t1002\t200",
    "2\t10\t100\t1000\t50",
    "2\t10\t102\t1001\t60",
    "2\t12\t103\t1003\t70",
    "1\t10\t100\t1000\t100",
]


@pytest.fixture(params=["plain", "gz"])
def lastfm_dir(tmp_path, request) -> pathlib.Path:
  root = tmp_path / "lastfm"
  suffix = ".gz" if request.param == "gz" else ""
  write_lines(root / f"LFM-1b_LEs.txt{suffix}", LASTFM_EVENTS)
  write_lines(root / "LFM-1b_tracks.txt", [
      "1000\tSong A\t10", "1001\tSong  B \t10", "1002\tSóng C ü\t11", "1000\tNot first\t10"])
  write_lines(root / "LFM-1b_albums.txt", [
      "100\tAlbum X\t10", "101\tAlbum Y\t11", "102\tAlbum Z\t10"])
  write_lines(root / "LFM-1b_artists.txt", ["10\tArtist P", "11\tArtist Q", "12\tArtist R"])
  return root


# --- Amazon -----------------------------------------------------------------------------------
# A1 by time: B02 (100), B03 (200), B01 (300); the repeated B02 review is a duplicate.
# A2 by time: B04 (150, no metadata), B01 (200).
AMAZON_REVIEWS = [
    {"reviewerID": "A1", "asin": "B01", "unixReviewTime": 300, "overall": 5.0,
     "reviewText": "warm", "reviewTime": "01 1, 2018", "verified": True},
    {"reviewerID": "A1", "asin": "B02", "unixReviewTime": 100, "overall": 3.0},
    {"reviewerID": "A2", "asin": "B01", "unixReviewTime": 200, "overall": 4.0},
    {"reviewerID": "A1", "asin": "B03", "unixReviewTime": 200, "overall": 1.0},
    {"reviewerID": "A1", "asin": "B02", "unixReviewTime": 100, "overall": 3.0},
    {"reviewerID": "A2", "asin": "B04", "unixReviewTime": 150, "overall": 2.0},
]
AMAZON_META = [
    {"asin": "B01", "title": "Warm &amp; Cozy  Coat",
     "category": ["Clothing, Shoes & Jewelry", "Women", "Coats"], "brand": "Acme"},
    {"asin": "B02", "title": "Boots", "category": ["Clothing, Shoes & Jewelry", "Men", ""],
     "brand": ""},
    {"asin": "B01", "title": "Second line for B01", "category": ["X"], "brand": "Other"},
    {"asin": "B03", "title": "Hat", "category": []},
    {"asin": "B99", "title": "Never reviewed", "category": ["Y"], "brand": "Z"},
]


@pytest.fixture(params=["plain", "gz"])
def amazon_dir(tmp_path, request) -> pathlib.Path:
  root = tmp_path / "amazon"
  suffix = ".gz" if request.param == "gz" else ""
  write_lines(root / f"Clothing_5.json{suffix}", [json.dumps(r) for r in AMAZON_REVIEWS])
  write_lines(root / f"meta_Clothing.json{suffix}", [json.dumps(m) for m in AMAZON_META])
  (root / "README.txt").write_text("not data\n")
  return root


# --- Coat -------------------------------------------------------------------------------------
# user 0: train items 2, 5, 7 (ratings 1, 4, 5) then test items 3, 5 (ratings 2, 3).
# user 1: train 10 (3). user 2: test 7 (4). user 289: train 299 (2). 5 train, 3 test ratings.
COAT_TRAIN = {(0, 2): 1, (0, 5): 4, (0, 7): 5, (1, 10): 3, (289, 299): 2}
COAT_TEST = {(0, 3): 2, (0, 5): 3, (2, 7): 4}
COAT_ITEM_MAP = ["gender:men", "gender:women", "jackettype:bomber", "jackettype:parkas",
                 "color:black", "color:navy", "onfrontpage:yes", "onfrontpage:no"]
# item 2: men bomber black; item 5: women parkas navy; item 3: both genders, bomber; item 7: none.
COAT_ITEM_ROWS = {2: [1, 0, 1, 0, 1, 0, 1, 0], 5: [0, 1, 0, 1, 0, 1, 0, 1],
                  3: [1, 1, 1, 0, 0, 0, 0, 1]}
COAT_USER_MAP = ["gender:men", "gender:women", "age:over 60"]
COAT_USER_ROWS = {0: [1, 0, 1], 289: [0, 1, 0]}


def coat_matrix(cells: dict, rows: int, cols: int) -> np.ndarray:
  out = np.zeros((rows, cols), np.int64)
  for (r, c), v in cells.items():
    out[r, c] = v
  return out


def write_matrix(path: pathlib.Path, m: np.ndarray, fmt: str = "%d") -> None:
  write_lines(path, [" ".join(fmt % v for v in row) for row in m], "ascii")


def write_coat(root: pathlib.Path, fmt: str = "%d") -> pathlib.Path:
  write_matrix(root / "train.ascii", coat_matrix(COAT_TRAIN, 290, 300), fmt)
  write_matrix(root / "test.ascii", coat_matrix(COAT_TEST, 290, 300), fmt)
  feat = root / "user_item_features"
  write_matrix(feat / "item_features.ascii", np.array(
      [COAT_ITEM_ROWS.get(i, [0] * len(COAT_ITEM_MAP)) for i in range(300)]), fmt)
  write_lines(feat / "item_features_map.txt", COAT_ITEM_MAP)
  write_matrix(feat / "user_features.ascii", np.array(
      [COAT_USER_ROWS.get(u, [0] * len(COAT_USER_MAP)) for u in range(290)]), fmt)
  write_lines(feat / "user_features_map.txt", COAT_USER_MAP)
  return root


@pytest.fixture
def coat_dir(tmp_path) -> pathlib.Path:
  return write_coat(tmp_path / "coat")


# --- MovieLens --------------------------------------------------------------------------------
# user 1 by time: 20 (100), 30 (200), 10 (300); user 2: 10 (200). Item 40 is rated but unlisted.
ML_RATINGS = [(1, 10, 4, 300), (1, 20, 5, 100), (2, 10, 3, 200), (1, 30, 2, 200),
              (2, 40, 1, 250)]


def _flags(on: set[int]) -> str:
  return "|".join("1" if g in on else "0" for g in range(19))


@pytest.fixture
def ml100k_dir(tmp_path) -> pathlib.Path:
  root = tmp_path / "ml-100k"
  write_lines(root / "u.data", ["\t".join(map(str, r)) for r in ML_RATINGS])
  write_lines(root / "u.item", [
      "10|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
      + _flags({3, 4, 5}),
      "20|Misérables, Les (1995)|01-Jan-1995||http://x|" + _flags({8, 12}),
      "30|No Year Film|05-Mar-1997||http://y|" + _flags({0}),
  ], encoding="latin-1")
  return root


@pytest.fixture
def ml1m_dir(tmp_path) -> pathlib.Path:
  root = tmp_path / "ml-1m"
  write_lines(root / "ratings.dat", ["::".join(map(str, r)) for r in ML_RATINGS])
  write_lines(root / "movies.dat", [
      "10::Toy Story (1995)::Animation|Children's|Comedy",
      "20::Misérables, Les (1995)::Drama|Musical",
      "30::No Year Film::(no genres listed)",
  ], encoding="latin-1")
  write_lines(root / "users.dat", ["1::F::1::10::48067"])
  return root


@pytest.fixture
def recbole_dir(tmp_path) -> pathlib.Path:
  root = tmp_path / "recbole"
  # Columns deliberately out of RecBole's usual order: the loader must go by header names.
  write_lines(root / "ml-tiny.inter", ["timestamp:float\titem_id:token\tuser_id:token\t"
                                           "rating:float"] + [
      f"{t}.0\t{i}\t{u}\t{r}" for u, i, r, t in ML_RATINGS])
  write_lines(root / "ml-tiny.item", [
      "class:token_seq\titem_id:token\tmovie_title:token_seq\trelease_year:token",
      "Animation Children's Comedy\t10\tToy Story\t1995",
      "Drama Musical\t20\tMisérables, Les (1995)\tV",
      "unknown\t30\tNo Year Film\tunkonwn",
  ])
  return root


# --- KuaiRec ----------------------------------------------------------------------------------
# big_matrix rows: user 99 and video 9999 are outside small_matrix, so those rows are not in the
# dataset (user 99's watch of 148 still counts in 148's min-max). User 14 by time: 148, 3650,
# 183; user 21: 183 twice at the same timestamp (file order: 2.0 then 0.4).
KUAIREC_HEADER = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio"
KUAIREC_BIG = [
    "14,3650,13838,10867,2020-07-05 00:08:23.438,20200705,1593878903.438,1.2",
    "14,148,4381,6067,2020-07-05 00:05:00.000,20200705,1593878700.0,0.5",
    "14,9999,851,7908,2020-07-05 00:06:40.000,20200705,1593878800.0,3.0",
    "99,148,862,9590,2020-07-05 00:20:26.792,20200705,1593879626.792,0.7",
    "21,183,11635,6100,2020-07-05 05:28:00.057,20200705,1593898080.057,2.0",
    "21,183,4479,7908,2020-07-05 05:28:00.057,20200705,1593898080.057,0.4",
    "14,183,4602,11000,2020-07-05 00:09:10.500,20200705,1593878950.5,1.0",
]
# small_matrix: 14 x 3650 is missing (-> 0), 14 x 183 is clipped at 5, 21 x 183 is written twice
# (the peer's csr_matrix sums: 0.7), 21 x 3650 has an empty watch_ratio (NaN -> the mean of the
# clipped rows, (0.9 + 5 + 0.2 + 0.6 + 0.1) / 5 = 1.36); rows with empty times as in the real file.
KUAIREC_SMALL = [
    "14,148,4381,6067,2020-07-05 05:27:48.378,20200705.0,1593898068.378,0.9",
    "14,183,11635,6100,2020-07-05 05:28:00.057,20200705.0,1593898080.057,7.5",
    "21,148,4479,7908,,,,0.2",
    "21,183,4602,11000,,,,0.6",
    "21,183,4602,11000,,,,0.1",
    "21,3650,4602,11000,,,,",
]
KUAIREC_TRUTH = [[0.9, 5.0, 0.0], [0.2, 0.7, 1.36]]  # users 14, 21 x videos 148, 183, 3650
KUAIREC_CATEGORIES = ["148,[8]", '183,"[27, 9]"', "3650,[]", "9999,[1]", "148,[5]"]


def write_kuairec(root: pathlib.Path) -> pathlib.Path:
  write_lines(root / "big_matrix.csv", [KUAIREC_HEADER] + KUAIREC_BIG)
  write_lines(root / "small_matrix.csv", [KUAIREC_HEADER] + KUAIREC_SMALL)
  write_lines(root / "item_categories.csv", ["video_id,feat"] + KUAIREC_CATEGORIES)
  return root


@pytest.fixture
def kuairec_dir(tmp_path) -> pathlib.Path:
  return write_kuairec(tmp_path / "kuairec")


# --- KuaiRand-Pure ----------------------------------------------------------------------------
# user 0 by time_ms: 7 (clicked), 3, 7 again; user 5: 3 (clicked). Video 3's tags are "12,65",
# video 7 has an empty tag, video 8 is never watched.
KUAIRAND_HEADER = ("user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,"
                   "is_forward,is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,"
                   "comment_stay_time,is_profile_enter,is_rand,tab")
KUAIRAND_LOG = [
    "0,3,20220408,1200,1649390500000,0,0,0,0,0,0,0,1200,104400,0,0,0,0,1",
    "0,7,20220408,1100,1649390400000,1,1,0,0,0,0,1,151024,104400,0,0,0,0,1",
    "5,3,20220409,900,1649466000000,1,0,0,0,0,0,1,9000,8000,0,0,0,0,0",
    "0,7,20220410,800,1649548800000,0,0,0,0,0,0,0,300,104400,0,0,0,0,4",
]
KUAIRAND_VIDEO_HEADER = ("video_id,author_id,video_type,upload_dt,upload_type,visible_status,"
                         "video_duration,server_width,server_height,music_id,music_type,tag")
KUAIRAND_VIDEOS = [
    '3,441,NORMAL,2020-07-08,ShortImport,1,17200.0,720,1280,989206467,4,"12,65"',
    "7,442,AD,2021-01-01,ShortImport,1,,720,1280,0,9,",
    "8,443,NORMAL,2021-01-02,ShortImport,1,5000.0,720,1280,0,9,3",
]


def write_kuairand(root: pathlib.Path) -> pathlib.Path:
  write_lines(root / "log_standard_4_08_to_4_21_pure.csv", [KUAIRAND_HEADER] + KUAIRAND_LOG)
  write_lines(root / "video_features_basic_pure.csv", [KUAIRAND_VIDEO_HEADER] + KUAIRAND_VIDEOS)
  return root


@pytest.fixture
def kuairand_dir(tmp_path) -> pathlib.Path:
  return write_kuairand(tmp_path / "kuairand")
