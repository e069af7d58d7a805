"""Mutants of algos/reinforce.py for tests/mutation.py: each a nearby wrong algorithm its fast tests must catch.

References: Williams 1992; Sutton & Barto 2nd ed., Algorithms 13.3 (REINFORCE) and 13.4 (with baseline), eq. 3.8."""

from mutation import Mutant

MUTANTS = [
    # --- the returns (eq. 3.8, G_t to the end of its own episode) ---
    Mutant("the policy's weights G_t run across episode ends: the batch's rewards discounted as one stream",
           "np.concatenate([return_weights(e.rewards, args.gamma, args.reward_to_go)\n"
           "                                              for e in episodes])",
           "return_weights(np.concatenate([e.rewards for e in episodes]), args.gamma, args.reward_to_go)"),
    Mutant("the baseline's targets G_t run across episode ends (Algorithm 13.4's G of the next episode leaks in)",
           "np.concatenate([discounted_returns(e.rewards, args.gamma) for e in episodes])",
           "discounted_returns(np.concatenate([e.rewards for e in episodes]), args.gamma)"),
    Mutant("the policy's weights undiscounted whatever --gamma says",
           "return_weights(e.rewards, args.gamma, args.reward_to_go)",
           "return_weights(e.rewards, 1.0, args.reward_to_go)"),
    Mutant("--no-reward-to-go ignored: always G_t, never Williams's G_0",
           "return_weights(e.rewards, args.gamma, args.reward_to_go)",
           "return_weights(e.rewards, args.gamma, True)"),
    # --- the policy's step (Algorithm 13.3-13.4: theta += alpha (G_t - v(S_t)) grad ln pi) ---
    Mutant("gradient descent on J: the policy's loss with the wrong sign in the summed loss",
           "loss = pg_loss + v_loss",
           "loss = -pg_loss + v_loss"),
    Mutant("the gradient averaged over the batch's steps, not its episodes (long episodes weigh less)",
           "weights - values, len(episodes))",
           "weights - values, len(obs))"),
    Mutant("a constant baseline (the batch mean of v) instead of the state's own v(S_t)",
           "weights - values, len(episodes))",
           "weights - values.mean(), len(episodes))"),
    # --- the baseline's fit (Algorithm 13.4's w update) ---
    Mutant("the baseline regresses on the policy's weights (G_0 under --no-reward-to-go), not on G_t",
           "v_loss = value_loss(agent.get_value(obs), returns) if args.baseline",
           "v_loss = value_loss(agent.get_value(obs), weights) if args.baseline"),
    Mutant("one baseline step too many: --value-epochs + 1 steps",
           "args.value_epochs - 1 if args.baseline else 0",
           "args.value_epochs if args.baseline else 0"),
    Mutant("the policy keeps moving in the baseline's extra steps (zeroed, not cleared, gradients: Adam's momentum)",
           "optimizer.zero_grad(set_to_none=True)  # the policy's gradients too",
           "optimizer.zero_grad(set_to_none=False)  # the policy's gradients too"),
    # --- the episodes and the actions ---
    Mutant("a time-limit truncation does not end the episode: its return runs on into the next episode",
           "if terminated[0] or truncated[0]:",
           "if terminated[0]:"),
    Mutant("NEXT_STEP autoreset: each episode after the first starts with a fake step from the last one's end",
           "autoreset_mode=gym.vector.AutoresetMode.SAME_STEP",
           "autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP"),
    Mutant("discrete actions drawn with the Gumbel noise's sign flipped: not samples of pi (off-policy gradient)",
           "out - torch.empty_like(out).exponential_().log()",
           "out + torch.empty_like(out).exponential_().log()"),
    Mutant("Gaussian actions drawn with std = log std, not exp(log std): not samples of pi",
           "out + self.actor_logstd.exp() * torch.randn_like(out)",
           "out + self.actor_logstd * torch.randn_like(out)"),
    Mutant("training plays the most likely action, not a sample of pi",
           "episode, obs = play_episode(envs, agent, obs)\n",
           "episode, obs = play_episode(envs, agent, obs, True)\n"),
    Mutant("one episode per update whatever --episodes-per-update says",
           "for _ in range(args.episodes_per_update):",
           "for _ in range(1):"),
]
