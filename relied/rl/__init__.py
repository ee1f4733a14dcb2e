"""Hybrid expert-agent policy optimization (RELED's second module) and its baselines.

``config`` (the one TrainConfig), ``envs`` (all agents of a simulator as one env, Tianshou
vector envs), ``rollout`` (decision transitions, GAE), ``model`` (masked grouped actor-critic),
``hybrid_ppo`` (the loss), ``schedule`` (DTW and lambda_i(t)), ``demos`` (providers and the
expert buffer), ``trainer`` (loop, checkpoints, resume), ``policy``, ``evaluate``, ``plots``.
See docs/training.md.
"""
