"""Mutants of algos/trpo.py for tests/mutation.py: each a nearby wrong algorithm its fast tests must catch."""

from mutation import Mutant

MUTANTS = [
    Mutant("Gaussian KL the wrong way round, KL(pi || pi_old): the line search bounds the reverse KL (Eq. 12)",
           "return gaussian_kl(old_output, old_logstd.expand_as(old_output), output, self.actor_logstd.expand_as(output))",
           "return gaussian_kl(output, self.actor_logstd.expand_as(output), old_output, old_logstd.expand_as(old_output))"),
    Mutant("categorical KL the wrong way round, KL(pi || pi_old) (Eq. 12)",
           "return categorical_kl(old_output, output)",
           "return categorical_kl(output, old_output)"),
    Mutant("the step scaled to KL delta / 2: beta = sqrt(delta / s^T H s), not sqrt(2 delta / s^T H s) (Appendix C)",
           "math.sqrt(2 * max_kl / max(",
           "math.sqrt(max_kl / max("),
    Mutant("the line search accepts KL up to 1.5 delta (baselines' tolerance), not KL <= delta (Eq. 12)",
           "and kl <= max_kl and surrogate > old_surrogate:",
           "and kl <= 1.5 * max_kl and surrogate > old_surrogate:"),
    Mutant("the line search accepts any step inside the region, improving the surrogate or not (Appendix C)",
           "and kl <= max_kl and surrogate > old_surrogate:",
           "and kl <= max_kl:"),
    Mutant("the line search never tries the full step: its first try is c times it (off by one)",
           "params = old_params + backtrack_coeff**k * full_step",
           "params = old_params + backtrack_coeff**(k + 1) * full_step"),
    Mutant("steepest descent instead of conjugate gradient: the search directions are not conjugated",
           "direction = residual + (new_residual_sq / residual_sq) * direction",
           "direction = residual.clone()"),
    Mutant("no damping in the Fisher-vector products of the step (H s, not (H + damping I) s)",
           "return fisher_vector_product(mean_kl, params, vector, args.cg_damping)",
           "return fisher_vector_product(mean_kl, params, vector, 0.0)"),
    Mutant("pi_old's outputs not held fixed in the KL whose Hessian is the Fisher: KL(pi || pi) = 0, the curvature of the mean is lost",
           "return agent.kl_from(fvp_old_output, old_logstd, agent.policy_output(fvp_obs)).mean()",
           "return agent.kl_from(agent.policy_output(fvp_obs), old_logstd, agent.policy_output(fvp_obs)).mean()"),
    Mutant("the Fisher on the first 1/k of the batch, not on every k-th sample (baselines arr[::5])",
           "fvp_obs, fvp_old_output = obs[:: args.fvp_every], old_output[:: args.fvp_every]",
           "fvp_obs, fvp_old_output = obs[: len(obs) // args.fvp_every], old_output[: len(obs) // args.fvp_every]"),
    Mutant("advantages scaled but not centred (baselines trpo_mpi standardises them)",
           "advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)",
           "advantages = advantages / (advantages.std() + 1e-8)"),
    Mutant("the value network regressed on the advantages, not on the returns A + V",
           "fit_value(agent, value_optimizer, batch.obs, batch.returns,",
           "fit_value(agent, value_optimizer, batch.obs, batch.advantages,"),
    Mutant("--no-line-search still searches: no natural policy gradient (Kakade 2002)",
           "if args.line_search:  # it never accepts",
           "if True:  # it never accepts"),
    Mutant("GAE flows across episode ends (the done mask dropped)",
           "last = deltas[t] + gamma * gae_lambda * continues[t] * last",
           "last = deltas[t] + gamma * gae_lambda * last"),
    Mutant("a truncated episode bootstraps from the next episode's first observation, not its final one",
           'final_obs = torch.as_tensor(np.stack(infos["final_obs"][ids]), device=self.device)',
           "final_obs = self.next_obs[ids]"),
    Mutant("the rollout's last step bootstraps from V(s_T-1), its own state, not V(s_T) after it (GAE Eq. 16)",
           "next_value = agent.get_value(self.next_obs)",
           "next_value = agent.get_value(self.obs[-1])"),
    Mutant("observation statistics updated before the update: the update's pi_old is not the policy that acted",
           '            metrics = update(agent, value_optimizer, batch, args)\n'
           '            if args.normalize_obs:\n'
           '                # Once a batch, after both updates: the policy that acted and the one updated on its data\n'
           '                # saw the same normalisation, so the surrogate\'s ratio starts at exactly 1.\n'
           '                agent.obs_rms.update(batch.obs)\n',
           '            if args.normalize_obs:\n'
           '                agent.obs_rms.update(batch.obs)\n'
           '            metrics = update(agent, value_optimizer, batch, args)\n'),
]
