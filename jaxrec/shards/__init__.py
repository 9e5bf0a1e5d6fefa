"""Preference shards: the one format shared by jaxrec (pre-training) and llm_labeler.

A shard directory holds shards of one kind, "requests" or "labels":

  NAME.npz         the arrays (np.savez, uncompressed; read with allow_pickle=False)
  NAME.json        the shard's record: kind, rows, sha256 of NAME.npz, the directory meta
  manifest.json    the directory manifest: format, kind, meta, {name: {rows, sha256}}
  catalog.npz      (request directories) the item catalog for prompts, written once
  DONE             (request directories) written by the producer when no shard will follow

Request shard (N rows, k candidates, L history slots):
  session [N] int32, step [N] int32, history [N, L] int32 (item ids, right-aligned, -1 padding,
  as env observations), candidates [N, k] int32 (item ids >= 0), user [N] int32 (-1 where the
  env does not model users).
Label shard: choice [N] int32 (0..k-1 a candidate, k = "None"), valid [N] bool (False: the
  response could not be parsed; choice is then k), optional logprobs [N, k+1] float32.
A label shard has the name of its request shard (`label_name`) and lives in its own directory.

Several writers, one directory (labeler workers on different hosts sharing a filesystem):
the per-shard records NAME.json are the source of truth; manifest.json is derived from them.
Committing a shard takes an exclusive POSIX lock (fcntl.lockf, which NFS forwards to its lock
manager) on DIR/.lock and, under it: refuses a name that already has a verified shard, checks
that the meta agrees with the directory's, renames NAME.npz then NAME.json into place, and
rewrites manifest.json from every record present. Each commit re-derives the manifest under the
lock after its own record exists, so the last commit's manifest lists every committed shard: no
read-modify-write of a shared list can lose an entry, and a writer killed between the rename of
NAME.npz and NAME.json leaves a shard with no record, which counts as absent and is rewritten.
Readers never take the lock: they verify NAME.npz against NAME.json (rows, sha256, fields,
dtypes, shapes) and fail with a one-line DataError naming the shard.

Temporary files are `.tmp-HOST-PID-*`: a later run on the same host removes those of dead
processes (`remove_stale_temps`) and leaves live writers' and other hosts' files alone.
"""

from jaxrec.shards.catalog import catalog_of, read_catalog, write_catalog
from jaxrec.shards.format import (CATALOG, CONSISTENT_KEYS, DONE, FORMAT, KINDS, LEA_TEMPLATE,
                                  MANIFEST, MAX_K,
                                  Catalog, LabelShard, RequestShard, ShardExistsError,
                                  check_name, encode, label_name)
from jaxrec.shards.store import (check_meta, directory_meta, is_done, list_shards, locked,
                                 mark_done, read_labels, read_manifest, read_requests,
                                 remove_stale_temps, repair_manifest, write_labels,
                                 write_requests)

__all__ = ["CATALOG", "CONSISTENT_KEYS", "DONE", "FORMAT", "KINDS", "LEA_TEMPLATE", "MANIFEST",
           "MAX_K", "Catalog", "LabelShard", "RequestShard", "ShardExistsError", "catalog_of",
           "check_meta", "check_name", "directory_meta", "encode", "is_done", "label_name",
           "list_shards", "locked", "mark_done", "read_catalog", "read_labels", "read_manifest",
           "read_requests", "remove_stale_temps", "repair_manifest", "write_catalog",
           "write_labels", "write_requests"]
