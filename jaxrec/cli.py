"""Shared pieces of the absl launchers: one-line errors and the dataset flags."""

from __future__ import annotations

import functools
import sys

from jaxrec.errors import JaxrecError


def one_line_errors(main):
  """Wraps an absl `main(argv)`: a JaxrecError prints `error: <msg>` and exits with status 2."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except JaxrecError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  return wrapped


def reject_extra_args(argv) -> None:
  if len(argv) > 1:
    raise JaxrecError(f"unexpected positional arguments {argv[1:]}; every option is a --flag")
