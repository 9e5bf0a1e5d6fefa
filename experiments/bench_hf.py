"""python -m experiments.bench_hf --requests=DIR --model=PATH --out=FILE.json
    [--device=cuda --dtype=bfloat16 --batch_size=64 --num=1024 --random_init]

Throughput of the `hf` labeling backend (llm_labeler.backends.hf_backend: the paper's Table 1
prompts, one forward pass per batch, the label tokens' logits) on the request shards of DIR
(write them with `python -m jaxrec.sample_requests`). Prints and writes JSON:
  prompts_per_s, prompt_tokens_per_s   over --num prompts, after one warm-up batch
  model_tflops_per_s                   2 x parameters x prompt tokens / s (attention left out)
  matmul_tflops_per_s                  the reference: a 4096^3 matrix product of --dtype on the
                                       same device, measured in the same run
--random_init builds the model from PATH's config.json with random weights (the tokenizer
still from PATH): a throughput measurement of that architecture where its weights cannot be
had; its labels mean nothing and are not reported.
"""

from __future__ import annotations

import time

from absl import flags

from experiments import benchlib
from jaxrec import cli, shards
from jaxrec.errors import ConfigError

REQUESTS = flags.DEFINE_string("requests", None, "request shard directory (with catalog.npz)")
MODEL = flags.DEFINE_string("model", None, "local model directory or .gguf file")
OUT = flags.DEFINE_string("out", None, "JSON output file (also printed)")
DEVICE = flags.DEFINE_string("device", "cpu", "torch device")
DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "model dtype")
BATCH = flags.DEFINE_integer("batch_size", 16, "prompts per forward pass")
NUM = flags.DEFINE_integer("num", 512, "prompts timed")
CHAT = flags.DEFINE_bool("chat_template", False, "wrap prompts in the chat template")
RANDOM = flags.DEFINE_bool("random_init", False, "random weights from PATH's config.json")


def random_model(path: str, dtype: str, device: str):
  import torch
  from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
  tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
  config = AutoConfig.from_pretrained(path, local_files_only=True)
  with torch.device(device):
    lm = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
  return tok, lm.eval()


def matmul_tflops(torch, device, dtype, sync, n: int = 4096, reps: int = 20) -> float:
  a = torch.randn(n, n, device=device, dtype=dtype)
  b = torch.randn(n, n, device=device, dtype=dtype)
  for _ in range(3):
    a @ b
  sync()
  t = time.perf_counter()
  for _ in range(reps):
    a @ b
  sync()
  return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12


def main(argv):
  cli.reject_extra_args(argv)
  if not REQUESTS.value or not MODEL.value:
    raise ConfigError("--requests and --model are required")
  import torch
  from llm_labeler.backends.hf_backend import HFBackend
  names = shards.list_shards(REQUESTS.value)
  if not names:
    raise ConfigError(f"--requests {REQUESTS.value}: no request shards")
  catalog = shards.read_catalog(REQUESTS.value)
  req = shards.read_requests(REQUESTS.value, names[0])
  if req.history.shape[0] < NUM.value + BATCH.value:
    raise ConfigError(f"--requests {REQUESTS.value}/{names[0]}: {req.history.shape[0]} rows, "
                      f"need --num + --batch_size = {NUM.value + BATCH.value}")
  loaded = random_model(MODEL.value, DTYPE.value, DEVICE.value) if RANDOM.value else None
  backend = HFBackend(MODEL.value, catalog, req.candidates.shape[1], BATCH.value, CHAT.value,
                      DTYPE.value, DEVICE.value, loaded)
  prompts = backend.renderer.render(req.history, req.candidates)
  sync = torch.cuda.synchronize if backend.device.type == "cuda" else (lambda: None)
  backend.scores(prompts[:BATCH.value])  # warm-up
  sync()
  backend.prompt_tokens = 0
  t = time.perf_counter()
  backend.scores(prompts[BATCH.value:BATCH.value + NUM.value])
  sync()
  secs = time.perf_counter() - t
  params = sum(p.numel() for p in backend.lm.parameters())
  tokens_per_s = backend.prompt_tokens / secs
  result = benchlib.machine() | {
      "model": MODEL.value, "random_init": RANDOM.value, "torch_device": str(backend.device),
      "device_name": (torch.cuda.get_device_name(backend.device)
                      if backend.device.type == "cuda" else "cpu"),
      "dtype": DTYPE.value, "batch_size": BATCH.value, "num": NUM.value, "params": params,
      "k": int(req.candidates.shape[1]),
      "mean_prompt_tokens": backend.prompt_tokens / NUM.value,
      "prompts_per_s": NUM.value / secs, "prompt_tokens_per_s": tokens_per_s,
      "model_tflops_per_s": 2 * params * tokens_per_s / 1e12,
      "matmul_tflops_per_s": matmul_tflops(torch, backend.device, getattr(torch, DTYPE.value),
                                           sync)}
  benchlib.report(result, OUT.value)


if __name__ == "__main__":
  cli.run(main)
