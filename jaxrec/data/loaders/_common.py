"""Reading helpers shared by the real-format loaders.

Every failure becomes a one-line `DataError` that names the file, the 1-based line number and
the field, so a user can open the file at that line. Files are read as bytes and decoded line by
line: a text-mode reader decodes in blocks and would report an encoding error at the wrong line.
Blank lines (trailing newlines, `\\r\\n` endings) are skipped everywhere; line numbers still
count them.
"""

from __future__ import annotations

import contextlib
import csv
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


# Column kinds of read_csv_columns: "int" (int64), "flag" (int64, 0 or 1), "float" (finite
# float64), "float_nan" (float64; an empty cell is NaN, "nan" / "inf" are kept: the caller
# follows its peer's rule), "seconds" (a time in seconds such as 1593878903.438, returned as
# int64 milliseconds: rounding to the ms is exact below 2**53 ms, about 285,000 years).
_CSV_DTYPES = {"int": "<i8", "flag": "<i8", "float": "<f8", "float_nan": "<f8", "seconds": "<f8"}
_MAX_SECONDS = 2.0**53 / 1000.0


def read_csv_columns(path: str, columns: Sequence[tuple[str, str]],
                     block_bytes: int = 1 << 26) -> dict[str, np.ndarray]:
  """Reads the named columns of a comma-separated file with a header line (pandas' to_csv
  layout, no quoted cells in the columns read) -> {name: [N] array}.

  columns: (header name, kind) pairs, kind one of _CSV_DTYPES' keys (above). Other
  columns are only counted: every line must have as many cells as the header. Blocks of whole
  lines go through NumPy's C parser (KuaiRec's big_matrix.csv has 12.5M rows); a block that
  fails, or holds an empty "float_nan" cell, is re-read line by line, which names the bad line.
  """
  with open_binary(path) as f:
    header_line, names = _csv_header(path, f)
    col = {name: j for j, name in enumerate(names)}
    for name, kind in columns:
      assert kind in _CSV_DTYPES, kind
      if name not in col:
        found = ", ".join(n if n.isprintable() else repr(n) for n in names)
        raise DataError(f"{path}:{header_line}: header has no {name} column (found: {found})")
    spec = _CsvSpec(path, len(names), tuple(col[n] for n, _ in columns), tuple(columns))
    parts = [spec.empty()]
    first_line = header_line + 1
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
        parts.append(spec.parse(block, first_line))
      first_line += block.count(b"\n")
  out = np.concatenate(parts)
  return {name: (np.rint(out[name] * 1000.0).astype(np.int64) if kind == "seconds"
                 else out[name]) for name, kind in columns}


def _csv_header(path: str, f: BinaryIO) -> tuple[int, list[str]]:
  """(line number, column names) of the first non-blank line."""
  lineno = 0
  try:
    for lineno, raw in enumerate(f, 1):
      raw = raw.rstrip(b"\r\n")
      if raw:
        break
    else:
      raw = b""
  except _READ_ERRORS as e:
    raise DataError(f"{path}:{lineno + 1}: unreadable ({type(e).__name__}: {e})") from None
  if not raw:
    raise DataError(f"{path}: empty file, expected a header line of comma-separated names")
  try:
    text = raw.decode("utf-8").removeprefix("\ufeff")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}:{lineno}: not valid utf-8 at byte {e.start + 1} of the line"
                    ) from None
  return lineno, [name.strip().strip('"') for name in text.split(",")]


class _CsvSpec:
  """How read_csv_columns parses one block: the fast NumPy path, else line by line."""

  def __init__(self, path: str, ncols: int, usecols: tuple[int, ...],
               columns: tuple[tuple[str, str], ...]):
    self.path, self.ncols, self.usecols, self.columns = path, ncols, usecols, columns
    self.dtype = np.dtype([(name, _CSV_DTYPES[kind]) for name, kind in columns])

  def empty(self) -> np.ndarray:
    return np.zeros(0, self.dtype)

  def parse(self, block: bytes, first_line: int) -> np.ndarray:
    try:
      out = np.loadtxt(io.BytesIO(block), dtype=self.dtype, delimiter=",", usecols=self.usecols,
                       comments=None, ndmin=1)
    except ValueError:
      out = None
    if (out is not None and block.count(b",") == (self.ncols - 1) * len(out)
        and all(_valid(out[name], kind) for name, kind in self.columns)):
      return out
    return self._parse_lines(block, first_line)

  def _parse_lines(self, block: bytes, first_line: int) -> np.ndarray:
    rows = []
    for offset, raw in enumerate(block.split(b"\n")):
      raw = raw.rstrip(b"\r")
      if raw:
        rows.append(self._parse_line(raw, first_line + offset))
    return np.array(rows, self.dtype)

  def _parse_line(self, raw: bytes, lineno: int) -> tuple:
    path = self.path
    cells = raw.split(b",")
    if len(cells) != self.ncols:
      raise DataError(f"{path}:{lineno}: expected {self.ncols} comma-separated cells (as many "
                      f"as the header), got {len(cells)}")
    out = []
    for (name, kind), j in zip(self.columns, self.usecols):
      text = cells[j].decode("ascii", "replace").strip()
      if kind in ("int", "flag"):
        value = to_int(path, lineno, name, text)
        if kind == "flag" and value not in (0, 1):
          raise DataError(f"{path}:{lineno}: field {name}: expected 0 or 1, got {text!r}")
        out.append(value)
      elif kind == "float_nan" and text == "":
        out.append(float("nan"))
      else:
        value = _any_float(path, lineno, name, text)
        if kind == "float" and not np.isfinite(value):
          raise DataError(f"{path}:{lineno}: field {name}: expected a finite number, got {text!r}")
        if kind == "seconds" and not abs(value) < _MAX_SECONDS:
          raise DataError(f"{path}:{lineno}: field {name}: expected a time in seconds, got "
                          f"{text!r}")
        out.append(value)
    return tuple(out)


def _valid(values: np.ndarray, kind: str) -> bool:
  if kind == "flag":
    return bool(np.all((values == 0) | (values == 1)))
  if kind == "seconds":
    return bool(np.all(np.abs(values) < _MAX_SECONDS))  # NaN fails too
  return kind != "float" or bool(np.isfinite(values).all())


def _any_float(path: str, lineno: int, field: str, text: str) -> float:
  """float(text), non-finite values included; "_" refused as NumPy's parser refuses it."""
  try:
    if "_" in text:
      raise ValueError(text)
    return float(text)
  except ValueError:
    raise DataError(f"{path}:{lineno}: field {field}: expected a number, got {text!r}") from None


def iter_csv_rows(path: str, required: Sequence[str]) -> tuple[dict[str, int],
                                                                Iterator[tuple[int, list[str]]]]:
  """(column name -> index, iterator of (line number, cells)) of a small CSV file with a header
  line and quoted cells (Python's csv module, one line at a time: a cell may hold commas but no
  newline). Every line must have as many cells as the header, which must name `required`."""
  lines = iter_lines(path, "utf-8")
  first = next(lines, None)
  if first is None:
    raise DataError(f"{path}: empty file, expected a header line ({', '.join(required)}, ...)")
  lineno, header = first
  names = [c.strip() for c in header.removeprefix("\ufeff").split(",")]
  for name in required:
    if name not in names:
      found = ", ".join(n if n.isprintable() else repr(n) for n in names)
      raise DataError(f"{path}:{lineno}: header has no {name} column (found: {found})")

  def rows() -> Iterator[tuple[int, list[str]]]:
    for n, line in lines:
      try:
        cells = next(csv.reader([line]))
      except csv.Error as e:
        raise DataError(f"{path}:{n}: malformed CSV ({e})") from None
      if len(cells) != len(names):
        raise DataError(f"{path}:{n}: expected {len(names)} comma-separated cells (as many as "
                        f"the header; a cell holding commas is quoted), got {len(cells)}")
      yield n, cells

  return {name: j for j, name in enumerate(names)}, rows()


def multi_hot(tags: dict[str, tuple[int, ...]], prefix: str = "tag"
              ) -> tuple[dict[str, np.ndarray], list[str]]:
  """key -> tag ids  ->  (key -> [T] float32 0/1 row, the T names `prefix:id` in id order)."""
  ids = sorted({t for row in tags.values() for t in row})
  column = {t: j for j, t in enumerate(ids)}
  table = {}
  for key, row in tags.items():
    vec = np.zeros(len(ids), np.float32)
    vec[[column[t] for t in row]] = 1.0
    table[key] = vec
  return table, [f"{prefix}:{t}" for t in ids]


def clean_text(value: object) -> str:
  """A display string: whitespace collapsed, "unknown" when empty or missing."""
  if value is None:
    return UNKNOWN
  text = " ".join(str(value).split())
  return text or UNKNOWN
