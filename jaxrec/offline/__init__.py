"""Offline next-item RL on logged sequences (issue 20): transitions, learners (normal, sqn,
sac, snqn, sa2c), the fused epoch loop, HR@k / NDCG@k evaluation and `python -m jaxrec.offline`."""
