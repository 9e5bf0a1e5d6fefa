"""Fuzzing jaxrec.shards: corrupted and forged shards, records, manifests and catalogs, and
shard names from arbitrary text. Every read either returns data that keeps the format's
invariants or raises a one-line DataError naming the shard or file; a refused write leaves no
file behind and nothing is ever created outside the shard directory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jaxrec import shards
from jaxrec.errors import DataError

from .util import byte_mutation, copy_of, fuzz_settings, load_or_refuse, refuse, scratch, snapshot

K, L, NUM_ITEMS, ROWS = 3, 4, 20, 5
META = {"dataset": "toy", "fingerprint": "f" * 16, "k": K, "history_len": L,
        "num_items": NUM_ITEMS}
LMETA = META | {"backend": "test", "model": "m", "template_version": "v"}
NAME = "req-00000"


def _requests(n: int = ROWS, seed: int = 0) -> shards.RequestShard:
  rng = np.random.default_rng(seed)
  return shards.RequestShard(
      session=np.arange(n, dtype=np.int32), step=np.zeros(n, np.int32),
      history=rng.integers(-1, NUM_ITEMS, (n, L)).astype(np.int32),
      candidates=rng.integers(0, NUM_ITEMS, (n, K)).astype(np.int32),
      user=np.full(n, -1, np.int32))


def _labels(n: int = ROWS, seed: int = 0) -> shards.LabelShard:
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, K + 1))
  lp = (x - np.log(np.exp(x).sum(1, keepdims=True))).astype(np.float32)
  valid = rng.random(n) > 0.2
  choice = np.where(valid, rng.integers(0, K + 1, n), K).astype(np.int32)  # unparsed -> K
  return shards.LabelShard(choice, valid, lp)


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory) -> dict[str, str]:
  """A request directory (one shard + catalog) and a label directory (its labels)."""
  root = tmp_path_factory.mktemp("shards")
  req, lab = str(root / "requests"), str(root / "labels")
  shards.write_requests(req, NAME, _requests(), META)
  shards.write_catalog(req, shards.Catalog(
      dataset="toy", fingerprint="f" * 16, scenario="s", item_noun="item", behavior="b",
      attribute_names=("title", "genre"),
      item_text=np.array([[f"t{i}", "g"] for i in range(NUM_ITEMS)])))
  shards.write_labels(lab, NAME, _labels(), LMETA)
  return {"requests": req, "labels": lab}


def _read(kind: str, directory: str, name: str = NAME):
  return (shards.read_requests if kind == "requests" else shards.read_labels)(directory, name)


def _assert_valid_requests(s: shards.RequestShard, rows: int | None = None) -> None:
  """The invariants a consumer of read_requests relies on."""
  n = s.session.shape[0]
  assert rows is None or n == rows
  for f in ("session", "step", "user"):
    assert getattr(s, f).dtype == np.int32 and getattr(s, f).shape == (n,)
  assert s.history.dtype == np.int32 and s.history.shape == (n, L)
  assert s.candidates.dtype == np.int32 and s.candidates.shape == (n, K)
  if n:
    assert s.candidates.min() >= 0 and s.history.min() >= -1
    assert max(s.candidates.max(), s.history.max()) < NUM_ITEMS


def _assert_valid_labels(s: shards.LabelShard, rows: int | None = None) -> None:
  n = s.choice.shape[0]
  assert rows is None or n == rows
  assert s.choice.dtype == np.int32 and s.choice.shape == (n,)
  assert s.valid.dtype == np.bool_ and s.valid.shape == (n,)
  assert s.logprobs is None or (s.logprobs.dtype == np.float32 and s.logprobs.shape == (n, K + 1))
  if n:
    assert s.choice.min() >= 0 and s.choice.max() <= K


def _assert_valid(kind: str, shard, rows: int | None = None) -> None:
  (_assert_valid_requests if kind == "requests" else _assert_valid_labels)(shard, rows)


def _assert_same(a, b) -> None:
  for x, y in zip(a, b):
    if x is None or y is None:
      assert x is None and y is None
    else:
      np.testing.assert_array_equal(x, y)
      assert x.dtype == y.dtype


def _set_record(directory: str, update: dict, name: str = NAME) -> None:
  path = os.path.join(directory, name + ".json")
  rec = json.load(open(path)) | update
  with open(path, "w") as f:
    json.dump(rec, f)


def _refuses_everywhere(kind: str, directory: str, *names: str) -> None:
  """read_* and list_shards(verify=True) all refuse the shard with a one-line DataError."""
  names = names or (os.path.join(directory, NAME),)
  refuse(lambda: _read(kind, directory), *names, error=DataError)
  refuse(lambda: shards.list_shards(directory, verify=True), *names, error=DataError)


KINDS = ["requests", "labels"]


# --- (a) corrupted NAME.npz -----------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(30)
@given(data=st.data())
def test_corrupted_npz_is_refused(shard_dirs, kind, data):
  with copy_of(shard_dirs[kind]) as d:
    path = os.path.join(d, NAME + ".npz")
    good = open(path, "rb").read()
    bad = data.draw(byte_mutation(good), label="npz bytes")
    assume(bad != good)
    with open(path, "wb") as f:
      f.write(bad)
    _refuses_everywhere(kind, d, path)
    assert shards.list_shards(d) == [NAME]  # listing without verify does not read the npz


# --- (b) forged NAME.npz whose record carries its correct sha256 ---------------------------
_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64, np.float16, np.float32,
           np.float64, np.bool_, np.complex64, "U3", "S3", "datetime64[s]", "timedelta64[s]",
           [("a", np.int32), ("b", np.float32)], "V4"]


@st.composite
def _forged_array(draw, good: np.ndarray) -> np.ndarray:
  """`good` with its dtype, shape or values changed (or left alone)."""
  kind = draw(st.sampled_from(["keep", "dtype", "shape", "rows", "scalar", "values", "empty"]))
  if kind == "dtype":
    return np.zeros(good.shape, draw(st.sampled_from(_DTYPES)))
  if kind == "shape":
    extra = draw(st.sampled_from([(1,), (2,), (0,), (1, 1)]))
    return np.zeros(good.shape + extra, good.dtype)
  if kind == "rows":
    return np.zeros((draw(st.integers(0, 2 * ROWS)),) + good.shape[1:], good.dtype)
  if kind == "scalar":
    return np.zeros((), good.dtype)
  if kind == "empty":
    return np.zeros((0,) * max(good.ndim, 1), good.dtype)
  if kind == "values" and good.dtype.kind in "iu":
    v = draw(st.sampled_from([-(2**31), -2, -1, K, K + 1, NUM_ITEMS, 2**31 - 1]))
    out = good.copy()
    out.flat[draw(st.integers(0, max(out.size - 1, 0)))] = v if out.size else 0
    return out
  if kind == "values" and good.dtype.kind == "f":
    out = good.copy()
    out.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    return out
  return good


def _zip_with(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", method) as z:
    for name, data in members.items():
      z.writestr(name, data)
  return buf.getvalue()


def _patch_method(data: bytes, method: int) -> bytes:
  """The zip with every member's compression method field set to `method` (e.g. 99, AES)."""
  out = bytearray(data)
  for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
    i = out.find(sig)
    while i >= 0:
      out[i + off:i + off + 2] = method.to_bytes(2, "little")
      i = out.find(sig, i + 4)
  return bytes(out)


def _patch_flags(data: bytes, bits: int) -> bytes:
  """The zip with `bits` set in every header's general-purpose flags (1: encrypted)."""
  out = bytearray(data)
  for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
    i = out.find(sig)
    while i >= 0:
      flags = int.from_bytes(out[i + off:i + off + 2], "little") | bits
      out[i + off:i + off + 2] = flags.to_bytes(2, "little")
      i = out.find(sig, i + 4)
  return bytes(out)


def _npy(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, a)
  return buf.getvalue()


def _npy_header(descr: str, shape: str) -> bytes:
  """A .npy member whose header declares `shape` (e.g. a huge one) over no data."""
  header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
  header = header.ljust(118) + "\n"
  return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin-1")


@st.composite
def _forged_npz(draw, good: dict[str, np.ndarray]) -> bytes:
  how = draw(st.sampled_from(["fields", "fields", "fields", "compressed-flip", "object",
                              "header", "method", "encrypted", "not-npy", "npy", "random",
                              "bytes-flip"]))
  if how == "random":
    return draw(st.binary(max_size=200))
  if how == "npy":
    return _npy(next(iter(good.values())))
  if how == "not-npy":
    return _zip_with({f + ".npy": draw(st.binary(max_size=64)) for f in good})
  if how == "header":
    field = draw(st.sampled_from(sorted(good)))
    shape = draw(st.sampled_from(["(1000000000000,)", "(4611686018427387904, 4)", "(-1,)",
                                  "(5, 'x')", "()", "(5,", "None"]))
    descr = draw(st.sampled_from(["<i4", "|O", "<i4x", "zz", "<U99999999999"]))
    members = {f + ".npy": _npy(a) for f, a in good.items()}
    members[field + ".npy"] = _npy_header(descr, shape)
    return _zip_with(members)
  if how == "object":
    arrays = dict(good)
    arrays[draw(st.sampled_from(sorted(good)))] = np.array([{"x": 1}, None], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
  if how in ("method", "encrypted"):
    plain = shards.encode(good)
    return (_patch_method(plain, draw(st.sampled_from([1, 6, 9, 99, 12, 14])))
            if how == "method" else _patch_flags(plain, 1))
  if how in ("compressed-flip", "bytes-flip"):
    buf = io.BytesIO()
    (np.savez_compressed if how == "compressed-flip" else np.savez)(buf, **good)
    data = bytearray(buf.getvalue())
    for _ in range(draw(st.integers(1, 4))):
      i = draw(st.integers(0, len(data) - 1))
      data[i] ^= draw(st.integers(1, 255))
    return bytes(data)
  arrays = {f: draw(_forged_array(a), label=f) for f, a in good.items()}
  for f in draw(st.sets(st.sampled_from(sorted(good)), max_size=2), label="dropped"):
    del arrays[f]
  if draw(st.booleans()):
    arrays["extra"] = np.zeros(3, np.int32)
  return shards.encode(arrays)


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(60)
@given(data=st.data())
def test_forged_npz_with_matching_sha256_is_refused_or_valid(shard_dirs, kind, data):
  """Only the content checks stand between a forged shard and its reader."""
  with copy_of(shard_dirs[kind]) as d:
    path = os.path.join(d, NAME + ".npz")
    with np.load(path) as z:
      good = {f: z[f] for f in z.files}
    forged = data.draw(_forged_npz(good), label="forged npz")
    with open(path, "wb") as f:
      f.write(forged)
    _set_record(d, {"sha256": hashlib.sha256(forged).hexdigest()})
    shard = load_or_refuse(lambda: _read(kind, d), path)
    if shard is not None:
      _assert_valid(kind, shard, ROWS)
    load_or_refuse(lambda: shards.list_shards(d, verify=True), path)


# --- (c) records and the manifest -----------------------------------------------------------
def _json_values():
  return st.recursive(
      st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                st.text(max_size=8), st.just("../x"), st.just(NAME)),
      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
      max_leaves=6)


@st.composite
def _record_mutation(draw, rec: dict) -> dict | bytes:
  """A broken record: a key changed to another value or removed, the meta's keys changed, or
  the JSON text itself corrupted."""
  how = draw(st.sampled_from(["value", "value", "drop", "meta", "bytes", "not-object"]))
  if how == "bytes":
    return draw(byte_mutation((json.dumps(rec) + "\n").encode()))
  if how == "not-object":
    return json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=2), st.integers(),
                                     st.text(max_size=4)))).encode()
  rec = dict(rec)
  key = draw(st.sampled_from(sorted(rec)))
  if how == "drop":
    del rec[key]
  elif how == "meta":
    meta = dict(rec["meta"])
    meta[draw(st.sampled_from(sorted(meta)))] = draw(_json_values())
    rec["meta"] = meta
  else:
    rec[key] = draw(st.one_of(_json_values(), st.sampled_from(
        [0, 1, ROWS + 1, -1, 2**64, "5", 5.0, "0" * 64, "requests", "labels", "other"])))
  return rec


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(60)
@given(data=st.data())
def test_broken_record_is_refused_or_reads_the_same_shard(shard_dirs, kind, data):
  with copy_of(shard_dirs[kind]) as d:
    rec_path = os.path.join(d, NAME + ".json")
    npz_path = os.path.join(d, NAME + ".npz")
    want = _read(kind, d)
    rec = json.load(open(rec_path))
    broken = data.draw(_record_mutation(rec), label="record")
    with open(rec_path, "wb") as f:
      f.write(broken if isinstance(broken, bytes) else json.dumps(broken).encode())
    got = load_or_refuse(lambda: _read(kind, d), npz_path, rec_path)
    if got is not None:
      _assert_same(got, want)
    listed = load_or_refuse(lambda: shards.list_shards(d, verify=True), npz_path, rec_path, d)
    assert listed in (None, [], [NAME])
    load_or_refuse(lambda: shards.read_manifest(d), d)


@st.composite
def _manifest_mutation(draw, manifest: dict) -> bytes:
  how = draw(st.sampled_from(["bytes", "value", "entry", "shards"]))
  if how == "bytes":
    return draw(byte_mutation(json.dumps(manifest, indent=1).encode()))
  m = json.loads(json.dumps(manifest))
  if how == "value":
    m[draw(st.sampled_from(["format", "kind", "meta", "shards"]))] = draw(_json_values())
  elif how == "entry":
    m["shards"][NAME] = draw(st.one_of(_json_values(), st.fixed_dictionaries(
        {"rows": _json_values(), "sha256": st.one_of(_json_values(), st.just("0" * 64))})))
  else:
    m["shards"][draw(st.sampled_from(["../x", "", ".hidden", "a/b", "manifest", "ok"]))] = (
        m["shards"][NAME])
  return json.dumps(m).encode()


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(40)
@given(data=st.data())
def test_broken_manifest_never_breaks_reading_the_shard(shard_dirs, kind, data):
  """manifest.json is derived data: the shard reads the same whatever it says."""
  with copy_of(shard_dirs[kind]) as d:
    want = _read(kind, d)
    path = os.path.join(d, shards.MANIFEST)
    broken = data.draw(_manifest_mutation(json.load(open(path))), label="manifest")
    with open(path, "wb") as f:
      f.write(broken)
    _assert_same(_read(kind, d), want)
    manifest = load_or_refuse(lambda: shards.read_manifest(d), d)
    if manifest is not None:
      assert set(manifest["shards"]) <= {NAME}
      for entry in manifest["shards"].values():
        assert isinstance(entry["rows"], int) and isinstance(entry["sha256"], str)
    listed = load_or_refuse(lambda: shards.list_shards(d, verify=True), d)
    assert listed in (None, [NAME])


# --- (d) shard names ------------------------------------------------------------------------
_NAMES = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="./\\\x00ab-_~ :", max_size=8),
    st.sampled_from(["..", ".", "../x", "a/../../b", "/tmp/evil", "a\x00b", ".hidden", ".lock",
                     ".tmp-x", "manifest", "manifest.json", "catalog", "catalog.npz", "DONE",
                     "x.npz", "x.json", "a" * 128, "a" * 129, "a" * 5000, "ünïcödé", "a b",
                     "a\nb", "con", "x..y", "-x", "_x", "x.", "\u202e", ""]))


@fuzz_settings(80)
@given(name=_NAMES, kind=st.sampled_from(KINDS))
def test_any_shard_name_is_refused_or_stays_inside_the_directory(name, kind):
  with scratch() as root:
    d = os.path.join(root, "shards")
    os.makedirs(d)
    before = snapshot(root)
    write = shards.write_requests if kind == "requests" else shards.write_labels
    shard, meta = (_requests(), META) if kind == "requests" else (_labels(), LMETA)
    try:
      write(d, name, shard, meta)
    except DataError as e:
      assert repr(name) in str(e) and "\n" not in str(e), str(e)
      assert snapshot(root) == before  # no partial output, no temp file
      refuse(lambda: _read(kind, d, name), repr(name), error=DataError)
      return
    # Accepted: exactly the shard's files (and the lock) appear, directly in the directory.
    assert set(snapshot(root)) - set(before) == {
        "shards/" + f for f in (f"{name}.npz", f"{name}.json", shards.MANIFEST, ".lock")}
    _assert_same(_read(kind, d, name), shard)
    assert shards.list_shards(d, verify=True) == [name]


@fuzz_settings(40)
@given(name=_NAMES)
def test_reading_any_name_is_refused_in_one_line(shard_dirs, name):
  for kind in KINDS:
    d = shard_dirs[kind]
    if name == NAME:
      continue
    refuse(lambda: _read(kind, d, name), repr(name), name, error=DataError)


@st.composite
def _bad_request_content(draw) -> shards.RequestShard:
  good = _requests()
  fields = good._asdict()
  f = draw(st.sampled_from(sorted(fields)))
  fields[f] = draw(_forged_array(fields[f]))
  return shards.RequestShard(**fields)


@fuzz_settings(30)
@given(shard=_bad_request_content())
def test_refused_request_content_leaves_no_file(shard):
  with scratch() as root:
    d = os.path.join(root, "shards")
    os.makedirs(d)
    try:
      shards.write_requests(d, NAME, shard, META)
    except DataError as e:
      assert "\n" not in str(e) and repr(NAME) in str(e)
      assert os.listdir(d) == []
      return
    _assert_valid_requests(shards.read_requests(d, NAME))


# --- (e) catalog ----------------------------------------------------------------------------
@st.composite
def _forged_catalog(draw, z: dict[str, np.ndarray]) -> bytes:
  how = draw(st.sampled_from(["bytes", "meta", "meta-json", "text", "drop", "forged-npz"]))
  if how == "bytes":
    return draw(byte_mutation(shards.encode(z)))
  arrays = dict(z)
  if how == "forged-npz":
    return draw(_forged_npz(arrays))
  if how == "drop":
    del arrays[draw(st.sampled_from(sorted(arrays)))]
  elif how == "meta-json":
    arrays["meta"] = np.array(draw(st.sampled_from(
        ["", "{", "[]", "null", "1", "{}", '{"dataset": "x"}', "\udcff"])))
  elif how == "meta":
    meta = json.loads(str(z["meta"]))
    key = draw(st.sampled_from(sorted(meta) + ["extra"]))
    if draw(st.booleans()):
      meta.pop(key, None)
    else:
      meta[key] = draw(_json_values())
    arrays["meta"] = np.array(json.dumps(meta))
  else:
    arrays["item_text"] = draw(_forged_array(z["item_text"]))
  return shards.encode(arrays)


@fuzz_settings(60)
@given(data=st.data())
def test_corrupted_or_forged_catalog_is_refused_or_valid(shard_dirs, data):
  with copy_of(shard_dirs["requests"]) as d:
    path = os.path.join(d, shards.CATALOG)
    with np.load(path) as z:
      good = {f: z[f] for f in z.files}
    with open(path, "wb") as f:
      f.write(data.draw(_forged_catalog(good), label="catalog"))
    cat = load_or_refuse(lambda: shards.read_catalog(d), path)
    if cat is not None:
      for f in ("dataset", "fingerprint", "scenario", "item_noun", "behavior"):
        assert isinstance(getattr(cat, f), str), f
      assert all(isinstance(a, str) for a in cat.attribute_names)
      assert cat.item_text.dtype.kind == "U" and cat.item_text.ndim == 2
      assert cat.item_text.shape[1] == len(cat.attribute_names)


def test_missing_files_are_refused(shard_dirs):
  for kind in KINDS:
    for fn in (NAME + ".npz", NAME + ".json"):
      with copy_of(shard_dirs[kind]) as d:
        os.unlink(os.path.join(d, fn))
        refuse(lambda: _read(kind, d), os.path.join(d, NAME), error=DataError)
  with copy_of(shard_dirs["requests"]) as d:
    os.unlink(os.path.join(d, shards.CATALOG))
    refuse(lambda: shards.read_catalog(d), os.path.join(d, shards.CATALOG), error=DataError)
    shutil.rmtree(d)
    refuse(lambda: _read("requests", d), d, error=DataError)
