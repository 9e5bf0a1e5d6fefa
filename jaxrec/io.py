"""Atomic file writes: a temp file beside the target, fsync, rename. Readers never see half a
file, and a killed writer leaves at most a `.tmp-*` file that the next writer ignores.
`read_json_object` is the matching reader of the JSON files they write."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator

import numpy as np

from jaxrec.errors import DataError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
  try:
    os.fchmod(fd, 0o666 & ~_UMASK)
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def atomic_savez(path: str, **arrays: np.ndarray) -> None:
  with atomic_open(path, "wb") as f:
    np.savez(f, **arrays)


def atomic_write_text(path: str, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def read_json_object(path: str, what: str = "") -> dict:
  """The JSON object in `path`; unreadable text or another JSON value is a one-line DataError
  naming the file. FileNotFoundError passes through: callers say what directory it is not."""
  label = f"unreadable {what}".rstrip()
  try:
    with open(path) as f:
      value = json.load(f)
  except FileNotFoundError:
    raise
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: {label} ({type(e).__name__}: {e})") from None
  if not isinstance(value, dict):
    raise DataError(f"{path}: {label} (not a JSON object)")
  return value
