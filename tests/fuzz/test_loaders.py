"""Fuzzing the real-format dataset loaders: valid small files (tests/data/conftest.py) with one
random corruption each. A loader either returns a Dataset or raises a one-line DataError naming
the corrupted file's directory; no other exception may escape."""

from __future__ import annotations

import gzip
import json
import os
import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from data.conftest import (AMAZON_META, AMAZON_REVIEWS, LASTFM_EVENTS, ML_RATINGS, _flags,
                           write_coat, write_kuairand, write_kuairec, write_lines)
from jaxrec.data import Dataset, load_raw

from .util import byte_mutation, copy_of, files_under, fuzz_settings, load_or_refuse, refuse

SETTINGS = fuzz_settings(25)


def _lastfm(root: pathlib.Path, gz: bool) -> None:
  write_lines(root / ("LFM-1b_LEs.txt" + (".gz" if gz else "")), LASTFM_EVENTS)
  write_lines(root / "LFM-1b_tracks.txt", ["1000\tSong A\t10", "1001\tSóng B\t10"])
  write_lines(root / ("LFM-1b_albums.txt" + (".gz" if gz else "")), ["100\tAlbum X\t10"])
  write_lines(root / "LFM-1b_artists.txt", ["10\tArtist P", "11\tArtist Q"])


def _amazon(root: pathlib.Path, gz: bool) -> None:
  suffix = ".gz" if gz else ""
  write_lines(root / f"Clothing_5.json{suffix}", [json.dumps(r) for r in AMAZON_REVIEWS])
  write_lines(root / f"meta_Clothing.json{suffix}", [json.dumps(m) for m in AMAZON_META])


def _ml100k(root: pathlib.Path, gz: bool) -> None:
  write_lines(root / "u.data", ["\t".join(map(str, r)) for r in ML_RATINGS])
  write_lines(root / "u.item", ["10|Toy Story (1995)|01-Jan-1995||http://x|" + _flags({3}),
                                "20|Misérables (1995)|01-Jan-1995||http://y|" + _flags({8})],
              encoding="latin-1")
  write_lines(root / "u.genre", [f"g{i}|{i}" for i in range(19)])


def _ml1m(root: pathlib.Path, gz: bool) -> None:
  write_lines(root / "ratings.dat", ["::".join(map(str, r)) for r in ML_RATINGS])
  write_lines(root / "movies.dat", ["10::Toy Story (1995)::Animation|Comedy",
                                    "30::No Year::(no genres listed)"], encoding="latin-1")


def _recbole(root: pathlib.Path, gz: bool) -> None:
  write_lines(root / "ml.inter", ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
              + [f"{u}\t{i}\t{r}\t{t}.5" for u, i, r, t in ML_RATINGS])
  write_lines(root / "ml.item", ["item_id:token\tmovie_title:token_seq\trelease_year:token\t"
                                 "class:token_seq", "10\tToy Story\t1995\tAnimation Comedy"])


def _coat(root: pathlib.Path, gz: bool) -> None:
  write_coat(root)


def _kuairec(root: pathlib.Path, gz: bool) -> None:
  write_kuairec(root)


def _kuairand(root: pathlib.Path, gz: bool) -> None:
  write_kuairand(root)


# dataset name, writer, whether a gzipped variant exists
FORMATS = {"lastfm": ("lastfm", _lastfm), "amazon": ("amazon", _amazon),
           "ml-100k": ("movielens", _ml100k), "ml-1m": ("movielens", _ml1m),
           "recbole": ("movielens", _recbole), "coat": ("coat", _coat),
           "kuairec": ("kuairec", _kuairec), "kuairand": ("kuairand", _kuairand)}
CASES = ["lastfm", "lastfm-gz", "amazon", "amazon-gz", "ml-100k", "ml-1m", "recbole", "coat",
         "kuairec", "kuairand"]


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, str]:
  """case -> a directory of valid files (each loads)."""
  out = {}
  for case in CASES:
    fmt, gz = case.removesuffix("-gz"), case.endswith("-gz")
    root = tmp_path_factory.mktemp("loaders") / case
    FORMATS[fmt][1](root, gz)
    assert isinstance(load_raw(FORMATS[fmt][0], str(root)), Dataset)
    out[case] = str(root)
  return out


def _json_values():
  huge = st.integers(min_value=2**63 - 2, max_value=2**70) | st.integers(max_value=-2**63 - 1,
                                                                           min_value=-2**70)
  return st.one_of(st.none(), st.booleans(), huge, st.floats(allow_nan=True),
                   st.text(max_size=5), st.lists(st.integers(), max_size=2),
                   st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
                   st.sampled_from(["nan", "inf", "1e999", "", " ", "12abc", "\x00"]))


@st.composite
def _json_line_mutation(draw, data: bytes) -> bytes:
  """Amazon: one field of one JSON line set to a value of a wrong or extreme type."""
  lines = data.decode().splitlines()
  j = draw(st.integers(0, len(lines) - 1))
  obj = json.loads(lines[j])
  key = draw(st.sampled_from(["reviewerID", "asin", "unixReviewTime", "overall", "title",
                              "category", "brand"]))
  obj[key] = draw(_json_values())
  lines[j] = json.dumps(obj)  # non-finite floats become NaN / Infinity, as Python writes them
  return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data())
def test_corrupted_loader_input_loads_or_is_refused_in_one_line(templates, case, data):
  fmt = case.removesuffix("-gz")
  name = FORMATS[fmt][0]
  with copy_of(templates[case]) as root:
    rel = data.draw(st.sampled_from(files_under(root)), label="file")
    path = os.path.join(root, rel)
    raw = pathlib.Path(path).read_bytes()
    gz = rel.endswith(".gz")
    # A gzipped file is corrupted either in its compressed bytes or in its text.
    inside = gz and data.draw(st.booleans(), label="corrupt the text inside the gzip")
    payload = gzip.decompress(raw) if inside else raw
    mutations = [byte_mutation(payload)]
    if fmt == "amazon" and (inside or not gz):
      mutations.append(_json_line_mutation(payload))
    payload = data.draw(st.one_of(*mutations), label="mutation")
    pathlib.Path(path).write_bytes(gzip.compress(payload) if inside else payload)
    ds = load_or_refuse(lambda: load_raw(name, root), root)
    if ds is not None:
      assert isinstance(ds, Dataset) and ds.num_interactions > 0


@pytest.mark.parametrize("case", CASES)
def test_every_file_empty_or_missing_is_refused(templates, case):
  """Deterministic edges: each file emptied, then each file removed."""
  fmt = case.removesuffix("-gz")
  for rel in files_under(templates[case]):
    for how in ("empty", "missing"):
      with copy_of(templates[case]) as root:
        path = os.path.join(root, rel)
        if how == "empty":
          open(path, "wb").close()
        else:
          os.unlink(path)
        load_or_refuse(lambda: load_raw(FORMATS[fmt][0], root), root)


@pytest.mark.parametrize("rel", ["Clothing_5.json", "meta_Clothing.json"])
def test_json_line_nested_past_the_recursion_limit_is_refused(templates, rel):
  with copy_of(templates["amazon"]) as root:
    path = pathlib.Path(root, rel)
    path.write_bytes(b'{"asin": ' + b"[" * 100_000 + b"\n" + path.read_bytes())
    msg = refuse(lambda: load_raw("amazon", root), str(path))
    assert f"{path}:1:" in msg, msg


@SETTINGS
@given(data=st.data())
def test_corrupted_kuairec_small_matrix_gives_a_truth_or_is_refused(templates, data):
  """The ground truth reader (loaders.kuairec.true_matrix) under the same corruptions."""
  from jaxrec.data.loaders import kuairec
  with copy_of(templates["kuairec"]) as root:
    path = pathlib.Path(root, kuairec.SMALL)
    path.write_bytes(data.draw(byte_mutation(path.read_bytes()), label="mutation"))
    true = load_or_refuse(lambda: kuairec.true_matrix(root, np.array(["14", "21"]),
                                                      np.array(["148", "183"])), root)
    if true is not None:
      assert true.shape == (2, 2) and np.isfinite(true).all()
