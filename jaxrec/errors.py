"""User-facing errors: one line naming the file, row, field or flag, and what was expected."""


class JaxrecError(Exception):
  """Base class; CLIs print `error: <message>` and exit with status 2."""


class DataError(JaxrecError, ValueError):
  """Bad or missing input data (files, caches, env directories, shards)."""


class ConfigError(JaxrecError, ValueError):
  """A bad flag or configuration value."""


class NonFiniteError(JaxrecError, FloatingPointError):
  """NaN or inf in a loss or in the parameters; the run stopped before checkpointing it."""
