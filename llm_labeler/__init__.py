"""llm_labeler: the paper's preference prompt (Table 1), response parsing, labeler backends
(vllm, hf, oracle) and the resumable labeling job over preference shards (jaxrec.shards).

Importing llm_labeler never imports vLLM, torch or transformers: backends import them when
they are built.
"""
