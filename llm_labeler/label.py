"""python -m llm_labeler.label --requests=DIR --out=DIR --backend=vllm|hf|oracle [...]

Labels every request shard of DIR that has no label shard in --out yet (resumable, idempotent;
see llm_labeler/job.py). --num_workers/--worker_id split the shards between processes or hosts
sharing --out; --follow keeps polling DIR until DIR/DONE exists and every shard is labeled.
The oracle backend is a SIMULATED judge on the --env train user model, not an LLM.
"""

from __future__ import annotations

from absl import flags

from jaxrec import cli
from llm_labeler.backends import BACKENDS
from llm_labeler.job import LabelConfig, label_directory

_C = LabelConfig
REQUESTS = flags.DEFINE_string("requests", None, "request shard directory")
OUT = flags.DEFINE_string("out", None, "label shard directory (created; resumed if it exists)")
BACKEND = flags.DEFINE_enum("backend", _C.backend, list(BACKENDS), "labeler backend")
ENV = flags.DEFINE_string("env", "", "env directory: the oracle's judge; catalog fallback")
MODEL = flags.DEFINE_string("model", "", "vllm/hf: local model directory (hf: or a .gguf file)")
LORA = flags.DEFINE_string("lora_path", "", "vllm: LoRA adapter directory")
TP = flags.DEFINE_integer("tensor_parallel_size", _C.tensor_parallel_size, "vllm: GPUs per model")
MAX_SEQS = flags.DEFINE_integer("max_num_seqs", _C.max_num_seqs, "vllm: concurrent sequences")
DTYPE = flags.DEFINE_string("dtype", _C.dtype, "model dtype (auto, bfloat16, float16, float32)")
GPU_MEM = flags.DEFINE_float("gpu_memory_utilization", _C.gpu_memory_utilization,
                             "vllm: share of accelerator memory for weights + KV cache")
MAX_LEN = flags.DEFINE_integer("max_model_len", _C.max_model_len, "vllm: context cap (0 = model)")
CONSTRAINT = flags.DEFINE_enum("constraint", _C.constraint, ["tokens", "choice"],
                               "vllm: allowed_token_ids (tokens) or structured outputs (choice)")
PREFIX = flags.DEFINE_bool("prefix_caching", _C.prefix_caching,
                           "vllm: reuse the KV cache of the shared prompt prefix")
EAGER = flags.DEFINE_bool("enforce_eager", _C.enforce_eager,
                          "vllm: no torch.compile / graphs (fast start; CPU tests)")
CHAT = flags.DEFINE_bool("chat_template", _C.chat_template,
                         "wrap the prompt in the tokenizer's chat template (instruct models)")
BATCH = flags.DEFINE_integer("batch_size", _C.batch_size, "hf: prompts per forward pass")
DEVICE = flags.DEFINE_string("device", _C.device, "hf: torch device (cpu, cuda, cuda:N)")
O_TEMP = flags.DEFINE_float("oracle_temperature", _C.oracle_temperature,
                            "oracle: softmax temperature over candidate rewards (0 = argmax)")
O_NONE = flags.DEFINE_float("oracle_none_threshold", None,
                            "oracle: None below this best reward (default: env quit reward)")
O_FLIP = flags.DEFINE_float("oracle_flip_prob", _C.oracle_flip_prob,
                            "oracle: probability of a uniformly random label")
SEED = flags.DEFINE_integer("seed", _C.seed, "seed (oracle sampling, vllm)")
WORKERS = flags.DEFINE_integer("num_workers", _C.num_workers, "labeler processes sharing --out")
WORKER = flags.DEFINE_integer("worker_id", _C.worker_id, "this process's index in 0..W-1")
FOLLOW = flags.DEFINE_bool("follow", _C.follow, "poll for new shards until DIR/DONE")
POLL = flags.DEFINE_float("poll_seconds", _C.poll_seconds, "--follow: seconds between polls")
MAX_SHARDS = flags.DEFINE_integer("max_shards", _C.max_shards,
                                  "stop after this many shards (0 = all)")


def config_from_flags() -> LabelConfig:
  return LabelConfig(
      requests=REQUESTS.value or "", out=OUT.value or "", backend=BACKEND.value, env=ENV.value,
      model=MODEL.value, lora_path=LORA.value, tensor_parallel_size=TP.value,
      max_num_seqs=MAX_SEQS.value, dtype=DTYPE.value, gpu_memory_utilization=GPU_MEM.value,
      max_model_len=MAX_LEN.value, constraint=CONSTRAINT.value,
      prefix_caching=PREFIX.value, enforce_eager=EAGER.value, chat_template=CHAT.value,
      batch_size=BATCH.value, device=DEVICE.value, oracle_temperature=O_TEMP.value, oracle_none_threshold=O_NONE.value,
      oracle_flip_prob=O_FLIP.value, seed=SEED.value, num_workers=WORKERS.value,
      worker_id=WORKER.value, follow=FOLLOW.value, poll_seconds=POLL.value,
      max_shards=MAX_SHARDS.value)


def main(argv):
  cli.reject_extra_args(argv)
  summary = label_directory(config_from_flags(), log=lambda s: print(s, flush=True))
  print(f"done: labeled {len(summary['labeled'])} shards ({summary['rows']} rows, "
        f"{summary['invalid']} invalid), {summary['skipped']} were already labeled", flush=True)


if __name__ == "__main__":
  cli.run(main)
