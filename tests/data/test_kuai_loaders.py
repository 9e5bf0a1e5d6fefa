"""The KuaiRec and KuaiRand-Pure loaders on small files in their real formats, good and bad, and
KuaiRec's small_matrix as the peer protocol's ground truth."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxrec.data import PrepConfig, load_dataset
from jaxrec.data.loaders import _common, kuairec
from jaxrec.envs import peer
from jaxrec.errors import ConfigError, DataError

from .conftest import (KUAIRAND_HEADER, KUAIRAND_LOG, KUAIRAND_VIDEO_HEADER, KUAIRAND_VIDEOS,
                       KUAIREC_BIG, KUAIREC_HEADER, KUAIREC_SMALL, KUAIREC_TRUTH, write_lines)
from .test_loaders import expect_error, seq_keys, text, user_values

REPO = pathlib.Path(__file__).resolve().parents[2]
KEEP_ALL = PrepConfig(min_user=1, min_item=1)


# --- KuaiRec ----------------------------------------------------------------------------------
def test_kuairec_block_sequences_rewards_and_tags(kuairec_dir):
  ds = load_dataset("kuairec", str(kuairec_dir), KEEP_ALL)
  assert (ds.scenario, ds.item_noun, ds.behavior) == ("short video", "video", "watching")
  assert ds.user_keys.tolist() == ["14", "21"]  # user 99 is not in small_matrix
  assert ds.item_keys.tolist() == ["148", "183", "3650"]  # nor is video 9999
  assert seq_keys(ds, "14") == ["148", "3650", "183"]
  assert user_values(ds, ds.times, "14") == [1593878700000, 1593878903438, 1593878950500]
  assert seq_keys(ds, "21") == ["183", "183"]
  # watch_ratio min-max per video over both files: 148 in [0.2, 0.9] (user 99's 0.7 counts),
  # 183 in [0.1, 7.5], 3650 only 1.2 (0 / 0 -> 0; small_matrix's NaN row is skipped).
  np.testing.assert_allclose(user_values(ds, ds.ratings, "14"), [0.3 / 0.7, 0.0, 0.9 / 7.4],
                             rtol=1e-6)
  np.testing.assert_allclose(user_values(ds, ds.ratings, "21"), [1.9 / 7.4, 0.3 / 7.4],
                             rtol=1e-6)
  assert text(ds, "148") == ("8",)  # the first line of a video wins
  assert text(ds, "183") == ("27, 9",)
  assert text(ds, "3650") == ("unknown",)
  assert ds.item_feature_names == ("tag:8", "tag:9", "tag:27")
  np.testing.assert_array_equal(ds.item_features, [[1, 0, 0], [0, 1, 1], [0, 0, 0]])


def test_kuairec_small_matrix_is_the_peer_ground_truth(kuairec_dir):
  ds = load_dataset("kuairec", str(kuairec_dir), KEEP_ALL)
  true, source = peer.true_matrix_for(ds, None, data_dir=str(kuairec_dir))
  np.testing.assert_allclose(true, KUAIREC_TRUTH, rtol=1e-6)
  assert true.dtype == np.float32 and source["path"].endswith("small_matrix.csv")
  assert len(source["sha256"]) == 64
  # Aligned by id: a dataset keeping user 21 and videos 3650, 148 gets those cells in its order.
  sub = kuairec.true_matrix(str(kuairec_dir), np.array(["21"]), np.array(["3650", "148"]))
  np.testing.assert_allclose(sub, [[1.36, 0.2]], rtol=1e-6)


def test_kuairec_truth_refuses_ids_outside_small_matrix(kuairec_dir):
  with pytest.raises(DataError, match=r"small_matrix\.csv: user '99' of the dataset has no row"):
    kuairec.true_matrix(str(kuairec_dir), np.array(["14", "99"]), np.array(["148"]))
  with pytest.raises(DataError, match=r"small_matrix\.csv: video '9999' of the dataset"):
    kuairec.true_matrix(str(kuairec_dir), np.array(["14"]), np.array(["9999"]))
  ds = load_dataset("kuairec", str(kuairec_dir), KEEP_ALL)
  with pytest.raises(ConfigError, match="needs --true_matrix"):
    peer.true_matrix_for(ds, None)  # no data_dir: nothing to read the truth from


def test_kuairec_big_keeps_every_row_and_has_no_truth(kuairec_dir):
  ds = load_dataset("kuairec_big", str(kuairec_dir), KEEP_ALL)
  assert ds.name == "kuairec_big" and ds.num_interactions == len(KUAIREC_BIG)
  assert ds.user_keys.tolist() == ["14", "21", "99"]
  assert ds.item_keys.tolist() == ["148", "183", "3650", "9999"]
  assert seq_keys(ds, "14") == ["148", "9999", "3650", "183"]
  assert text(ds, "9999") == ("1",) and ds.item_feature_names == ("tag:1", "tag:8", "tag:9",
                                                                  "tag:27")
  # 148: (0.7 - 0.2) / (0.9 - 0.2)
  np.testing.assert_allclose(user_values(ds, ds.ratings, "99"), [0.5 / 0.7], rtol=1e-6)
  with pytest.raises(DataError, match=r"small_matrix\.csv: user '99' of the dataset has no row"):
    peer.true_matrix_for(ds, None, data_dir=str(kuairec_dir))


def test_kuairec_bad_inputs(kuairec_dir):
  big, small = kuairec_dir / "big_matrix.csv", kuairec_dir / "small_matrix.csv"
  cats = kuairec_dir / "item_categories.csv"
  write_lines(big, ["user_id,video_id,play_duration,video_duration,time,date,watch_ratio"]
              + KUAIREC_BIG)
  expect_error("kuairec", kuairec_dir, "big_matrix.csv:1: header has no timestamp column")
  write_lines(big, [KUAIREC_HEADER, KUAIREC_BIG[0], "", KUAIREC_BIG[1].replace(",148,", ",x,")])
  expect_error("kuairec", kuairec_dir, "big_matrix.csv:4: field video_id: expected an integer, "
               "got 'x'")
  write_lines(big, [KUAIREC_HEADER, KUAIREC_BIG[0].replace("1593878903.438", "")])
  expect_error("kuairec", kuairec_dir, "big_matrix.csv:2: field timestamp: expected a number")
  write_lines(big, [KUAIREC_HEADER, KUAIREC_BIG[0] + ",extra"])
  expect_error("kuairec", kuairec_dir, "big_matrix.csv:2: expected 8 comma-separated cells")
  write_lines(big, [KUAIREC_HEADER, KUAIREC_BIG[0].replace(",1.2", ",lots")])
  expect_error("kuairec", kuairec_dir, "big_matrix.csv:2: field watch_ratio: expected a number, "
               "got 'lots'")
  write_lines(big, [KUAIREC_HEADER])
  expect_error("kuairec", kuairec_dir, "big_matrix.csv: no interactions")
  write_lines(big, [KUAIREC_HEADER] + KUAIREC_BIG)
  write_lines(small, [KUAIREC_HEADER] + KUAIREC_SMALL[:2] + ["21,148,1,2,,,,0.2,3"])
  expect_error("kuairec", kuairec_dir, "small_matrix.csv:4: expected 8 comma-separated cells")
  write_lines(small, [])
  expect_error("kuairec", kuairec_dir, "small_matrix.csv: empty file, expected a header")
  write_lines(small, [KUAIREC_HEADER] + KUAIREC_SMALL)
  write_lines(cats, ["video_id,feat", "148,8"])
  expect_error("kuairec", kuairec_dir, "item_categories.csv:2: field feat: expected a list of "
               "tag ids like [27, 9], got '8'")
  write_lines(cats, ["video_id,feat", '148,"[8, a]"'])
  expect_error("kuairec", kuairec_dir, "item_categories.csv:2: field feat: expected an integer")
  write_lines(cats, ["video_id,tags", "148,[8]"])
  expect_error("kuairec", kuairec_dir, "item_categories.csv:1: header has no feat column")
  os.remove(cats)
  expect_error("kuairec", kuairec_dir, "item_categories.csv: file not found")


def test_kuairec_prepare_cli_fails_with_one_line_and_writes_nothing(kuairec_dir, tmp_path):
  write_lines(kuairec_dir / "small_matrix.csv",
              ["user_id,video_id,play_duration,video_duration,time,date,timestamp"]
              + [r.rsplit(",", 1)[0] for r in KUAIREC_SMALL])
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, "-m", "jaxrec.data.prepare", "--dataset=kuairec",
       f"--data_dir={kuairec_dir}", f"--out={out}"],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert "small_matrix.csv:1: header has no watch_ratio column" in lines[0]
  assert not out.exists() or not os.listdir(out)


# --- KuaiRand-Pure ----------------------------------------------------------------------------
def test_kuairand_sequences_clicks_and_tags(kuairand_dir):
  ds = load_dataset("kuairand", str(kuairand_dir), KEEP_ALL)
  assert (ds.scenario, ds.item_noun, ds.behavior) == ("short video", "video", "watching")
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (2, 2, 4)
  assert seq_keys(ds, "0") == ["7", "3", "7"]
  assert user_values(ds, ds.times, "0") == [1649390400000, 1649390500000, 1649548800000]
  assert user_values(ds, ds.ratings, "0") == [1.0, 0.0, 0.0]
  assert seq_keys(ds, "5") == ["3"] and user_values(ds, ds.ratings, "5") == [1.0]
  assert text(ds, "3") == ("12, 65",) and text(ds, "7") == ("unknown",)
  assert ds.item_feature_names == ("tag:12", "tag:65")  # video 8 is never watched
  np.testing.assert_array_equal(ds.item_features, [[1, 1], [0, 0]])


def test_kuairand_bad_inputs(kuairand_dir):
  log = kuairand_dir / "log_standard_4_08_to_4_21_pure.csv"
  videos = kuairand_dir / "video_features_basic_pure.csv"
  write_lines(log, [KUAIRAND_HEADER.replace("time_ms", "time")] + KUAIRAND_LOG)
  expect_error("kuairand", kuairand_dir, "log_standard_4_08_to_4_21_pure.csv:1: header has no "
               "time_ms column")
  write_lines(log, [KUAIRAND_HEADER] + KUAIRAND_LOG[:2] + [KUAIRAND_LOG[2].replace(",1,0,", ",2,0,",
                                                                                    1)])
  expect_error("kuairand", kuairand_dir, "log_standard_4_08_to_4_21_pure.csv:4: field "
               "is_click: expected 0 or 1, got '2'")
  write_lines(log, [KUAIRAND_HEADER, KUAIRAND_LOG[0].replace("1649390500000", "1.6e12")])
  expect_error("kuairand", kuairand_dir, "pure.csv:2: field time_ms: expected an integer, got "
               "'1.6e12'")
  write_lines(log, [KUAIRAND_HEADER, KUAIRAND_LOG[0].rsplit(",", 1)[0]])
  expect_error("kuairand", kuairand_dir, "pure.csv:2: expected 19 comma-separated cells")
  write_lines(log, [KUAIRAND_HEADER] + KUAIRAND_LOG)
  write_lines(videos, [KUAIRAND_VIDEO_HEADER, KUAIRAND_VIDEOS[0].replace('"12,65"', "12,65")])
  expect_error("kuairand", kuairand_dir, "video_features_basic_pure.csv:2: expected 12 "
               "comma-separated cells")
  write_lines(videos, [KUAIRAND_VIDEO_HEADER, KUAIRAND_VIDEOS[0].replace('"12,65"', '"12,x"')])
  expect_error("kuairand", kuairand_dir, "video_features_basic_pure.csv:2: field tag: expected "
               "an integer, got 'x'")
  write_lines(videos, [KUAIRAND_VIDEO_HEADER.replace(",tag", ",tags")] + KUAIRAND_VIDEOS)
  expect_error("kuairand", kuairand_dir, "video_features_basic_pure.csv:1: header has no tag")
  os.remove(log)
  expect_error("kuairand", kuairand_dir, "log_standard_4_08_to_4_21_pure.csv: file not found")


def test_kuairand_peer_protocol_needs_a_true_matrix(kuairand_dir):
  ds = load_dataset("kuairand", str(kuairand_dir), KEEP_ALL)
  with pytest.raises(ConfigError, match="needs --true_matrix"):
    peer.true_matrix_for(ds, None, data_dir=str(kuairand_dir))


# --- the CSV reader ---------------------------------------------------------------------------
def test_read_csv_columns_agrees_across_blocks(tmp_path):
  rows = ["a,skip,b,c", "1,x y,2.5,1", "", "4,,nan,1", "5,z,,0", "6,w,1e3,1"]
  path = write_lines(tmp_path / "t.csv", rows)
  cols = (("a", "int"), ("b", "float_nan"), ("c", "flag"))
  for block_bytes in (1, 9, 1 << 20):  # line numbers carry across blocks of any size
    out = _common.read_csv_columns(str(path), cols, block_bytes=block_bytes)
    assert out["a"].tolist() == [1, 4, 5, 6] and out["c"].tolist() == [1, 1, 0, 1]
    np.testing.assert_array_equal(out["b"], [2.5, np.nan, np.nan, 1000.0])
    for bad, msg in (("7,v,1_0,1", r"t\.csv:7: field b: expected a number, got '1_0'"),
                     ("7,v,2,3", r"t\.csv:7: field c: expected 0 or 1, got '3'"),
                     ("7,v,2", r"t\.csv:7: expected 4 comma-separated cells"),
                     ("7.0,v,2,1", r"t\.csv:7: field a: expected an integer, got '7\.0'")):
      write_lines(path, rows + [bad])
      with pytest.raises(DataError, match=msg):
        _common.read_csv_columns(str(path), cols, block_bytes=block_bytes)
    write_lines(path, rows)
  with pytest.raises(DataError, match=r"t\.csv:3: field b: expected a finite number"):
    write_lines(path, rows[:2] + ["3,v,inf,1"])
    _common.read_csv_columns(str(path), (("a", "int"), ("b", "float")))
  write_lines(path, ["t,x", "1593878903.438,1", "-0.0015,2"])
  assert _common.read_csv_columns(str(path), (("t", "seconds"),))["t"].tolist() == [
      1593878903438, -2]
  write_lines(path, ["t,x", "1593878903.438,1", "1e300,2"])
  with pytest.raises(DataError, match=r"t\.csv:3: field t: expected a time in seconds, got "
                     r"'1e300'"):
    _common.read_csv_columns(str(path), (("t", "seconds"),))
