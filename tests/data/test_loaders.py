"""The four real-format loaders on small files in their real formats, good and bad."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxrec.data import Dataset, PrepConfig, load_dataset, load_raw, split_chronological
from jaxrec.data.loaders import _common
from jaxrec.errors import DataError

from .conftest import (AMAZON_META, AMAZON_REVIEWS, COAT_ITEM_MAP, COAT_USER_MAP, ML_RATINGS,
                       coat_matrix, write_coat, write_lines, write_matrix)

REPO = pathlib.Path(__file__).resolve().parents[2]
KEEP_ALL = PrepConfig(min_user=1, min_item=1)


def load(name: str, data_dir) -> Dataset:
  return load_dataset(name, str(data_dir), KEEP_ALL)


def user_row(ds, user_key: str) -> int:
  return ds.user_keys.tolist().index(user_key)


def seq_keys(ds, user_key: str) -> list[str]:
  return ds.item_keys[ds.sequence(user_row(ds, user_key))].tolist()


def user_values(ds, array: np.ndarray, user_key: str) -> list:
  u = user_row(ds, user_key)
  return array[ds.offsets[u]:ds.offsets[u + 1]].tolist()


def text(ds, item_key: str) -> tuple[str, ...]:
  return tuple(ds.item_text[ds.item_keys.tolist().index(item_key)].tolist())


def expect_error(name: str, data_dir, *fragments: str) -> str:
  with pytest.raises(DataError) as e:
    load_raw(name, str(data_dir))
  msg = str(e.value)
  assert "\n" not in msg
  for fragment in fragments:
    assert fragment in msg, msg
  return msg


# --- Last.fm ----------------------------------------------------------------------------------
def test_lastfm_sequences_text_and_prompt_words(lastfm_dir):
  ds = load("lastfm", lastfm_dir)
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (2, 4, 7)
  assert (ds.scenario, ds.item_noun, ds.behavior) == ("music streaming", "track", "listening")
  assert ds.attribute_names == ("title", "album", "artist")
  assert seq_keys(ds, "1") == ["1001", "1000", "1002", "1000"]
  assert user_values(ds, ds.times, "1") == [100, 100, 200, 300]
  assert seq_keys(ds, "2") == ["1000", "1001", "1003"]
  assert text(ds, "1000") == ("Song A", "Album X", "Artist P")
  assert text(ds, "1001") == ("Song B", "Album X", "Artist P")
  assert text(ds, "1002") == ("Sóng C ü", "Album Y", "Artist Q")
  assert text(ds, "1003") == ("unknown", "unknown", "Artist R")
  assert not ds.has_ratings


def test_lastfm_bad_inputs(tmp_path, lastfm_dir):
  events = next(lastfm_dir.glob("LFM-1b_LEs.txt*"))
  name = events.name
  ok = "1\t10\t100\t1000\t300"
  write_lines(events, [ok, "", "2\t10\t100"])  # the blank line still counts
  expect_error("lastfm", lastfm_dir, f"{name}:3: expected 5 tab-separated fields (user-id, "
               "artist-id, album-id, track-id, timestamp), got 3")
  write_lines(events, [ok, "1\t10\t100\t1000\t2019-01-01"])
  expect_error("lastfm", lastfm_dir, f"{name}:2: field timestamp: expected an integer, "
               "got '2019-01-01'")
  write_lines(events, ["x\t10\t100\t1000\t3"])
  expect_error("lastfm", lastfm_dir, f"{name}:1: field user-id")
  write_lines(events, [])
  expect_error("lastfm", lastfm_dir, f"{name}: no interactions")
  write_lines(events, [ok])
  (lastfm_dir / "LFM-1b_tracks.txt").write_bytes(b"1000\tok\t10\n1001\tbad \xff\t10\n")
  expect_error("lastfm", lastfm_dir, "LFM-1b_tracks.txt:2: not valid utf-8")
  (lastfm_dir / "LFM-1b_tracks.txt").write_bytes(b"1000\tno artist column\n")
  expect_error("lastfm", lastfm_dir, "LFM-1b_tracks.txt:1: expected 3 tab-separated fields")
  os.remove(lastfm_dir / "LFM-1b_albums.txt")
  expect_error("lastfm", lastfm_dir, "LFM-1b_albums.txt: file not found (or LFM-1b_albums.txt.gz)")
  expect_error("lastfm", tmp_path / "missing", "missing: not a directory")


@pytest.mark.parametrize("lastfm_dir", ["gz"], indirect=True)
def test_lastfm_truncated_gzip_is_a_data_error(lastfm_dir):
  events = lastfm_dir / "LFM-1b_LEs.txt.gz"
  events.write_bytes(events.read_bytes()[:-12])
  expect_error("lastfm", lastfm_dir, "LFM-1b_LEs.txt.gz:", "unreadable")


def test_read_int_columns_across_blocks(tmp_path):
  path = write_lines(tmp_path / "ints.txt", ["1\t2", "3\t4", "", "5\t6", "7\t8", "9\tz"])
  names = ("a", "b")
  # 5-byte blocks hold about one line each: line numbers must carry across blocks.
  with pytest.raises(DataError, match=r"ints\.txt:6: field b: expected an integer, got 'z'"):
    _common.read_int_columns(str(path), names, block_bytes=5)
  write_lines(path, ["1\t2", "3\t4", "", "5\t6", "7\t8", "9\t10"])
  for block_bytes in (1, 5, 7, 1 << 20):
    np.testing.assert_array_equal(
        _common.read_int_columns(str(path), names, block_bytes=block_bytes),
        [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]])
  write_lines(path, ["1\t2", "3\t4\t5"])
  with pytest.raises(DataError, match=r"ints\.txt:2: expected 2 tab-separated fields \(a, b\), "
                     r"got 3"):
    _common.read_int_columns(str(path), names, block_bytes=1)
  write_lines(path, ["1\t99999999999999999999"])
  with pytest.raises(DataError, match=r"ints\.txt:1: field b: integer .* out of the int64"):
    _common.read_int_columns(str(path), names)
  write_lines(path, ["1\t1_000"])
  with pytest.raises(DataError, match=r"ints\.txt:1: field b: expected an integer"):
    _common.read_int_columns(str(path), names)
  path.write_bytes(b"1::2\n3::4")  # no final newline
  np.testing.assert_array_equal(
      _common.read_int_columns(str(path), names, sep=b"::", block_bytes=3), [[1, 2], [3, 4]])


# --- Amazon -----------------------------------------------------------------------------------
def test_amazon_sequences_text_ratings_gzip(amazon_dir):
  ds = load("amazon", amazon_dir)
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (2, 4, 5)
  assert (ds.scenario, ds.item_noun, ds.behavior) == ("e-commerce", "product", "purchase")
  assert ds.attribute_names == ("title", "category", "brand")
  assert seq_keys(ds, "A1") == ["B02", "B03", "B01"]  # the duplicate B02 review is dropped
  assert user_values(ds, ds.ratings, "A1") == [3.0, 1.0, 5.0]
  assert user_values(ds, ds.times, "A1") == [100, 200, 300]
  assert seq_keys(ds, "A2") == ["B04", "B01"]
  assert user_values(ds, ds.ratings, "A2") == [2.0, 4.0]
  assert text(ds, "B01") == ("Warm & Cozy Coat", "Coats", "Acme")  # first metadata line wins
  assert text(ds, "B02") == ("Boots", "Men", "unknown")
  assert text(ds, "B03") == ("Hat", "unknown", "unknown")
  assert text(ds, "B04") == ("unknown", "unknown", "unknown")


def _amazon_files(d: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  return next(d.glob("Clothing_5.json*")), next(d.glob("meta_*"))


def test_amazon_without_every_rating_has_no_ratings(amazon_dir):
  reviews, _ = _amazon_files(amazon_dir)
  rows = [dict(r) for r in AMAZON_REVIEWS]
  del rows[2]["overall"]
  write_lines(reviews, [json.dumps(r) for r in rows])
  ds = load("amazon", amazon_dir)
  assert not ds.has_ratings and ds.num_interactions == 5


def test_amazon_bad_inputs(amazon_dir):
  reviews, meta = _amazon_files(amazon_dir)
  good = [json.dumps(r) for r in AMAZON_REVIEWS]
  write_lines(reviews, good[:1] + ['{"reviewerID": "A3", "asin": "B01", '])
  expect_error("amazon", amazon_dir, f"{reviews.name}:2: malformed JSON")
  write_lines(reviews, good[:2] + ['{"reviewerID": "A3", "asin": "B01"}'])
  expect_error("amazon", amazon_dir, f"{reviews.name}:3: field unixReviewTime: missing")
  write_lines(reviews, ['{"reviewerID": "A3", "asin": "B01", "unixReviewTime": "soon"}'])
  expect_error("amazon", amazon_dir, f"{reviews.name}:1: field unixReviewTime: expected an "
               "integer, got 'soon'")
  write_lines(reviews, ['{"reviewerID": "A3", "asin": "B01", "unixReviewTime": 5, '
                        '"overall": "five"}'])
  expect_error("amazon", amazon_dir, f"{reviews.name}:1: field overall: expected a number")
  write_lines(reviews, ['["not", "an", "object"]'])
  expect_error("amazon", amazon_dir, f"{reviews.name}:1: expected a JSON object")
  write_lines(reviews, [])
  expect_error("amazon", amazon_dir, f"{reviews.name}: no interactions")
  write_lines(reviews, good)
  write_lines(meta, [json.dumps(m) for m in AMAZON_META[:2]] + ["{bad json"])
  expect_error("amazon", amazon_dir, f"{meta.name}:3: malformed JSON")
  write_lines(meta, ['{"asin": "B01", "category": {"a": 1}}'])
  expect_error("amazon", amazon_dir, f"{meta.name}:1: field category: expected a list")
  os.remove(meta)
  expect_error("amazon", amazon_dir, "expected exactly one metadata file (meta_*.json[.gz]), "
               "found none")
  write_lines(amazon_dir / "meta_A.json", [])
  write_lines(amazon_dir / "Other_5.json.gz", good)
  expect_error("amazon", amazon_dir, "expected exactly one reviews file", "Clothing_5.json",
               "Other_5.json.gz")


@pytest.mark.parametrize("amazon_dir", ["gz"], indirect=True)
def test_amazon_gz_that_is_not_gzip(amazon_dir):
  reviews, _ = _amazon_files(amazon_dir)
  reviews.write_text('{"reviewerID": "A1"}\n')
  expect_error("amazon", amazon_dir, f"{reviews.name}:1: unreadable")


# --- Coat -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["%d", "%.1f"])
def test_coat_sequences_ratings_features(tmp_path, fmt):
  ds = load("coat", write_coat(tmp_path, fmt))
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (4, 6, 8)
  assert (ds.scenario, ds.item_noun, ds.behavior) == ("online fashion", "coat", "rating")
  assert ds.attribute_names == ("jacket type", "colour", "gender")
  assert seq_keys(ds, "0") == ["2", "5", "7", "3", "5"]  # train in item order, then test
  assert user_values(ds, ds.ratings, "0") == [1, 4, 5, 2, 3]
  assert user_values(ds, ds.times, "0") == [0, 1, 2, 3, 4]
  assert seq_keys(ds, "2") == ["7"] and user_values(ds, ds.times, "2") == [3]
  assert seq_keys(ds, "289") == ["299"] and user_values(ds, ds.ratings, "289") == [2]
  assert text(ds, "2") == ("bomber", "black", "men")
  assert text(ds, "5") == ("parkas", "navy", "women")
  assert text(ds, "3") == ("bomber", "unknown", "men, women")
  assert text(ds, "7") == ("unknown", "unknown", "unknown")
  assert ds.item_feature_names == tuple(COAT_ITEM_MAP)
  assert ds.user_feature_names == tuple(COAT_USER_MAP)
  assert ds.item_features.dtype == np.float32
  items = ds.item_keys.tolist()
  np.testing.assert_array_equal(ds.item_features[items.index("5")], [0, 1, 0, 1, 0, 1, 0, 1])
  np.testing.assert_array_equal(ds.item_features[items.index("10")], np.zeros(8))
  np.testing.assert_array_equal(ds.user_features[user_row(ds, "0")], [1, 0, 1])
  np.testing.assert_array_equal(ds.user_features[user_row(ds, "289")], [0, 1, 0])


def test_coat_chronological_split_puts_mnar_before_mar(coat_dir):
  ds = load("coat", coat_dir)
  train, test = split_chronological(ds, train_frac=5 / 8)  # 5 train.ascii, 3 test.ascii ratings
  assert sorted(zip(train.user_keys[train.user_of_interaction()].tolist(),
                    train.item_keys[train.seq_items].tolist())) == sorted(
      (str(u), str(i)) for u, i in [(0, 2), (0, 5), (0, 7), (1, 10), (289, 299)])
  assert seq_keys(test, "0") == ["3", "5"] and seq_keys(test, "2") == ["7"]


def test_coat_bad_inputs(coat_dir):
  train = coat_dir / "train.ascii"
  m = coat_matrix({(0, 1): 3}, 290, 300)
  write_matrix(train, m[:289])
  expect_error("coat", coat_dir, "train.ascii:290: expected 290 lines (one per user), found 289")
  write_matrix(train, np.concatenate([m, m[:2]]))
  expect_error("coat", coat_dir, "train.ascii:291: expected 290 lines (one per user), found 292")
  write_matrix(train, m.T)
  expect_error("coat", coat_dir, "train.ascii:1: expected 300 space-separated values (one per "
               "item), got 290")
  lines = [" ".join(map(str, row)) for row in m]
  lines[4] = lines[4].replace("0", "x", 1)
  write_lines(train, lines)
  expect_error("coat", coat_dir, "train.ascii:5: field column 1 (item 0): expected a number, "
               "got 'x'")
  lines[4] = " ".join(["0"] * 299 + ["7"])
  write_lines(train, lines)
  expect_error("coat", coat_dir, "train.ascii:5: field column 300 (item 299): expected a rating "
               "0-5, got '7'")
  write_matrix(train, coat_matrix({}, 290, 300))
  write_matrix(coat_dir / "test.ascii", coat_matrix({}, 290, 300))
  expect_error("coat", coat_dir, "no interactions")
  write_coat(coat_dir)
  write_lines(coat_dir / "user_item_features" / "item_features_map.txt", COAT_ITEM_MAP[:-1])
  expect_error("coat", coat_dir, "item_features.ascii:1: expected 7 space-separated values "
               "(one per feature), got 8")
  write_coat(coat_dir)
  os.remove(coat_dir / "user_item_features" / "user_features_map.txt")
  expect_error("coat", coat_dir, "user_features_map.txt: file not found")


def test_prepare_cli_fails_with_one_line_and_writes_nothing(coat_dir, tmp_path):
  write_matrix(coat_dir / "train.ascii", coat_matrix({}, 289, 300))
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, "-m", "jaxrec.data.prepare", "--dataset=coat", f"--data_dir={coat_dir}",
       f"--out={out}"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
  assert proc.returncode != 0
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert "train.ascii:290: expected 290 lines" in lines[0]
  assert not (out / "dataset.npz").exists() and not (out / "stats.json").exists()


# --- MovieLens --------------------------------------------------------------------------------
def _check_movielens(ds, year_of_30: str):
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (2, 4, 5)
  assert (ds.scenario, ds.item_noun, ds.behavior) == ("movie", "movie", "rating")
  assert ds.attribute_names == ("title", "genre", "year")
  assert seq_keys(ds, "1") == ["20", "30", "10"]
  assert user_values(ds, ds.ratings, "1") == [5, 2, 4]
  assert user_values(ds, ds.times, "1") == [100, 200, 300]
  assert seq_keys(ds, "2") == ["10", "40"]
  assert text(ds, "10") == ("Toy Story", "Animation, Children's, Comedy", "1995")
  assert text(ds, "20") == ("Misérables, Les", "Drama, Musical", "1995")
  assert text(ds, "30") == ("No Year Film", "unknown", year_of_30)
  assert text(ds, "40") == ("unknown", "unknown", "unknown")


def test_movielens_100k(ml100k_dir):
  _check_movielens(load("movielens", ml100k_dir), year_of_30="1997")  # from the release date


def test_movielens_100k_reads_genre_names_from_u_genre(ml100k_dir):
  write_lines(ml100k_dir / "u.genre", [f"g{i}|{i}" for i in range(19)] + [""])
  assert text(load("movielens", ml100k_dir), "10")[1] == "g3, g4, g5"


def test_movielens_1m(ml1m_dir):
  _check_movielens(load("movielens", ml1m_dir), year_of_30="unknown")


def test_movielens_recbole_by_header_names(recbole_dir):
  _check_movielens(load("movielens", recbole_dir), year_of_30="unknown")


def test_movielens_k_core_through_load_dataset(ml1m_dir):
  # Round 1 drops item 4 (2 ratings), then user 4 (left with 2); round 2 drops item 5 (now 2).
  rows = {1: [1, 2, 3, 4, 5], 2: [1, 2, 3, 5], 3: [1, 2, 3], 4: [1, 4, 5]}
  write_lines(ml1m_dir / "ratings.dat", [
      f"{u}::{i}::{1 + i % 5}::{1000 * u + 10 * k}" for u, items in rows.items()
      for k, i in enumerate(items)])
  write_lines(ml1m_dir / "movies.dat", [f"{i}::Film {i} (200{i})::Drama" for i in range(1, 6)])
  raw = load_raw("movielens", str(ml1m_dir))
  assert (raw.num_users, raw.num_items, raw.num_interactions) == (4, 5, 15)
  ds = load_dataset("movielens", str(ml1m_dir))  # default PrepConfig: min 3 each
  assert ds.user_keys.tolist() == ["1", "2", "3"]
  assert ds.item_keys.tolist() == ["1", "2", "3"]
  assert ds.num_interactions == 9
  assert [text(ds, k) for k in ("1", "3")] == [("Film 1", "Drama", "2001"),
                                               ("Film 3", "Drama", "2003")]
  assert seq_keys(ds, "2") == ["1", "2", "3"]
  assert user_values(ds, ds.ratings, "2") == [2, 3, 4]


def test_movielens_bad_inputs(ml100k_dir):
  good = ["\t".join(map(str, r)) for r in ML_RATINGS]
  write_lines(ml100k_dir / "u.data", good[:2] + ["2\t10\tfour\t200"])
  expect_error("movielens", ml100k_dir, "u.data:3: field rating: expected an integer, got 'four'")
  write_lines(ml100k_dir / "u.data", good[:1] + ["2\t10\t200"])
  expect_error("movielens", ml100k_dir, "u.data:2: expected 4 tab-separated fields (user id, "
               "item id, rating, timestamp), got 3")
  write_lines(ml100k_dir / "u.data", good)
  flags = "|".join("0" * 19)
  write_lines(ml100k_dir / "u.item", ["10|Toy Story (1995)|01-Jan-1995||x|" + flags.replace(
      "0", "2", 1)])
  expect_error("movielens", ml100k_dir, "u.item:1: field unknown: expected a 0/1 genre flag")
  write_lines(ml100k_dir / "u.item", ["ten|Toy Story (1995)|01-Jan-1995||x|" + flags])
  expect_error("movielens", ml100k_dir, "u.item:1: field movie id: expected an integer")
  write_lines(ml100k_dir / "u.item", ["10|Toy Story (1995)|01-Jan-1995"])
  expect_error("movielens", ml100k_dir, "u.item:1: expected 24 |-separated fields")
  write_lines(ml100k_dir / "u.genre", ["unknown|0", "Action|2"])
  expect_error("movielens", ml100k_dir, "u.genre:2: field index: expected 1")
  os.remove(ml100k_dir / "u.item")
  expect_error("movielens", ml100k_dir, "u.item: file not found")
  write_lines(ml100k_dir / "ratings.dat", ["1::10::4::5"])
  expect_error("movielens", ml100k_dir, "several MovieLens layouts")
  for name in ("u.data", "u.genre", "ratings.dat"):
    os.remove(ml100k_dir / name)
  expect_error("movielens", ml100k_dir, "no MovieLens files")


def test_movielens_1m_bad_inputs(ml1m_dir):
  write_lines(ml1m_dir / "ratings.dat", ["1::10::4::300", "1::10::4"])
  expect_error("movielens", ml1m_dir, "ratings.dat:2: expected 4 '::'-separated fields")
  write_lines(ml1m_dir / "ratings.dat", ["1::10::4.5::300"])
  expect_error("movielens", ml1m_dir, "ratings.dat:1: field Rating: expected an integer")
  write_lines(ml1m_dir / "ratings.dat", [])
  expect_error("movielens", ml1m_dir, "ratings.dat: no interactions")
  write_lines(ml1m_dir / "ratings.dat", ["1::10::4::300"])
  write_lines(ml1m_dir / "movies.dat", ["10::Toy Story (1995)"], encoding="latin-1")
  expect_error("movielens", ml1m_dir, "movies.dat:1: expected 3 '::'-separated fields")


def test_movielens_recbole_bad_inputs(recbole_dir):
  inter = recbole_dir / "ml-tiny.inter"
  write_lines(inter, ["user_id:token\trating:float", "1\t5"])
  expect_error("movielens", recbole_dir, "ml-tiny.inter:1: header has no item_id field (found: "
               "user_id, rating)")
  write_lines(inter, ["user_id:token\titem_id:token\ttimestamp:float", "1\t10\t100",
                      "1\t10\tyesterday"])
  expect_error("movielens", recbole_dir, "ml-tiny.inter:3: field timestamp: expected a number")
  write_lines(inter, ["user_id:token\titem_id:token", "1\t10\t100"])
  expect_error("movielens", recbole_dir, "ml-tiny.inter:2: expected 2 tab-separated fields")
  write_lines(inter, [])
  expect_error("movielens", recbole_dir, "ml-tiny.inter: empty file, expected a typed header")
  write_lines(inter, ["user_id:token\titem_id:token", "1\t10"])
  os.remove(recbole_dir / "ml-tiny.item")
  expect_error("movielens", recbole_dir, "ml-tiny.item: file not found")


def test_movielens_real_recbole_ml100k():
  recbole = pytest.importorskip("recbole")
  root = pathlib.Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
  ds = load_raw("movielens", str(root))
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (943, 1682, 100000)
  assert ds.has_ratings and set(np.unique(ds.ratings).tolist()) == {1, 2, 3, 4, 5}
  assert np.all(np.diff(ds.times)[np.diff(ds.user_of_interaction()) == 0] >= 0)
  assert text(ds, "1") == ("Toy Story", "Animation, Children's, Comedy", "1995")
  # "(1995)" in the title wins over its release_year column ("V").
  assert text(ds, "1412")[2] == "1995"
