"""Reward functions: one frozen scorer per objective."""

from pama_lit.rewards.base import Reward

__all__ = ["Reward"]
