"""Mutants of algos/a3c_hogwild.py for tests/mutation.py: each a nearby wrong algorithm its fast tests must catch.
The hogwild kit's optimiser, learning-rate and gradient lines are mutated here (async_q.py's list mutates its
other lines: the weight copy and the step claims)."""

from mutation import Mutant

MUTANTS = [
    Mutant("entropy bonus with the wrong sign: a penalty that makes the policy deterministic (S3: + beta grad H)",
           "return pg_loss - ent_coef * entropy_mean + vf_coef * v_loss",
           "return pg_loss + ent_coef * entropy_mean + vf_coef * v_loss",
           killed_by='test_a3c_math.py::test_the_loss_by_hand'),
    Mutant("advantage not detached: the policy gradient also moves V (S3: grad log pi (R - V) with V fixed)",
           "advantages = returns - value.detach()",
           "advantages = returns - value",
           killed_by='test_a3c_math.py::test_update_applies_the_clipped_gradient_of_the_loss_to_the_global_weights[True-0.0075]'),
    Mutant("value loss summed while the policy loss is averaged: the value weight t_max times too large",
           "v_loss = ((returns - value) ** 2).mean()",
           "v_loss = ((returns - value) ** 2).sum()",
           killed_by='test_a3c_math.py::test_update_applies_the_clipped_gradient_of_the_loss_to_the_global_weights[True-0.0075]'),
    Mutant("a time limit treated as a terminal state: truncated episodes not bootstrapped (S3: R = 0 only if terminal)",
           "rollout.terminated, rollout.truncated,",
           "rollout.terminated | rollout.truncated, rollout.truncated,",
           killed_by='test_a3c_update.py::test_update_bootstraps_a_truncated_episode_and_not_a_terminated_one[ends1-returns1]'),
    Mutant("truncated episode bootstrapped from the next episode's first observation, not its final one",
           'final_value = float(local.get_value(torch.as_tensor(infos["final_obs"][0][None]), state)[0])',
           "final_value = float(local.get_value(torch.as_tensor(obs_np), state)[0])",
           killed_by='test_a3c_update.py::test_a_rollout_bootstraps_from_the_next_state_and_cut_off_episodes_from_their_final_observation'),
    Mutant("rollout bootstrapped from V of its last acted state s_{t-1}, not of s_t after it (S3: R = V(s_t))",
           "next_value = local.get_value(next_obs, state)[0]",
           "next_value = local.get_value(steps[-1][0][None], state)[0]",
           killed_by='test_a3c_update.py::test_a_rollout_bootstraps_from_the_next_state_and_cut_off_episodes_from_their_final_observation'),
    Mutant("the LSTM state carried across a time-limit episode end (only terminations reset it)",
           "next_obs, episode_start = torch.as_tensor(obs_np), bool(terminated[0] or truncated[0])",
           "next_obs, episode_start = torch.as_tensor(obs_np), bool(terminated[0])",
           killed_by='test_a3c_math.py::test_the_lstm_replays_a_rollout_with_the_state_it_acted_with_reset_where_episodes_begin'),
    Mutant("gradients accumulate across updates (S3: reset d theta <- 0 each loop)",
           "    local.zero_grad(set_to_none=True)\n    loss.backward()",
           "    loss.backward()",
           killed_by='test_a3c_math.py::test_updates_from_two_processes_advance_one_step_count_and_one_set_of_statistics'),
    Mutant("clipping after the step: the gradient is applied unclipped",
           "    nn.utils.clip_grad_norm_(local.parameters(), args.max_grad_norm)\n"
           "    lr = annealed_lr(args.learning_rate, start, args.total_timesteps) if args.anneal else "
           "args.learning_rate\n"
           "    apply_gradients(local, model, optimizer, lr)\n",
           "    lr = annealed_lr(args.learning_rate, start, args.total_timesteps) if args.anneal else "
           "args.learning_rate\n"
           "    apply_gradients(local, model, optimizer, lr)\n"
           "    nn.utils.clip_grad_norm_(local.parameters(), args.max_grad_norm)\n",
           killed_by='test_a3c_math.py::test_update_applies_the_clipped_gradient_of_the_loss_to_the_global_weights[True-0.0075]'),
    Mutant("each parameter's gradient clipped on its own, not the global norm",
           "nn.utils.clip_grad_norm_(local.parameters(), args.max_grad_norm)",
           "[nn.utils.clip_grad_norm_(p, args.max_grad_norm) for p in local.parameters()]",
           killed_by='test_a3c_math.py::test_update_applies_the_clipped_gradient_of_the_loss_to_the_global_weights[True-0.0075]'),
    Mutant("no weight sync: the worker acts and differentiates with its own stale copy (S3: theta' = theta)",
           "        pull_weights(local, model)\n        rollout, next_obs",
           "        rollout, next_obs",
           killed_by='test_a3c_update.py::test_the_worker_copies_the_global_weights_before_each_rollout_and_updates_the_global_ones'),
    Mutant("weights synced after the rollout: the worker acts with the weights of its previous loop",
           "        pull_weights(local, model)\n"
           "        rollout, next_obs, state, episode_start, episodes = collect_rollout(\n"
           "            local, envs, n, next_obs, state, episode_start)\n",
           "        rollout, next_obs, state, episode_start, episodes = collect_rollout(\n"
           "            local, envs, n, next_obs, state, episode_start)\n"
           "        pull_weights(local, model)\n",
           killed_by='test_a3c_update.py::test_the_worker_copies_the_global_weights_before_each_rollout_and_updates_the_global_ones'),
    Mutant("hogwild kit: torch's RMSProp epsilon placement, outside the root (paper: TensorFlow's, inside)",
           '            denominators = torch._foreach_add(square_avgs, group["eps"])\n'
           "            torch._foreach_sqrt_(denominators)\n",
           "            denominators = torch._foreach_sqrt(square_avgs)\n"
           '            torch._foreach_add_(denominators, group["eps"])\n',
           killed_by='test_a3c_math.py::test_one_shared_rmsprop_step_by_hand'),
    Mutant("hogwild kit: RMSProp statistics and step counts private to each worker (paper: shared RMSProp)",
           'self.state[p]["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)\n'
           "        self.share_memory()",
           'self.state[p]["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)',
           killed_by='test_a3c_math.py::test_main_builds_the_agent_and_every_piece_of_optimiser_state_in_shared_memory[rmsprop]'),
    Mutant("hogwild kit: the annealed learning rate never reaches the optimiser (it steps at the initial rate)",
           '    optimizer.param_groups[0]["lr"] = lr\n',
           "",
           killed_by='test_a3c_math.py::test_update_applies_the_clipped_gradient_of_the_loss_to_the_global_weights[True-0.0075]'),
    Mutant("value gradient not scaled by 0.5 in the paper's setup",
           "vf_coef: float = 0.5",
           "vf_coef: float = 1.0",
           killed_by='test_a3c_update.py::test_the_atari_preset_is_the_papers_setup'),
]
