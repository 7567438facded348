"""``MgdaModule``: the gradient-space baselines (``algorithm=mgda_ub``, ``algorithm=mgda``).

The iteration is ``PamaModule``'s; only the minibatch backward differs: instead of combining K
advantages into one surrogate, ``mgda_step.mgda_backward`` combines the K per-objective PPO losses'
gradients by MGDA's min-norm weights and leaves the result in ``.grad``.
"""

from __future__ import annotations

import dataclasses

import torch

from pama_lit.training.combiners import GradientCombiner
from pama_lit.training.mgda_step import mgda_backward
from pama_lit.training.module import PamaModule
from pama_lit.training.rollout import PolicyForward, Rollout
from pama_lit.training.timing import PhaseTimer


class MgdaModule(PamaModule):
    """``PamaModule`` whose minibatch backward is MGDA's (see ``combiners.GradientCombiner``)."""

    combiner_type = GradientCombiner
    # mgda_backward needs the last hidden states too, which the rollout's forward does not keep.
    reuses_rollout_forward = False

    def minibatch_backward(
        self,
        rollout: Rollout,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        idx: torch.Tensor,
        pref: torch.Tensor,
        active: torch.Tensor,
        timer: PhaseTimer,
        forward: PolicyForward | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MGDA's combined gradient of the minibatch in ``.grad`` (``active`` is all objectives here).

        Returns:
            the weighted loss sum_i a_i L_i and the minibatch's stats (``mgda_step.mgda_backward``).
        """
        return mgda_backward(
            self.policy, self.manual_backward, self.combiner.gradient_space,
            rollout, advantages, returns, idx, pref, dataclasses.asdict(self.ppo_cfg), timer, temperature=self.temperature,
            kl_term=self.kl_loss_term,
        )  # fmt: skip
