"""Atomic file writes: a temp file beside the target, fsync, rename. Readers never see half a
file, and a killed writer leaves at most a `.tmp-*` file that the next writer ignores.
`read_json_object` and `read_npz` are the matching readers: every malformed file is a one-line
DataError naming it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator

import numpy as np

from jaxrec.errors import DataError
from jaxrec.faults import failpoint


@functools.cache
def umask() -> int:
  """The process umask, read once, on first use: from /proc/self/status where the kernel shows
  it (Linux >= 4.7), else by setting and restoring it."""
  with contextlib.suppress(OSError, ValueError):
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def _temp_file(directory: str, suffix: str, prefix: str, mode: str = "wb") -> Iterator:
  """A new temp file of `directory` with the mode a plain open() would give (mkstemp's 0600
  would hide it from other users): yields (file, path); flushed and fsynced when the body
  ends, removed if it raises."""
  fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
  try:
    os.fchmod(fd, 0o666 & ~umask())
    with os.fdopen(fd, mode) as f:
      yield f, tmp
      f.flush()
      os.fsync(f.fileno())
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def write_temp(directory: str, data: bytes, suffix: str = "", prefix: str = ".tmp-") -> str:
  """`data` in a new fsynced temp file of `directory`; returns its path. The caller renames it
  into place or removes it."""
  with _temp_file(directory, suffix, prefix) as (f, tmp):
    f.write(data)
  return tmp


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb", prefix: str = ".tmp-", point: str = "") -> Iterator:
  """Writes `path` through a temp file (`prefix`) renamed into place once the body is done;
  `point`: a failpoint (jaxrec.faults) between the two."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with _temp_file(directory, os.path.splitext(path)[1], prefix, mode) as (f, tmp):
    yield f
  try:
    if point:
      failpoint(point)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def sha256_file(path: str) -> str:
  """Hex sha256 of a file, read in 1 MiB blocks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def atomic_savez(path: str, **arrays: np.ndarray) -> None:
  with atomic_open(path, "wb") as f:
    np.savez(f, **arrays)


def atomic_write_text(path: str, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def atomic_write_jsonl(path: str, rows: list[dict]) -> None:
  """Writes `rows` one JSON object per line, atomically (read back by `read_jsonl`)."""
  atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def one_line(e: BaseException, limit: int = 200) -> str:
  """An exception's text with newlines and runs of whitespace collapsed, cut at `limit`."""
  text = " ".join(str(e).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def read_npz(path: str, data: bytes | None = None,
             label: str = "unreadable npz") -> dict[str, np.ndarray]:
  """Every array of the .npz at `path` (or of its bytes `data`), read with allow_pickle=False.
  Malformed content is a one-line DataError `{path}: {label} (reason)`; FileNotFoundError
  passes through."""
  source = path if data is None else io.BytesIO(data)
  try:
    z = np.load(source, allow_pickle=False)
    if not isinstance(z, np.lib.npyio.NpzFile):
      raise DataError(f"{path}: {label} (a single array, not an .npz archive)")
    with z:
      arrays = {f: z[f] for f in z.files}
  except (FileNotFoundError, DataError):
    raise
  # A damaged archive raises from zipfile (BadZipFile, NotImplementedError, RuntimeError), zlib,
  # NumPy's header parser (ValueError, SyntaxError, tokenize.TokenError) or the allocation of a
  # declared shape (MemoryError): no common base below Exception.
  except Exception as e:  # noqa: BLE001
    raise DataError(f"{path}: {label} ({type(e).__name__}: {one_line(e)})") from None
  for f, a in arrays.items():
    if not isinstance(a, np.ndarray):  # NpzFile returns a member without the .npy magic as bytes
      raise DataError(f"{path}: {label} (member {f!r} is not an .npy array)")
  return arrays


def read_json_object(path: str, what: str = "") -> dict:
  """The JSON object in `path`; unreadable text or another JSON value is a one-line DataError
  naming the file. FileNotFoundError passes through: callers say what directory it is not."""
  label = f"unreadable {what}".rstrip()
  try:
    with open(path) as f:
      value = json.load(f)
  except FileNotFoundError:
    raise
  except (OSError, ValueError, RecursionError) as e:  # RecursionError: nesting too deep
    raise DataError(f"{path}: {label} ({type(e).__name__}: {one_line(e)})") from None
  if not isinstance(value, dict):
    raise DataError(f"{path}: {label} (not a JSON object)")
  return value


def read_jsonl(path: str, what: str = "") -> list[dict]:
  """The JSON objects of `path`, one per non-blank line; a line that is not one is a one-line
  DataError naming the file and line. FileNotFoundError passes through."""
  label = f"unreadable {what}".rstrip()
  rows = []
  try:
    with open(path) as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          value = json.loads(line)
        except (ValueError, RecursionError) as e:
          raise DataError(f"{path}:{number}: {label} "
                          f"({type(e).__name__}: {one_line(e)})") from None
        if not isinstance(value, dict):
          raise DataError(f"{path}:{number}: {label} (not a JSON object)")
        rows.append(value)
  except FileNotFoundError:
    raise
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: {label} ({type(e).__name__}: {one_line(e)})") from None
  return rows
