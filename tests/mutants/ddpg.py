"""Mutants of algos/ddpg.py for tests/mutation.py: each a nearby wrong algorithm its fast tests must catch.
References are to Lillicrap et al. 2015: Algorithm 1, Section 3 (OU noise), Section 7 (settings)."""

from mutation import Mutant

MUTANTS = [
    Mutant("critic target from the online critic, not Q' (Algorithm 1: y = r + gamma Q'(s', mu'(s')))",
           "next_q = agent.critic_target(next_obs, agent.actor_target(next_obs))",
           "next_q = agent.critic(next_obs, agent.actor_target(next_obs))",
           killed_by='test_ddpg_math.py::test_one_update_by_hand'),
    Mutant("target action from the online actor, not mu' (Algorithm 1: mu'(s_{i+1}))",
           "next_q = agent.critic_target(next_obs, agent.actor_target(next_obs))",
           "next_q = agent.critic_target(next_obs, agent.actor(next_obs))",
           killed_by='test_ddpg_math.py::test_one_update_by_hand'),
    Mutant("bootstrap through terminations: the update drops the episode mask (Algorithm 1's y after a terminal s')",
           "target = td_target(rewards, terminated, next_q, args.gamma)",
           "target = td_target(rewards, torch.zeros_like(terminated), next_q, args.gamma)",
           killed_by='test_ddpg_math.py::test_one_update_by_hand'),
    Mutant("the actor follows the target critic's gradient, not the online critic's (Algorithm 1, the actor's step)",
           "pg_loss = actor_loss(agent.critic(obs, agent.actor(obs), detach_params=True))",
           "pg_loss = actor_loss(agent.critic_target(obs, agent.actor(obs), detach_params=True))",
           killed_by='test_ddpg_math.py::test_one_update_by_hand'),
    Mutant("the actor steps on the critic before the critic's step (Algorithm 1's order: critic, then actor)",
           "    q = agent.critic(obs, actions)\n"
           "    qf_loss = critic_loss(q, target)\n"
           "    gradient_step(critic_optimizer, qf_loss)\n"
           "    metrics = {\"loss\": qf_loss.detach(), \"qf_loss\": qf_loss.detach(), \"qf_values\": q.detach().mean()}\n"
           "    pg_loss = actor_loss(agent.critic(obs, agent.actor(obs), detach_params=True))\n"
           "    gradient_step(actor_optimizer, pg_loss)\n",
           "    pg_loss = actor_loss(agent.critic(obs, agent.actor(obs), detach_params=True))\n"
           "    gradient_step(actor_optimizer, pg_loss)\n"
           "    q = agent.critic(obs, actions)\n"
           "    qf_loss = critic_loss(q, target)\n"
           "    gradient_step(critic_optimizer, qf_loss)\n"
           "    metrics = {\"loss\": qf_loss.detach(), \"qf_loss\": qf_loss.detach(), \"qf_values\": q.detach().mean()}\n",
           killed_by='test_ddpg_math.py::test_one_update_by_hand'),
    Mutant("the target actor moves towards the actor before its step (Polyak update ahead of the actor's step)",
           "    gradient_step(actor_optimizer, pg_loss)\n"
           "    polyak_update(list(agent.actor_target.parameters()), list(agent.actor.parameters()), args.tau)\n",
           "    polyak_update(list(agent.actor_target.parameters()), list(agent.actor.parameters()), args.tau)\n"
           "    gradient_step(actor_optimizer, pg_loss)\n",
           killed_by='test_ddpg_math.py::test_one_update_by_hand'),
    Mutant("a stale target actor: only the target critic tracks its network (Algorithm 1 updates both targets)",
           "    polyak_update(list(agent.actor_target.parameters()), list(agent.actor.parameters()), args.tau)\n",
           "",
           killed_by='test_ddpg_math.py::test_one_update_by_hand'),
    Mutant("the critic without its L2 weight decay (Section 7: 1e-2 on Q)",
           "weight_decay=args.critic_weight_decay, fused=True",
           "fused=True",
           killed_by='test_ddpg_update.py::test_the_paper_optimisers_decay_the_critics_weights_only'),
    Mutant("the actor at the critic's learning rate, 1e-3 instead of 1e-4 (Section 7)",
           "lr=args.actor_learning_rate or args.learning_rate,",
           "lr=args.learning_rate,",
           killed_by='test_ddpg_update.py::test_the_paper_optimisers_decay_the_critics_weights_only'),
    Mutant("OU noise without its state: independent Gaussian noise each step (Section 3: x' = (1 - theta) x + sigma eps)",
           "ou_state = ou_step(ou_state, torch.randn_like(ou_state), args.ou_theta, args.exploration_noise)",
           "ou_state = ou_step(torch.zeros_like(ou_state), torch.randn_like(ou_state), args.ou_theta, args.exploration_noise)",
           killed_by='test_ddpg_update.py::test_ou_exploration_carries_its_state_and_starts_afresh_at_every_episode_end'),
    Mutant("OU theta and sigma swapped (Section 7: theta 0.15, sigma 0.2)",
           "ou_step(ou_state, torch.randn_like(ou_state), args.ou_theta, args.exploration_noise)",
           "ou_step(ou_state, torch.randn_like(ou_state), args.exploration_noise, args.ou_theta)",
           killed_by='test_ddpg_update.py::test_ou_exploration_carries_its_state_and_starts_afresh_at_every_episode_end'),
    Mutant("OU exploration actions left outside the action bounds (stored and sent unclipped)",
           "action = (agent.actor(obs_tensor) + ou_state).clamp(-1.0, 1.0)",
           "action = agent.actor(obs_tensor) + ou_state",
           killed_by='test_ddpg_update.py::test_ou_exploration_carries_its_state_and_starts_afresh_at_every_episode_end'),
    Mutant("replay kit: the OU process runs on across a time-limit cut (Algorithm 1: a fresh N each episode)",
           "    return next_obs, terminated | truncated\n",
           "    return next_obs, terminated\n",
           killed_by='test_ddpg_update.py::test_ou_exploration_carries_its_state_and_starts_afresh_at_every_episode_end'),
    Mutant("replay kit: after an episode's end s' is the next episode's first observation, not its last",
           "buffer.add(obs, action, reward, transition_next_obs(next_obs, infos), terminated)",
           "buffer.add(obs, action, reward, next_obs, terminated)",
           killed_by='test_ddpg_update.py::test_the_buffer_marks_terminations_only_and_keeps_each_episodes_true_last_observation'),
    Mutant("the first update one step early, at step learning_starts (off by one)",
           "if global_step > args.learning_starts:",
           "if global_step >= args.learning_starts:",
           killed_by='test_ddpg_update.py::test_random_actions_until_learning_starts_then_one_update_per_env_step'),
    Mutant("the paper's critic takes the action at its input, not its second layer (Section 7)",
           "critic_action_layer: int = 2",
           "critic_action_layer: int = 1",
           killed_by='test_ddpg_math.py::test_the_paper_critic_takes_the_action_at_its_second_layer_and_starts_its_outputs_small'),
    Mutant("--bf16 ignored: every update in float32 (the switch's promise)",
           "enabled=args.bf16)",
           "enabled=False)",
           killed_by='test_ddpg_update.py::test_bf16_runs_each_update_under_bfloat16_autocast_and_only_when_asked[True]'),
    Mutant("the actor's tanh in bfloat16 under --bf16: saturated actions get no gradient (kit: replay)",
           "return torch.tanh(self.net(obs).float())",
           "return torch.tanh(self.net(obs))",
           killed_by='test_ddpg_update.py::test_a_nearly_saturated_action_still_has_a_gradient_under_bf16[True]'),
    Mutant("bfloat16 on by default (the papers' float32)",
           "bf16: bool = False",
           "bf16: bool = True",
           killed_by='test_ddpg_update.py::test_the_paper_settings'),
]
