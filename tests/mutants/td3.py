"""Mutants of algos/td3.py for tests/mutation.py: each a nearby wrong algorithm its fast tests must catch.
References are to Fujimoto et al. 2018: Algorithm 1, Eq. 10 (clipped double Q), Eq. 14 (target policy
smoothing), Sections 5.2 and 6.1 (settings)."""

from mutation import Mutant

MUTANTS = [
    Mutant("the max of the twin target critics, not the min (Eq. 10: y = r + gamma min_i Q'_i(s', a~))",
           "next_q = agent.critic_target(next_obs, next_actions).min(0).values",
           "next_q = agent.critic_target(next_obs, next_actions).max(0).values"),
    Mutant("no clipped double Q: the target from Q'_1 alone (Eq. 10 dropped, DDPG's target)",
           "next_q = agent.critic_target(next_obs, next_actions).min(0).values",
           "next_q = agent.critic_target(next_obs, next_actions)[0]"),
    Mutant("target critics replaced by the online ones in y (Algorithm 1: Q_theta'_i)",
           "next_q = agent.critic_target(next_obs, next_actions).min(0).values",
           "next_q = agent.critic(next_obs, next_actions).min(0).values"),
    Mutant("target action from the online actor, not pi_phi' (Algorithm 1: a~ <- pi_phi'(s') + eps)",
           "next_actions = target_policy_action(agent.actor_target(next_obs), torch.randn_like(actions),",
           "next_actions = target_policy_action(agent.actor(next_obs), torch.randn_like(actions),"),
    Mutant("no target policy smoothing (Eq. 14's noise dropped)",
           "target_policy_action(agent.actor_target(next_obs), torch.randn_like(actions),",
           "target_policy_action(agent.actor_target(next_obs), torch.zeros_like(actions),"),
    Mutant("smoothing noise std and clip swapped: sigma~ 0.5 clipped at 0.2 (Section 6.1: 0.2 clipped at 0.5)",
           "                                            args.policy_noise, args.noise_clip)",
           "                                            args.noise_clip, args.policy_noise)"),
    Mutant("delayed policy updates off by one: the actor at the 1st, 3rd, ... critic update (Algorithm 1: t mod d)",
           "update_actor=updates % args.policy_delay == 0)",
           "update_actor=updates % args.policy_delay == 1)"),
    Mutant("targets updated at every critic update, not only at the delayed ones (Algorithm 1)",
           "        polyak_update(list(agent.actor_target.parameters()), list(agent.actor.parameters()), args.tau)\n"
           "        polyak_update(list(agent.critic_target.parameters()), list(agent.critic.parameters()), args.tau)\n"
           "        metrics.update(loss=qf_loss.detach() + pg_loss.detach(), actor_loss=pg_loss.detach())\n",
           "        metrics.update(loss=qf_loss.detach() + pg_loss.detach(), actor_loss=pg_loss.detach())\n"
           "    polyak_update(list(agent.actor_target.parameters()), list(agent.actor.parameters()), args.tau)\n"
           "    polyak_update(list(agent.critic_target.parameters()), list(agent.critic.parameters()), args.tau)\n"),
    Mutant("the actor ascends min(Q1, Q2), not Q1 (Algorithm 1: grad_a Q_theta1)",
           "pg_loss = actor_loss(agent.critic.q1(obs, agent.actor(obs)))",
           "pg_loss = actor_loss(agent.critic(obs, agent.actor(obs)).min(0).values)"),
    Mutant("the actor's Q1 reads the second critic's weights (Q2 for Q1)",
           "x = torch.addmm(bias[0].detach(), x, weight[0].detach())",
           "x = torch.addmm(bias[1].detach(), x, weight[1].detach())"),
    Mutant("replay kit: Polyak with 1 - tau, the targets jump most of the way (theta' <- tau theta + (1 - tau) theta')",
           "torch._foreach_lerp_(targets, sources, tau)",
           "torch._foreach_lerp_(targets, sources, 1 - tau)"),
    Mutant("replay kit: a time-limit truncation stored as a termination (no bootstrap after it)",
           "buffer.add(obs, action, reward, transition_next_obs(next_obs, infos), terminated)",
           "buffer.add(obs, action, reward, transition_next_obs(next_obs, infos), terminated | truncated)"),
    Mutant("replay kit: exploration noise in units of the whole action range, not half of it (sigma 0.1 doubled)",
           "return (space.high + space.low) / 2 + (space.high - space.low) / 2 * action",
           "return (space.high + space.low) / 2 + (space.high - space.low) * action"),
    Mutant("replay kit: Gaussian exploration actions left outside the action bounds (stored and sent unclipped)",
           "return (action + sigma * torch.randn_like(action)).clamp(-1.0, 1.0)",
           "return action + sigma * torch.randn_like(action)"),
    Mutant("no exploration noise: the deterministic policy acts (Section 6.1: N(0, 0.1))",
           "action = agent.actor.act(torch.as_tensor(obs, dtype=torch.float32, device=device))",
           "action = agent.actor.act(torch.as_tensor(obs, dtype=torch.float32, device=device), True)"),
    Mutant("one random step fewer than learning_starts (off by one)",
           "if global_step <= args.learning_starts:",
           "if global_step < args.learning_starts:"),
    Mutant("no delayed policy updates by default: d = 1 (Section 5.2: d = 2)",
           "policy_delay: int = 2",
           "policy_delay: int = 1"),
]
