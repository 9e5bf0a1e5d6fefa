"""Labeler backends behind one interface (`base.Backend`): vllm, hf, oracle.

Each backend module imports its heavy dependency (vLLM, torch/transformers) only when a backend
is built, so importing llm_labeler stays light. The oracle backend needs the JAX envs and lives
on that side (jaxrec.labeling.oracle_backend); llm_labeler.job builds it through
jaxrec.labeling.make_oracle_backend.
"""

BACKENDS = ("vllm", "hf", "oracle")
