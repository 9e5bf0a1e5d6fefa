"""absl flags that place a run on devices and hosts; shared by jaxrec.train and jaxrec.pretrain.

  --mesh=auto|data:N|data:all     sessions sharded over a `data` axis of N devices
  --coordinator_address=HOST:PORT --num_processes=P --process_id=I   (one process per host)

`mesh_from_flags()` is the one call a CLI makes, first thing in main() (before any JAX
computation): it starts jax.distributed when the three process flags are given, then builds
the mesh. See jaxrec/train/sharding.py and docs/scaling.md.
"""

from __future__ import annotations

from absl import flags
from jax.sharding import Mesh

from jaxrec.train import sharding

MESH = flags.DEFINE_string(
    "mesh", "auto", "devices of the session (`data`) axis: data:N, data:all, or auto (1 device; "
    "every device of every process under --num_processes > 1)")
COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "multi-process: HOST:PORT of process 0, the same for all")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-process: processes in all")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-process: this one, 0..P-1")


def mesh_from_flags() -> Mesh:
  """jax.distributed (if asked for), then the mesh of --mesh; one-line ConfigErrors."""
  cfg = sharding.MeshConfig.parse(MESH.value)
  multi = sharding.maybe_initialize_distributed(COORDINATOR.value, NUM_PROCESSES.value,
                                                PROCESS_ID.value)
  if not multi:
    sharding.request_cpu_devices(cfg.data)
  return sharding.make_mesh(cfg)
