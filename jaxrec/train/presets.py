"""`python -m jaxrec.train --config=NAME`: named flag sets that reproduce another framework's
training setup, so that its results and its speed can be compared on equal work.

A preset *fixes* the flags that define the algorithm and the work per env step (passing one of
them as well is refused: the run would no longer be the preset), and *suggests* the budget and
evaluation flags (any of those may be passed to override it).

`easyrl4rec`: EasyRL4Rec's A2C on Coat as its published script runs it
(`visual_results/result_script/Coat.sh`: `run_A2C.py --which_tracker avg --reward_handle cat
--window_size 3 --lr 0.005 --ent-coef 0.01`, the other values from the defaults of
`examples/policy/policy_utils.py:get_args_all` and `run_A2C.py:get_args_A2C`; the update is
tianshou's `A2CPolicy.learn`, the loop its `onpolicy_trainer`). Differences that remain, each
named where the value is set: the peer starts from the user model's pre-trained item
embeddings; it collects 100 whole episodes per update (one per env) where the fused loop
collects a fixed 30 steps of each session (3,000 transitions = 100 episodes at the peer's
converged length of 30); its minibatches are 1,024 transitions with the remainder merged
(2 steps per 3,000), here 3 of 1,000.

`dorl`: DORL (jaxrec.envs.dorl) as EasyRL4Rec's Coat script runs it (Coat.sh:
`examples/advance/run_DORL.py --which_tracker avg --reward_handle cat --window_size 3 --lr 0.005
--ent-coef 0.01 --lambda_entropy 3 --no_exploration_noise --no_feature_level`): run_DORL.py is
run_A2C.py's A2C (the same A2CPolicy_withEmbedding, trainer and defaults; --no_exploration_noise
is the A2C default) in the shaped train env, so it is `easyrl4rec`'s fixed flags plus
--train_reward=dorl. The weights are suggested, not fixed (an ablation sets them): lambda_entropy
3 (Coat.sh), lambda_variance 0.05 (DORL-codes script/run_main.sh, KuaiRec "Ours": EasyRL4Rec's
port has no variance term). The env directory must carry DORL's statistics
(`experiments.build_envs --protocol=peer --dorl_ensemble=5`).

`easyrl4rec_pg`: EasyRL4Rec's PG on Coat (Coat.sh: `run_PG.py --which_tracker avg --reward_handle
cat --window_size 3 --no_exploration_noise`, the rest `get_args_all("onpolicy")` and
`get_args_PG`): tianshou's `PGPolicy` (REINFORCE on discounted Monte-Carlo returns, no return
normalisation (--rew-norm False), no entropy term) on the same avg tracker and MLP, lr 0.001,
the onpolicy trainer's 100 x 100,000 steps. Differences that remain: the peer collects 100
whole episodes and takes one pass of 1,024-transition minibatches (about 3 steps), jaxrec's
PG one gradient step per 32-step unroll of the 100 sessions (jaxrec.agents.pg: an episode begun
late in the unroll is cut there); the peer's orthogonal init (gain sqrt 2) and softmax output
layer against flax's default init and a log-softmax of the logits (the same distribution).

`easyrl4rec_dqn`: EasyRL4Rec's DQN on Coat (Coat.sh: `run_DQN.py --which_tracker avg
--reward_handle cat --window_size 3 --is_exploration_noise`, the rest `get_args_all("offpolicy")`
and `get_args_DQN`): 100 envs collect 1,000 steps, then 100 updates (--update-per-step 0.1) of
64 transitions from a 100,000-transition buffer, target network every 320 updates, lr 0.001,
epsilon-greedy training at --eps-train 0.1, 100 epochs of 1,000 steps (100,000 env steps,
10,000 updates). Differences that remain: jaxrec's DQN is one-step and not double (the peer's
`DQNPolicy_with_Embedding`: n-step 3, is_double True); its evaluation is greedy (the peer's
test collectors act epsilon-greedily at a small epsilon).
"""

from __future__ import annotations

from absl import flags

from jaxrec.config import refuse

# flag -> (value, its source in the peer's code)
EASYRL4REC_FIXED = {
    "agent": ("a2c", "run_A2C.py"),
    "tracker": ("avg", "Coat.sh --which_tracker avg"),
    "window": (3, "Coat.sh --window_size 3"),
    "reward_handle": ("cat", "Coat.sh --reward_handle cat (each item's normalised reward "
                      "appended to its embedding: a state of dim + 1)"),
    "dim": (32, "get_args_all --embedding_dim 32"),
    "hidden_sizes": ((64, 64), "get_args_all --hidden-sizes 64 64 (tianshou Net, shared by "
                     "actor and critic)"),
    "learning_rate": (0.005, "Coat.sh --lr 0.005 (one Adam for the actor-critic, one for the "
                      "tracker, same rate)"),
    "entropy_coef": (0.01, "Coat.sh --ent-coef 0.01"),
    # tianshou: vf_coef * F.mse_loss; jaxrec's value loss carries a 1/2, so 2 x 0.5.
    "value_coef": (1.0, "get_args_A2C --vf-coef 0.5 on the mean squared error"),
    "gae_lambda": (1.0, "get_args_A2C --gae-lambda 1"),
    "gamma": (0.9, "get_args_all --gamma 0.9"),
    "max_grad_norm": (0.0, "get_args_A2C --max-grad-norm None (no clipping)"),
    "normalize_advantages": (False, "tianshou A2CPolicy (no advantage normalisation; "
                             "--rew-norm False)"),
    "critic": ("v", "tianshou A2CPolicy: Critic(net) -> V(s)"),
    "schedule": ("collect", "onpolicy_trainer: collect, then A2CPolicy.learn"),
    "unroll_len": (30, "--episode-per-collect 100 with --training-num 100 envs, episodes of "
                   "at most 30 turns"),
    "num_minibatches": (3, "--batch-size 1024 over ~3,000 transitions"),
    "update_epochs": (1, "--repeat-per-collect 1"),
    "num_sessions": (100, "--training-num 100"),
    "explore": ("categorical", "A2CPolicy samples its Categorical; no exploration noise"),
}
EASYRL4REC_DEFAULTS = {
    "total_steps": (10_200_000, "--epoch 100 x --step-per-epoch 100000, rounded up to whole "
                    "collects as onpolicy_trainer does (its Coat log: 10.1M)"),
    "steps_per_epoch": (102_000, "--step-per-epoch 100000, rounded up to whole collects"),
    "eval_sessions": (100, "--test-num 100"),
    "eval_mode": ("FB,NX_0,NX_10", "prepare_test_envs: FB, NX_0, NX_{force_length=10}"),
}
DORL_FIXED = EASYRL4REC_FIXED | {
    "train_reward": ("dorl", "run_DORL.py: PenaltyEntExpSimulatedEnv as the train env"),
}
DORL_DEFAULTS = EASYRL4REC_DEFAULTS | {
    "lambda_entropy": (3.0, "Coat.sh run_DORL.py --lambda_entropy 3"),
    "lambda_variance": (0.05, "DORL-codes script/run_main.sh KuaiEnv 'Ours' --lambda_variance "
                        "0.05 (EasyRL4Rec's port has no variance penalty)"),
}
# The avg tracker, its reward input and the MLP, as every Coat.sh script passes them.
_PEER_NET = {k: EASYRL4REC_FIXED[k] for k in ("tracker", "window", "reward_handle", "dim",
                                               "hidden_sizes", "gamma")}
PG_FIXED = _PEER_NET | {
    "agent": ("pg", "run_PG.py: tianshou PGPolicy"),
    "learning_rate": (0.001, "get_args_all --lr 1e-3 (Coat.sh passes none for PG)"),
    "entropy_coef": (0.0, "tianshou PGPolicy: no entropy term"),
    "normalize_returns": (False, "get_args_PG --rew-norm False"),
    "max_grad_norm": (0.0, "PGPolicy clips no gradient"),
    "unroll_len": (32, "jaxrec.agents.pg's unroll (>= the 30-turn episodes); the peer collects "
                   "--episode-per-collect 100 whole episodes"),
    "num_sessions": (100, "--training-num 100"),
    "explore": ("categorical", "PGPolicy samples its Categorical; --no_exploration_noise"),
}
PG_DEFAULTS = {
    "total_steps": (10_240_000, "--epoch 100 x --step-per-epoch 100000, rounded up to whole "
                    "unrolls of 3,200"),
    "steps_per_epoch": (102_400, "--step-per-epoch 100000, rounded up to whole unrolls"),
    "eval_sessions": (100, "--test-num 100"),
    "eval_mode": ("FB,NX_0,NX_10", "prepare_test_envs: FB, NX_0, NX_{force_length=10}"),
}
DQN_FIXED = _PEER_NET | {
    "agent": ("dqn", "run_DQN.py: DQNPolicy_with_Embedding"),
    "learning_rate": (0.001, "get_args_all --lr 1e-3"),
    "max_grad_norm": (0.0, "tianshou DQNPolicy clips no gradient (--clip-loss-grad False)"),
    "huber_delta": (0.0, "--clip-loss-grad False: the squared TD error"),
    "batch_size": (64, "get_args_all('offpolicy') --batch-size 64"),
    "buffer_size": (100_000, "get_args_all --buffer-size 100000"),
    "min_buffer": (1_000, "offpolicy_trainer updates after the first collect of "
                   "--step-per-collect 1000"),
    "target_period": (320, "get_args_DQN --target-update-freq 320"),
    "unroll_len": (10, "--step-per-collect 1000 over --training-num 100 envs"),
    "updates_per_iteration": (100, "--update-per-step 0.1 x 1000 collected steps"),
    "num_sessions": (100, "--training-num 100"),
    "explore": ("epsilon", "--eps-train 0.1 (--is_exploration_noise)"),
    "epsilon": (0.1, "get_args_DQN --eps-train 0.1"),
}
DQN_DEFAULTS = {
    "total_steps": (100_000, "--epoch 100 x get_args_DQN --step-per-epoch 1000"),
    "steps_per_epoch": (1_000, "get_args_DQN --step-per-epoch 1000"),
    "eval_explore": ("greedy", "the peer's test collectors act at a small epsilon"),
    "eval_sessions": (100, "--test-num 100"),
    "eval_mode": ("FB,NX_0,NX_10", "prepare_test_envs: FB, NX_0, NX_{force_length=10}"),
}
PRESETS = {"easyrl4rec": (EASYRL4REC_FIXED, EASYRL4REC_DEFAULTS),
           "dorl": (DORL_FIXED, DORL_DEFAULTS),
           "easyrl4rec_pg": (PG_FIXED, PG_DEFAULTS),
           "easyrl4rec_dqn": (DQN_FIXED, DQN_DEFAULTS)}


def _flag_value(value):
  return [str(v) for v in value] if isinstance(value, tuple) else value


def apply(name: str, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Sets the preset's flags in `flag_values` (parsed); a fixed flag given on the command line
  is a one-line ConfigError."""
  fixed, defaults = PRESETS[name]
  refuse([f for f in fixed if flag_values[f].present],
         f"to --config={name}: the preset fixes it")
  for flag, (value, _) in fixed.items():
    flag_values[flag].value = _flag_value(value)
  for flag, (value, _) in defaults.items():
    if not flag_values[flag].present:
      flag_values[flag].value = _flag_value(value)
