"""Shared pieces of the absl launchers: one-line errors and the dataset flags."""

from __future__ import annotations

import functools
import json
import sys

from absl import app, flags, logging

from jaxrec.errors import JaxrecError
from jaxrec.io import atomic_write_text
from jaxrec.faults import PREEMPTED_EXIT, Preempted


def one_line(message: object) -> str:
  """The message on one line: line breaks (a path or a catalog value may hold one) and other
  control characters are written as escapes, so `error: ...` stays a single line. Unlike
  `jaxrec.io.one_line` (an exception's text embedded in another message: whitespace collapsed,
  cut at a limit), nothing is dropped: the message is the user's only clue."""
  return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(message))


def one_line_errors(main):
  """Wraps an absl `main(argv)`: a JaxrecError prints `error: <msg>` and exits with status 2;
  a SIGTERM the job stopped for cleanly (faults.Preempted) prints `preempted: <msg>` and exits
  with 143, as an unhandled SIGTERM would, so schedulers see a preemption. Either message is
  one line (`one_line`)."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except Preempted as e:
      print(f"preempted: {one_line(e)}", file=sys.stderr)
      sys.exit(PREEMPTED_EXIT)
    except JaxrecError as e:
      print(f"error: {one_line(e)}", file=sys.stderr)
      sys.exit(2)

  return wrapped


def emit_json(result: dict, out: str | None) -> None:
  """Writes `result` as indented JSON to `out` atomically (when given), then prints it."""
  text = json.dumps(result, indent=2) + "\n"
  if out:
    atomic_write_text(out, text)
  print(text, end="")


def reject_extra_args(argv) -> None:
  if len(argv) > 1:
    raise JaxrecError(f"unexpected positional arguments {argv[1:]}; every option is a --flag")


def run(main) -> None:
  """absl `app.run` with library INFO logs (orbax writes a dozen per save) off unless the user
  passes --verbosity; progress lines are printed, not logged."""

  def quiet_main(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    return main(argv)

  app.run(one_line_errors(quiet_main), flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag value (an unknown choice, a non-number) reported as
  every other bad input is: one line on stderr, exit code 2 (absl prints two and exits 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    sys.exit(2)
