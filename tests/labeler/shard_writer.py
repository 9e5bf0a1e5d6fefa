"""A shard writer for the concurrency test, importable in a fresh process without JAX."""

import numpy as np

from jaxrec import shards

META = {"dataset": "toy", "fingerprint": "f" * 16, "k": 4, "history_len": 4, "num_items": 30}


def write_many(args) -> None:
  directory, worker, count = args
  rng = np.random.default_rng(worker)
  for i in range(count):
    n = 3
    req = shards.RequestShard(
        session=np.arange(n, dtype=np.int32), step=np.zeros(n, np.int32),
        history=rng.integers(0, 30, (n, 4)).astype(np.int32),
        candidates=np.stack([rng.permutation(30)[:4] for _ in range(n)]).astype(np.int32),
        user=np.zeros(n, np.int32))
    shards.write_requests(directory, f"w{worker}-{i:03d}", req, META)
