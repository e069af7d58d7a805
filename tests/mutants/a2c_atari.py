"""Mutants of algos/a2c_atari.py for tests/mutation.py: each a nearby wrong algorithm its fast tests must catch.
Paper lines: A3C (Mnih et al. 2016), Algorithm S3 of the supplement, and its RMSProp ('Optimization details')."""

from mutation import Mutant

MUTANTS = [
    # --- the update ---
    Mutant("bootstraps from the stored value of the last state acted in, V(s_{T-1}), not V(s_T) (Alg. S3: R = V(s_t) after the loop)",
           "next_value = agent.get_value(next_obs)",
           "next_value = rollout.values[-1]",
           killed_by='test_a2c_math.py::test_one_step_update_takes_the_td_error_as_the_advantage'),
    Mutant("each step's value and log-probability paired with another step's return (the batch read env-major, the returns time-major)",
           "rollout.obs.flatten(0, 1), rollout.actions.reshape(-1)",
           "rollout.obs.transpose(0, 1).flatten(0, 1), rollout.actions.t().reshape(-1)",
           killed_by='test_a2c_update.py::test_returns_bootstrap_from_the_value_of_the_observation_after_the_rollout'),
    # --- the a2c kit: the loss ---
    Mutant("advantage not held constant: the policy term's gradient reaches V (Alg. S3: d theta uses R - V(s_i) as a weight)",
           "advantages = returns - value.detach()",
           "advantages = returns - value",
           killed_by='test_a2c_math.py::test_actor_critic_loss_gradients'),
    Mutant("entropy penalised instead of rewarded (the paper's + beta grad H)",
           "loss_scale * (pg_loss - ent_coef * entropy_mean + vf_coef * v_loss)",
           "loss_scale * (pg_loss + ent_coef * entropy_mean + vf_coef * v_loss)",
           killed_by='test_a2c_math.py::test_actor_critic_loss_gradients'),
    Mutant("the value weight on the policy term instead of the value term",
           "loss_scale * (pg_loss - ent_coef * entropy_mean + vf_coef * v_loss)",
           "loss_scale * (vf_coef * pg_loss - ent_coef * entropy_mean + v_loss)",
           killed_by='test_a2c_math.py::test_actor_critic_loss_gradients'),
    Mutant("policy term summed over the batch while the value and entropy terms are means (policy weighted by N t_max)",
           "pg_loss = -(logprob * advantages).mean()",
           "pg_loss = -(logprob * advantages).sum()",
           killed_by='test_a2c_update.py::test_returns_bootstrap_from_the_value_of_the_observation_after_the_rollout'),
    # --- the a2c kit: episode ends and the optimiser ---
    Mutant("a truncated episode bootstraps from V(s_t), the state acted in, not V of its final observation",
           "self.final_values[step, ids] = agent.get_value(final_obs)",
           "self.final_values[step, ids] = value[ids].detach()",
           killed_by='test_a2c_update.py::test_terminated_and_truncated_episodes_inside_the_rollout'),
    Mutant("RMSProp with momentum 0.9 (the paper's RMSProp has none)",
           'p.addcdiv_(p.grad, (square_avg + group["eps"]).sqrt_(), value=-group["lr"])',
           'p.sub_(state.setdefault("momentum", torch.zeros_like(p)).mul_(0.9)'
           '.addcdiv_(p.grad, (square_avg + group["eps"]).sqrt(), value=group["lr"]))',
           killed_by='test_a2c_math.py::test_tensorflow_rmsprop_step_by_hand'),
    Mutant("RMSProp's mean square restarted at every step (statistics not kept between updates)",
           "if not state:\n",
           "if True:\n",
           killed_by='test_a2c_math.py::test_tensorflow_rmsprop_step_by_hand'),
    Mutant("gradient clipped per tensor, not by the global norm of all of them",
           "nn.utils.clip_grad_norm_(parameters, max_grad_norm)",
           "[nn.utils.clip_grad_norm_(p, max_grad_norm) for p in parameters]",
           killed_by='test_a2c_update.py::test_gradient_clipped_by_its_global_norm_before_the_step'),
    Mutant("gradient clipped after the step, so the step takes the unclipped gradient",
           "nn.utils.clip_grad_norm_(parameters, max_grad_norm)\n    optimizer.step()",
           "optimizer.step()\n    nn.utils.clip_grad_norm_(parameters, max_grad_norm)",
           killed_by='test_a2c_update.py::test_gradient_clipped_by_its_global_norm_before_the_step'),
    Mutant("actions from argmax(log pi + log E), a reversed Gumbel, which is not a sample of pi",
           "(logits.log_softmax(-1) - torch.empty_like(logits).exponential_().log()).argmax(-1)",
           "(logits.log_softmax(-1) + torch.empty_like(logits).exponential_().log()).argmax(-1)",
           killed_by='test_a2c_update.py::test_actions_are_sampled_from_the_policy'),
    Mutant("gradients never zeroed: each update steps on the sum of every gradient so far",
           "optimizer.zero_grad(set_to_none=True)\n    loss.backward()",
           "loss.backward()",
           killed_by='test_a2c_update.py::test_two_updates_take_tensorflow_rmsprop_steps_with_statistics_kept_between_them'),
    # --- the training loop ---
    Mutant("truncated treated as terminated when the loop records a step (no bootstrap at a time limit)",
           "rollout.record(step, agent, action, value, reward, terminated, truncated, infos)",
           "rollout.record(step, agent, action, value, reward, terminated | truncated, truncated, infos)",
           killed_by='test_a2c_update.py::test_the_rollout_holds_each_step_where_the_loop_saw_it_and_bootstraps_from_the_next_observation'),
    Mutant("each step stored with the observation after it, s_{t+1}, not the one its action was chosen in",
           "                rollout.obs[step] = next_obs\n"
           "                with torch.inference_mode():\n"
           "                    action, _, value = agent.act(next_obs)\n"
           "                next_obs_np, reward, terminated, truncated, infos = envs.step(action.cpu().numpy())\n"
           "                rollout.record(step, agent, action, value, reward, terminated, truncated, infos)\n"
           "                next_obs = torch.as_tensor(next_obs_np, device=device)\n",
           "                with torch.inference_mode():\n"
           "                    action, _, value = agent.act(next_obs)\n"
           "                next_obs_np, reward, terminated, truncated, infos = envs.step(action.cpu().numpy())\n"
           "                rollout.record(step, agent, action, value, reward, terminated, truncated, infos)\n"
           "                next_obs = torch.as_tensor(next_obs_np, device=device)\n"
           "                rollout.obs[step] = next_obs\n",
           killed_by='test_a2c_update.py::test_the_rollout_holds_each_step_where_the_loop_saw_it_and_bootstraps_from_the_next_observation'),
    Mutant("the loop bootstraps from the last observation acted in, s_{T-1}, not the one after the rollout",
           "metrics = update(agent, optimizer, rollout, next_obs, args)",
           "metrics = update(agent, optimizer, rollout, rollout.obs[-1], args)",
           killed_by='test_a2c_update.py::test_the_rollout_holds_each_step_where_the_loop_saw_it_and_bootstraps_from_the_next_observation'),
    Mutant("torch's RMSprop (epsilon outside the root) instead of the paper's TensorFlow RMSProp",
           "optimizer = RMSpropTF(agent.parameters(), lr=args.learning_rate, decay=args.rms_decay, eps=args.rms_eps)",
           "optimizer = torch.optim.RMSprop(agent.parameters(), lr=args.learning_rate, alpha=args.rms_decay, eps=args.rms_eps)",
           killed_by='test_a2c_update.py::test_one_tensorflow_rmsprop_over_all_weights_and_the_learning_rate_annealed_linearly'),
    Mutant("learning-rate schedule one update ahead: the first update at lr (1 - 1/N), the last at 0",
           "alpha = 1.0 - (iteration - 1) / args.num_iterations",
           "alpha = 1.0 - iteration / args.num_iterations",
           killed_by='test_a2c_update.py::test_one_tensorflow_rmsprop_over_all_weights_and_the_learning_rate_annealed_linearly'),
    Mutant("learning rate annealed geometrically (each update's alpha times the last lr), not linearly to 0",
           'optimizer.param_groups[0]["lr"] = alpha * args.learning_rate',
           'optimizer.param_groups[0]["lr"] = alpha * optimizer.param_groups[0]["lr"]',
           killed_by='test_a2c_update.py::test_one_tensorflow_rmsprop_over_all_weights_and_the_learning_rate_annealed_linearly'),
    # --- the settings ---
    Mutant("the value gradient at full weight, not the paper's 0.5 (the atari preset's value weight)",
           "vf_coef: float = 0.5",
           "vf_coef: float = 1.0",
           killed_by='test_a2c_math.py::test_one_step_update_takes_the_td_error_as_the_advantage'),
]
