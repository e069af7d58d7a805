"""Mutants of algos/a3c_hogwild.py for tests/mutation.py: each a nearby wrong algorithm its fast tests must catch.
The hogwild kit's optimiser, learning-rate and gradient lines are mutated here (async_q.py's list mutates its
other lines: the weight copy and the step claims)."""

from mutation import Mutant

MUTANTS = [
    Mutant("entropy bonus with the wrong sign: a penalty that makes the policy deterministic (S3: + beta grad H)",
           "return pg_loss - ent_coef * entropy_mean + vf_coef * v_loss",
           "return pg_loss + ent_coef * entropy_mean + vf_coef * v_loss"),
    Mutant("advantage not detached: the policy gradient also moves V (S3: grad log pi (R - V) with V fixed)",
           "advantages = returns - value.detach()",
           "advantages = returns - value"),
    Mutant("value loss summed while the policy loss is averaged: the value weight t_max times too large",
           "v_loss = ((returns - value) ** 2).mean()",
           "v_loss = ((returns - value) ** 2).sum()"),
    Mutant("a time limit treated as a terminal state: truncated episodes not bootstrapped (S3: R = 0 only if terminal)",
           "rollout.terminated, rollout.truncated,",
           "rollout.terminated | rollout.truncated, rollout.truncated,"),
    Mutant("truncated episode bootstrapped from the next episode's first observation, not its final one",
           'final_value = float(local.get_value(torch.as_tensor(infos["final_obs"][0][None]), state)[0])',
           "final_value = float(local.get_value(torch.as_tensor(obs_np), state)[0])"),
    Mutant("rollout bootstrapped from V of its last acted state s_{t-1}, not of s_t after it (S3: R = V(s_t))",
           "next_value = local.get_value(next_obs, state)[0]",
           "next_value = local.get_value(steps[-1][0][None], state)[0]"),
    Mutant("the LSTM state carried across a time-limit episode end (only terminations reset it)",
           "next_obs, episode_start = torch.as_tensor(obs_np), bool(terminated[0] or truncated[0])",
           "next_obs, episode_start = torch.as_tensor(obs_np), bool(terminated[0])"),
    Mutant("gradients accumulate across updates (S3: reset d theta <- 0 each loop)",
           "    local.zero_grad(set_to_none=True)\n    loss.backward()",
           "    loss.backward()"),
    Mutant("clipping after the step: the gradient is applied unclipped",
           "    nn.utils.clip_grad_norm_(local.parameters(), args.max_grad_norm)\n"
           "    lr = annealed_lr(args.learning_rate, start, args.total_timesteps) if args.anneal else "
           "args.learning_rate\n"
           "    apply_gradients(local, model, optimizer, lr)\n",
           "    lr = annealed_lr(args.learning_rate, start, args.total_timesteps) if args.anneal else "
           "args.learning_rate\n"
           "    apply_gradients(local, model, optimizer, lr)\n"
           "    nn.utils.clip_grad_norm_(local.parameters(), args.max_grad_norm)\n"),
    Mutant("each parameter's gradient clipped on its own, not the global norm",
           "nn.utils.clip_grad_norm_(local.parameters(), args.max_grad_norm)",
           "[nn.utils.clip_grad_norm_(p, args.max_grad_norm) for p in local.parameters()]"),
    Mutant("no weight sync: the worker acts and differentiates with its own stale copy (S3: theta' = theta)",
           "        pull_weights(local, model)\n        rollout, next_obs",
           "        rollout, next_obs"),
    Mutant("weights synced after the rollout: the worker acts with the weights of its previous loop",
           "        pull_weights(local, model)\n"
           "        rollout, next_obs, state, episode_start, episodes = collect_rollout(\n"
           "            local, envs, n, next_obs, state, episode_start)\n",
           "        rollout, next_obs, state, episode_start, episodes = collect_rollout(\n"
           "            local, envs, n, next_obs, state, episode_start)\n"
           "        pull_weights(local, model)\n"),
    Mutant("hogwild kit: torch's RMSProp epsilon placement, outside the root (paper: TensorFlow's, inside)",
           '            denominators = torch._foreach_add(square_avgs, group["eps"])\n'
           "            torch._foreach_sqrt_(denominators)\n",
           "            denominators = torch._foreach_sqrt(square_avgs)\n"
           '            torch._foreach_add_(denominators, group["eps"])\n'),
    Mutant("hogwild kit: RMSProp statistics and step counts private to each worker (paper: shared RMSProp)",
           'self.state[p]["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)\n'
           "        self.share_memory()",
           'self.state[p]["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)'),
    Mutant("hogwild kit: the annealed learning rate never reaches the optimiser (it steps at the initial rate)",
           '    optimizer.param_groups[0]["lr"] = lr\n',
           ""),
    Mutant("value gradient not scaled by 0.5 in the paper's setup",
           "vf_coef: float = 0.5",
           "vf_coef: float = 1.0"),
]
