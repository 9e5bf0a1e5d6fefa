"""Reading helpers shared by the real-format loaders.

Every failure becomes a one-line `DataError` that names the file, the 1-based line number and
the field, so a user can open the file at that line. Files are read as bytes and decoded line by
line: a text-mode reader decodes in blocks and would report an encoding error at the wrong line.
Blank lines (trailing newlines, `\\r\\n` endings) are skipped everywhere; line numbers still
count them.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zlib
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np

from jaxrec.errors import DataError

UNKNOWN = "unknown"
_INT64 = np.iinfo(np.int64)
# Errors a truncated or mislabeled gzip file raises while being read.
_READ_ERRORS = (OSError, EOFError, zlib.error)


def require_dir(data_dir: str, dataset: str) -> None:
  if not os.path.isdir(data_dir):
    raise DataError(f"{data_dir}: not a directory (--data_dir for dataset {dataset!r})")


def find_file(data_dir: str, name: str, gz: bool = False) -> str:
  """Path of `name` in data_dir; with gz=True `name.gz` is accepted too (the plain file wins)."""
  candidates = [name, name + ".gz"] if gz else [name]
  for c in candidates:
    path = os.path.join(data_dir, c)
    if os.path.isfile(path):
      return path
  alt = f" (or {name}.gz)" if gz else ""
  raise DataError(f"{os.path.join(data_dir, name)}: file not found{alt}")


@contextlib.contextmanager
def open_binary(path: str) -> Iterator[BinaryIO]:
  """Opens a plain or (by the `.gz` suffix) gzipped file for reading bytes."""
  try:
    f = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
  except FileNotFoundError:
    raise DataError(f"{path}: file not found") from None
  except OSError as e:
    raise DataError(f"{path}: cannot open ({e.strerror or e})") from None
  with f:
    yield f


def iter_raw_lines(path: str) -> Iterator[tuple[int, bytes]]:
  """Yields (1-based line number, line bytes without the newline), skipping blank lines."""
  lineno = 0
  with open_binary(path) as f:
    try:
      for lineno, raw in enumerate(f, 1):
        raw = raw.rstrip(b"\r\n")
        if raw:
          yield lineno, raw
    except _READ_ERRORS as e:
      raise DataError(f"{path}:{lineno + 1}: unreadable ({type(e).__name__}: {e})") from None


def iter_lines(path: str, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
  """Like iter_raw_lines, decoded; an undecodable line is a DataError naming the encoding."""
  for lineno, raw in iter_raw_lines(path):
    try:
      yield lineno, raw.decode(encoding)
    except UnicodeDecodeError as e:
      raise DataError(f"{path}:{lineno}: not valid {encoding} at byte {e.start + 1} of the line"
                      ) from None


def describe(names: Sequence[str], sep_name: str) -> str:
  return f"{len(names)} {sep_name}-separated fields ({', '.join(names)})"


def split_fields(path: str, lineno: int, line: str, sep: str, names: Sequence[str],
                 sep_name: str) -> list[str]:
  """Splits a line into exactly len(names) fields."""
  fields = line.split(sep)
  if len(fields) != len(names):
    raise DataError(f"{path}:{lineno}: expected {describe(names, sep_name)}, got {len(fields)}")
  return fields


def to_int(path: str, lineno: int, field: str, value: str | bytes | int) -> int:
  text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
  try:
    # int() takes "1_000" but NumPy's parser in read_int_columns does not; both must agree.
    if isinstance(text, str) and "_" in text:
      raise ValueError(text)
    out = int(text)
  except ValueError:
    raise DataError(f"{path}:{lineno}: field {field}: expected an integer, got {text!r}"
                    ) from None
  if not _INT64.min <= out <= _INT64.max:
    raise DataError(f"{path}:{lineno}: field {field}: integer {out} out of the int64 range")
  return out


def to_float(path: str, lineno: int, field: str, value: str) -> float:
  try:
    out = float(value)
  except ValueError:
    raise DataError(f"{path}:{lineno}: field {field}: expected a number, got {value!r}") from None
  if not np.isfinite(out):
    raise DataError(f"{path}:{lineno}: field {field}: expected a finite number, got {value!r}")
  return out


def read_int_columns(path: str, names: Sequence[str], sep: bytes = b"\t",
                     sep_name: str = "tab", block_bytes: int = 1 << 26) -> np.ndarray:
  """Reads an all-integer delimited file into a [N, len(names)] int64 array.

  Blocks of whole lines go through NumPy's C parser (the real Last.fm file has ~1e9 rows; a
  Python loop is ~20x slower); only a block that fails is re-scanned line by line to name the
  bad line and field.
  """
  parts = [np.zeros((0, len(names)), np.int64)]
  first_line = 1  # number of the block's first line
  with open_binary(path) as f:
    while True:
      try:
        block = f.read(block_bytes)
        if block and not block.endswith(b"\n"):
          block += f.readline()
      except _READ_ERRORS as e:
        raise DataError(f"{path}:{first_line}: unreadable at or after this line "
                        f"({type(e).__name__}: {e})") from None
      if not block:
        break
      if block.strip():
        parts.append(_parse_block(path, block, first_line, names, sep, sep_name))
      first_line += block.count(b"\n")
  return np.concatenate(parts)


def _parse_block(path: str, block: bytes, first_line: int, names: Sequence[str], sep: bytes,
                 sep_name: str) -> np.ndarray:
  # loadtxt takes a one-character delimiter only; MovieLens-1M's "::" becomes a tab.
  text = block if len(sep) == 1 else block.replace(sep, b"\t")
  delimiter = sep.decode() if len(sep) == 1 else "\t"
  try:
    out = np.loadtxt(io.BytesIO(text), dtype=np.int64, delimiter=delimiter, comments=None,
                     ndmin=2)
    if out.shape[1] == len(names):
      return out
  except ValueError:
    pass
  for offset, raw in enumerate(block.split(b"\n")):
    raw = raw.rstrip(b"\r")
    if not raw:
      continue
    lineno = first_line + offset
    fields = raw.split(sep)
    if len(fields) != len(names):
      raise DataError(f"{path}:{lineno}: expected {describe(names, sep_name)}, "
                      f"got {len(fields)}")
    for name, value in zip(names, fields):
      to_int(path, lineno, name, value)
  last = first_line + block.count(b"\n")
  raise DataError(f"{path}:{first_line}-{last}: rows NumPy cannot parse as integers")


def clean_text(value: object) -> str:
  """A display string: whitespace collapsed, "unknown" when empty or missing."""
  if value is None:
    return UNKNOWN
  text = " ".join(str(value).split())
  return text or UNKNOWN
