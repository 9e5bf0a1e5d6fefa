"""python -m llm_labeler.label --requests=DIR --out=DIR --backend=vllm|hf|oracle [...]

Labels every request shard of DIR that has no label shard in --out yet (resumable, idempotent;
see llm_labeler/job.py). --num_workers/--worker_id split the shards between processes or hosts
sharing --out; --follow keeps polling DIR until DIR/DONE exists and every shard is labeled.
The oracle backend is a SIMULATED judge on the --env train user model, not an LLM. The flags
are LabelConfig's options (jaxrec.config).
"""

from __future__ import annotations

from jaxrec import cli, config
from llm_labeler.job import LabelConfig, label_directory

config.define_flags(LabelConfig)


def config_from_flags() -> LabelConfig:
  return config.from_flags(LabelConfig)


def main(argv):
  cli.reject_extra_args(argv)
  summary = label_directory(config_from_flags(), log=lambda s: print(s, flush=True))
  print(f"done: labeled {len(summary['labeled'])} shards ({summary['rows']} rows, "
        f"{summary['invalid']} invalid), {summary['skipped']} were already labeled", flush=True)


if __name__ == "__main__":
  cli.run(main)
