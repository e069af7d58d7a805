"""Mutants of algos/ppo.py for tests/mutation.py: each a nearby wrong algorithm its fast tests must catch."""

from mutation import Mutant

MUTANTS = [
    Mutant("entropy bonus with the wrong sign (Eq. 9: L^CLIP - c1 L^VF + c2 S)",
           "loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss",
           "loss = pg_loss + args.ent_coef * entropy.mean() + args.vf_coef * v_loss",
           killed_by='test_ppo_math.py::test_one_update_step_descends_the_papers_loss_at_the_old_policy[discrete]'),
    Mutant("c1 and c2 swapped: the value weight on the entropy, the entropy weight on the value loss (Eq. 9)",
           "loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss",
           "loss = pg_loss - args.vf_coef * entropy.mean() + args.ent_coef * v_loss",
           killed_by='test_ppo_math.py::test_one_update_step_descends_the_papers_loss_at_the_old_policy[discrete]'),
    Mutant("the min taken inside, min(r, clip(r)) A: no pessimistic bound for A < 0 (Eq. 7)",
           "loss = -torch.min(ratio * advantages, clipped * advantages).mean()",
           "loss = -(torch.min(ratio, clipped) * advantages).mean()",
           killed_by='test_ppo_math.py::test_clipped_surrogate_by_hand'),
    Mutant("the minibatch steps clip with args.clip_coef, not the annealed epsilon passed in (Table 5: 0.1 x alpha)",
           "batch.logprobs[minibatch], advantages, args.surrogate,\n                                        clip_coef, kl_beta)",
           "batch.logprobs[minibatch], advantages, args.surrogate,\n                                        args.clip_coef, kl_beta)",
           killed_by='test_ppo_update.py::test_clipped_surrogate_takes_the_min_with_the_annealed_clip_range_and_the_old_log_probs'),
    Mutant("the loop does not anneal the clip range, only the learning rate (Table 5: epsilon = 0.1 x alpha)",
           "clip_coef = alpha * args.clip_coef",
           "clip_coef = args.clip_coef",
           killed_by='test_ppo_update.py::test_the_loop_anneals_lr_and_clip_and_adapts_beta_from_the_kl_after_each_update[adaptive-kl]'),
    Mutant("no old policy: the ratio over the current policy's detached log-probs, always 1 (Eq. 6: pi / pi_old)",
           "policy_loss(new_logprob, batch.logprobs[minibatch], advantages",
           "policy_loss(new_logprob, new_logprob.detach(), advantages",
           killed_by='test_ppo_update.py::test_clipped_surrogate_takes_the_min_with_the_annealed_clip_range_and_the_old_log_probs'),
    Mutant("the KL penalty's estimate with its ratio detached: the penalty pulls by -beta d log pi, not beta (r - 1) d log pi (Eq. 8)",
           "kl = ((ratio - 1) - log_ratio).mean()",
           "kl = ((ratio.detach() - 1) - log_ratio).mean()",
           killed_by='test_ppo_update.py::test_kl_penalty_gradient_with_the_beta_passed_in[fixed-kl]'),
    Mutant("adaptive beta restarts from --kl-beta every update instead of carrying the adapted one (Section 4)",
           'kl_beta = adapt_kl_beta(kl_beta, metrics["approx_kl"], args.kl_target)',
           'kl_beta = adapt_kl_beta(args.kl_beta, metrics["approx_kl"], args.kl_target)',
           killed_by='test_ppo_update.py::test_the_loop_anneals_lr_and_clip_and_adapts_beta_from_the_kl_after_each_update[adaptive-kl]'),
    Mutant("advantages standardised over the whole batch, not per minibatch (the authors' code)",
           "advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)",
           "advantages = (advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)",
           killed_by='test_ppo_update.py::test_each_epoch_is_a_fresh_shuffle_of_minibatches_with_advantages_standardised_per_minibatch'),
    Mutant("the gradient norm clipped after the step, so never (baselines ppo2: clip, then step)",
           "nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)\n            optimizer.step()",
           "optimizer.step()\n            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)",
           killed_by='test_ppo_update.py::test_the_gradient_norm_is_clipped_before_the_step'),
    Mutant("minibatches drawn with replacement, not K epochs over a partition of the batch (Algorithm 1)",
           "torch.randperm(len(batch.obs), device=batch.obs.device)",
           "torch.randint(len(batch.obs), (len(batch.obs),), device=batch.obs.device)",
           killed_by='test_ppo_math.py::test_one_update_step_descends_the_papers_loss_at_the_old_policy[discrete]'),
    Mutant("GAE flows across episode ends (the done mask dropped)",
           "last = deltas[t] + gamma * gae_lambda * continues[t] * last",
           "last = deltas[t] + gamma * gae_lambda * last",
           killed_by='test_ppo_math.py::test_truncation_bootstraps_from_the_final_observation_and_termination_does_not'),
    Mutant("a truncated episode bootstraps from the next episode's first observation, not its final one",
           'final_obs = torch.as_tensor(np.stack(infos["final_obs"][ids]), device=self.device)',
           "final_obs = self.next_obs[ids]",
           killed_by='test_ppo_update.py::test_rollout_gae_stops_at_episode_ends_and_bootstraps_truncation_from_the_final_observation'),
    Mutant("the rollout's last step bootstraps from V(s_T-1), its own state, not V(s_T) after it (Eq. 16)",
           "next_value = agent.get_value(self.next_obs)",
           "next_value = agent.get_value(self.obs[-1])",
           killed_by='test_ppo_update.py::test_rollout_gae_stops_at_episode_ends_and_bootstraps_truncation_from_the_final_observation'),
    Mutant("observation statistics updated before the update: pi_old in the ratio is not the policy that acted",
           '            metrics = update(agent, optimizer, batch, args, clip_coef, kl_beta)\n'
           '            if args.surrogate == "adaptive-kl":\n'
           '                kl_beta = adapt_kl_beta(kl_beta, metrics["approx_kl"], args.kl_target)\n'
           '            if args.normalize_obs:\n'
           '                # Once a batch, after the update: the policy that acted and the one updated on its data\n'
           '                # saw the same normalisation, so the ratio starts at exactly 1.\n'
           '                agent.obs_rms.update(batch.obs)\n',
           '            if args.normalize_obs:\n'
           '                agent.obs_rms.update(batch.obs)\n'
           '            metrics = update(agent, optimizer, batch, args, clip_coef, kl_beta)\n'
           '            if args.surrogate == "adaptive-kl":\n'
           '                kl_beta = adapt_kl_beta(kl_beta, metrics["approx_kl"], args.kl_target)\n',
           killed_by='test_ppo_update.py::test_the_loop_anneals_lr_and_clip_and_adapts_beta_from_the_kl_after_each_update[adaptive-kl]'),
    Mutant("the statistics after the epochs pair the samples with other samples' actions (approx_kl adapts beta)",
           "batch.actions.split(args.minibatch_size))]",
           "batch.actions.flip(0).split(args.minibatch_size))]",
           killed_by='test_ppo_update.py::test_the_statistics_after_the_epochs_pair_each_sample_with_its_own_action_across_minibatches'),
]
