"""The kill/restart drills of `python -m experiments.fault_drill` and the sizes of the jobs
they kill (experiments/drills.py runs them)."""

from __future__ import annotations

import dataclasses

NET = ["--dim=16", "--num_layers=1", "--num_heads=1"]
TRAIN = {  # 4 epochs of 640 env steps, 64 sessions
    "a2c": ["--agent=a2c", "--num_sessions=64", "--total_steps=2560", "--steps_per_epoch=640",
            "--eval_sessions=128", *NET],
    "dqn": ["--agent=dqn", "--num_sessions=64", "--total_steps=2560", "--steps_per_epoch=640",
            "--eval_sessions=128", "--buffer_size=4096", "--batch_size=64", "--min_buffer=256",
            "--target_period=8", *NET],
}
PRETRAIN = ["--labeler=inproc", "--num_sessions=64", "--episode_len=5",
            "--episodes_per_epoch=2", "--epochs=4", "--num_candidates=5", "--batch_size=64",
            "--buffer_size=2048", "--eval_sessions=128", *NET]
AP = ["--agent=ialp_ap", "--num_sessions=64", "--total_steps=2560", "--steps_per_epoch=640",
      "--eval_sessions=128", *NET]
# python -m jaxrec.offline: SA2C on a small synthetic dataset, 4 epochs of 25 updates (160 train
# users x 10 items, batches of 64); the warm-up ends in epoch 2, so a resume crosses both Adams.
OFFLINE = ["--agent=sa2c", "--dataset=synthetic", "--synthetic_users=200",
           "--synthetic_items=80", "--synthetic_genres=4", "--synthetic_mean_length=10",
           "--epochs=4", "--batch_size=64", "--warmup=30", "--topk=5,10", *NET]
LABEL_SHARDS, LABEL_ROWS, LABEL_K = 12, 96, 5
# Lockstep pre-training through a shard directory (3 epochs x 2 episodes x 4 steps = 24 request
# shards) with a separate `llm_labeler.label --follow` process: both are killed together.
PIPELINE = ["--labeler=dir", "--num_sessions=32", "--episode_len=4", "--episodes_per_epoch=2",
            "--epochs=3", "--num_candidates=5", "--batch_size=32", "--buffer_size=1024",
            "--eval_sessions=64", "--label_timeout=60", *NET]


@dataclasses.dataclass(frozen=True)
class Drill:
  name: str
  job: str  # a2c | dqn | pretrain | ialp_ap | offline | pipeline | label
  kill: str  # random | sigterm | failpoint
  failpoint: str = ""  # NAME=N for kill=failpoint
  kills: int = 1  # random kills before the final rerun
  workers: int = 1  # label: processes sharing --out


DRILL_LIST = (
    Drill("train_a2c_kill_random", "a2c", "random", kills=2),
    Drill("train_a2c_kill_in_checkpoint_save", "a2c", "failpoint", "train.saving=2"),
    Drill("train_a2c_kill_before_metrics", "a2c", "failpoint", "train.saved=3"),
    Drill("train_a2c_sigterm", "a2c", "sigterm"),
    Drill("train_dqn_kill_random", "dqn", "random"),
    Drill("pretrain_kill_random", "pretrain", "random"),
    Drill("pretrain_kill_in_checkpoint_save", "pretrain", "failpoint", "pretrain.saving=3"),
    Drill("pretrain_kill_writing_policy", "pretrain", "failpoint", "pretrain.policy=1"),
    Drill("pretrain_sigterm", "pretrain", "sigterm"),
    Drill("train_ialp_ap_kill_random", "ialp_ap", "random"),
    Drill("offline_kill_random", "offline", "random"),  # its epochs are short: one kill
    Drill("offline_kill_in_checkpoint_save", "offline", "failpoint", "offline.saving=2"),
    Drill("offline_sigterm", "offline", "sigterm"),
    Drill("pipeline_kill_random", "pipeline", "random", kills=2),
    # Both processes commit shards: the 7th request shard kills pre-training, the 7th label
    # shard the labeler.
    Drill("pipeline_kill_both_at_commit", "pipeline", "failpoint", "shards.record_written=7"),
    Drill("label_kill_temp_written", "label", "failpoint", "shards.temp_written=3"),
    Drill("label_kill_npz_renamed", "label", "failpoint", "shards.npz_renamed=4"),
    Drill("label_kill_record_written", "label", "failpoint", "shards.record_written=5"),
    Drill("label_kill_manifest_temp", "label", "failpoint", "shards.manifest_temp=2"),
    Drill("label_kill_before_commit", "label", "failpoint", "label.labeled=6"),
    Drill("label_kill_last_manifest", "label", "failpoint",
          f"shards.record_written={LABEL_SHARDS}"),
    Drill("label_kill_random_2_workers", "label", "random", kills=2, workers=2),
    Drill("label_sigterm", "label", "sigterm"),
)
