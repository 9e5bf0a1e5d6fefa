"""Checks and mutations shared by the fuzz tests.

The contract under test (issue 8): a reader given bad input either returns normally (some
mutations leave a valid file) or raises a JaxrecError whose message is one line naming the
file. Any other exception escaping is a bug in the reader.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from jaxrec.errors import JaxrecError

# JAXREC_FUZZ_SCALE=N multiplies every test's example count, for a deeper run by hand.
_SCALE = int(os.environ.get("JAXREC_FUZZ_SCALE", "1"))


def fuzz_settings(max_examples: int) -> settings:
  """Modest example counts (the default suite stays fast), no deadline (a loaded machine)."""
  return settings(max_examples=max_examples * _SCALE, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow])


# Tokens that break parsers in different ways: non-numbers, non-finite floats, ints past int64,
# separators, non-UTF-8 bytes, NUL, a lone surrogate's bytes, JSON fragments.
NASTY = [
    b"", b"nan", b"NaN", b"inf", b"-inf", b"1e999", b"-1", b"1.5", b"0x10", b"1_000", b"+3",
    b"99999999999999999999999999", b"-99999999999999999999999999", b"9223372036854775808",
    b"abc", b"\t", b"\t\t\t", b"::", b"|", b" ", b"\x00", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80",
    b"\r", b"\n", b"{", b"}", b"[]", b"null", b"true", b'{"a": 1}', b'"x"', b"\\u0000",
    b"1e300", b"[" * 100_000,  # a finite float too big for int64; nesting past the limit
]


def check_refusal(err: BaseException, *names: str) -> str:
  """The message of a refusal: a JaxrecError, one line, naming one of `names` (paths)."""
  assert isinstance(err, JaxrecError), f"{type(err).__name__} escaped: {err!r}"
  msg = str(err)
  assert msg and "\n" not in msg and "\r" not in msg, f"not one line: {msg!r}"
  assert any(n in msg for n in names), f"{msg!r} names none of {names}"
  return msg


def load_or_refuse(fn: Callable, *names: str):
  """fn() or None when it refused with a proper one-line error naming one of `names`; any
  other exception propagates and fails the test."""
  try:
    return fn()
  except JaxrecError as e:
    check_refusal(e, *names)
    return None


def refuse(fn: Callable, *names: str, error: type = JaxrecError) -> str:
  """Asserts fn() raises `error` with a one-line message naming one of `names`."""
  try:
    fn()
  except JaxrecError as e:
    assert isinstance(e, error), f"{type(e).__name__}, expected {error.__name__}: {e}"
    return check_refusal(e, *names)
  raise AssertionError(f"accepted, expected {error.__name__} naming {names}")


@contextlib.contextmanager
def copy_of(src: str) -> Iterator[str]:
  """A fresh copy of the directory `src` (one per hypothesis example), removed afterwards."""
  root = tempfile.mkdtemp(prefix="jaxrec-fuzz-")
  try:
    dst = os.path.join(root, os.path.basename(src.rstrip("/")))
    shutil.copytree(src, dst)
    yield dst
  finally:
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def scratch() -> Iterator[str]:
  root = tempfile.mkdtemp(prefix="jaxrec-fuzz-")
  try:
    yield root
  finally:
    shutil.rmtree(root, ignore_errors=True)


def files_under(directory: str) -> list[str]:
  """Relative paths of every file under `directory`, sorted."""
  return sorted(os.path.relpath(os.path.join(r, f), directory)
                for r, _, fs in os.walk(directory) for f in fs)


def snapshot(directory: str) -> dict[str, tuple[int, int]]:
  """Every path under `directory` (relative) -> (size, mtime_ns): to check nothing changed."""
  out = {}
  for root, dirs, files in os.walk(directory):
    for fn in dirs + files:
      p = os.path.join(root, fn)
      st_ = os.lstat(p)
      out[os.path.relpath(p, directory)] = (st_.st_size, st_.st_mtime_ns)
  return out


@st.composite
def byte_mutation(draw, data: bytes) -> bytes:
  """One random corruption of `data`: truncate, flip a byte, insert or overwrite bytes, or
  replace, drop or duplicate a line."""
  n = len(data)
  kind = draw(st.sampled_from(["truncate", "flip", "insert", "overwrite", "line", "drop_line",
                               "dup_line", "empty"]))
  if kind == "empty" or n == 0:
    return b""
  if kind == "truncate":
    return data[:draw(st.integers(0, n - 1))]
  if kind == "flip":
    i = draw(st.integers(0, n - 1))
    return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
  if kind in ("insert", "overwrite"):
    i = draw(st.integers(0, n))
    junk = draw(st.one_of(st.sampled_from(NASTY), st.binary(min_size=1, max_size=16)))
    end = i + (len(junk) if kind == "overwrite" else 0)
    return data[:i] + junk + data[end:]
  lines = data.split(b"\n")
  j = draw(st.integers(0, len(lines) - 1))
  if kind == "drop_line":
    return b"\n".join(lines[:j] + lines[j + 1:])
  if kind == "dup_line":
    return b"\n".join(lines[:j + 1] + lines[j:])
  return b"\n".join(lines[:j] + [draw(line_garbage(lines[j]))] + lines[j + 1:])


@st.composite
def line_garbage(draw, line: bytes) -> bytes:
  """A line with one field replaced by a nasty token, a field added or removed, or noise."""
  for sep in (b"::", b"\t", b"|", b" ", b","):
    if sep in line:
      break
  else:
    sep = b"\t"
  fields = line.split(sep)
  kind = draw(st.sampled_from(["field", "add", "remove", "noise"]))
  if kind == "noise":
    return draw(st.binary(max_size=40))
  if kind == "add":
    return line + sep + draw(st.sampled_from(NASTY))
  if kind == "remove" and len(fields) > 1:
    del fields[draw(st.integers(0, len(fields) - 1))]
    return sep.join(fields)
  fields[draw(st.integers(0, len(fields) - 1))] = draw(st.sampled_from(NASTY))
  return sep.join(fields)
