"""python -m jaxrec.sample_requests --env=DIR | --dataset=NAME --num=N --k=10 --out=DIR
    [--policy=random|popular --shard_size=S --seed=K --history_len=L --num_sessions=S]

Request shards from a fixed proposal policy (random | popular), for offline labeling jobs and
benchmarks; see jaxrec/labeling/sampling.py. Writes DIR/catalog.npz once, the shards
`requests-00000`, ... (existing ones are kept), then DIR/DONE.
"""

from __future__ import annotations

from absl import flags

from jaxrec import cli
from jaxrec.data import flags as data_flags
from jaxrec.errors import ConfigError
from jaxrec.labeling.sampling import POLICIES, SampleConfig, sample_requests

_S = SampleConfig
ENV = flags.DEFINE_string("env", "", "env directory: requests from its train env's sessions")
NUM = flags.DEFINE_integer("num", _S.num, "requests in all")
K = flags.DEFINE_integer("k", _S.k, "candidates per request (labels a.. plus one for None)")
POLICY = flags.DEFINE_enum("policy", _S.policy, list(POLICIES), "proposal policy")
SHARD_SIZE = flags.DEFINE_integer("shard_size", _S.shard_size, "rows per shard")
HISTORY_LEN = flags.DEFINE_integer("history_len", _S.history_len,
                                   "--dataset: items per history")
SESSIONS = flags.DEFINE_integer("num_sessions", _S.num_sessions, "--env: parallel sessions")
SEED = flags.DEFINE_integer("seed", _S.seed, "sampling seed")
OUT = flags.DEFINE_string("out", None, "request shard directory")


def main(argv):
  cli.reject_extra_args(argv)
  if not OUT.value:
    raise ConfigError("--out is required")
  if ENV.value and flags.FLAGS["dataset"].present:
    raise ConfigError("pass --env or --dataset, not both")
  cfg = SampleConfig(num=NUM.value, k=K.value, policy=POLICY.value, shard_size=SHARD_SIZE.value,
                     history_len=HISTORY_LEN.value, num_sessions=SESSIONS.value, seed=SEED.value)
  cfg.validate()
  ds = None if ENV.value else data_flags.dataset_from_flags()
  sample_requests(cfg, OUT.value, ENV.value, ds)


if __name__ == "__main__":
  cli.run(main)
