"""Batch RL on the EasyRL4Rec / DORL protocol (issue 21): a buffer of the logged interactions
(buffer.py), discrete BCQ, CQL and CRR as single-example losses (bcq.py, cql.py, crr.py), one
jitted `lax.scan` of updates per epoch (loop.py) and `python -m jaxrec.batchrl` (run.py), which
evaluates in the env directory's true env each epoch (FB, NX_0, NX_10)."""
