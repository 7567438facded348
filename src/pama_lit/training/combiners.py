"""Combiners, one per ``algorithm=``: how K objectives become one update.

Every combiner sees the preference vector w (K,) of docs/method.md ("Preference vectors"); a uniform w reproduces
the paper's rule exactly. A combiner also says which objectives the policy trains a value head for: the K
objectives, or MORLHF's one scalarised objective ``sum_i w_i R_i``.

=============  ==============  =====  =========================================================
name           trained         Noon   combine
               objectives
=============  ==============  =====  =========================================================
pama           K               yes    per token: Theorem-1 closed form of A_i,t / (K w_i)
pama_batch     K               yes    per minibatch: Theorem-1 weights of the masked means
morlhf         1 (scalarised)  no     PPO on the scalarised score sum_i w_i R_i
noon_ppo       1 (K must be 1) yes    single-objective Noon PPO
mgda_ub        K               no     gradients: min-norm over d L_i / d(last hidden states)
mgda           K               no     gradients: min-norm over d L_i / d(trainable parameters)
=============  ==============  =====  =========================================================

The first four combine advantages (:class:`AdvantageCombiner`, ``combine``). The two MGDA baselines
combine gradients (:class:`GradientCombiner`, ``gradient_space`` says where) and train with
``training.mgda_module.MgdaModule``, whose minibatch step is ``mgda_step.mgda_backward``.

PAMA's two combiners take an ``active`` (K,) mask of the objectives that take part in the min
(``excludes_objectives``); the scalarising and gradient baselines have nothing to exclude. The token
combiner also takes one mask per sample (``per_sample_active``), which ``algorithm.satisfied_at_ceiling``
uses to leave an objective out at the samples that already score its reward's ceiling.

``algorithm.noon`` overrides the Noon column: ``conf/algorithm/morlhf_noon.yaml`` is MORLHF with
Noon, the ablation that separates Noon from PAMA's combine rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from pama_lit.core.pareto import combine_pama_batch, combine_pama_token
from pama_lit.infra import distributed


@dataclass
class Combiner:
    """What every algorithm answers before its update: the objectives it trains, their scores, Noon.

    Attributes:
        name: the ``algorithm.name`` this combiner answers to.
        noon: clamp each objective's whitened advantages at 0 before the update.
        gradient_space: None for advantage combiners; "representation" or "parameters" for the
            MGDA baselines, which combine per-objective gradients instead.
        excludes_objectives: the combine honours ``active``, so the module may leave objectives out
            of the min (degenerate scores, ``algorithm.veto_threshold``).
        per_sample_active: the combine also honours one ``active`` row per sample ((B,K')), which
            ``algorithm.satisfied_at_ceiling`` needs.
        satisfied_at_ceiling: this run leaves an objective out of the min at the samples scoring its
            reward's ceiling (``algorithm.satisfied_at_ceiling``).
    """

    name: str = "pama"
    noon: bool = True
    gradient_space: str | None = None
    excludes_objectives: bool = True
    per_sample_active: bool = False
    satisfied_at_ceiling: bool = False

    @property
    def label(self) -> str:
        """The algorithm in result files: ``name``, with ``_noon`` or ``_no_noon`` where
        ``algorithm.noon`` overrides the default and ``_satisfied`` with ``satisfied_at_ceiling``, so
        that an ablation or variant gets a front of its own."""
        label = self.name
        if self.noon != type(self).noon:
            label += "_noon" if self.noon else "_no_noon"
        return label + ("_satisfied" if self.satisfied_at_ceiling else "")

    def trained_objectives(self, objectives: list[str]) -> list[str]:
        """The objectives the policy carries a value head and an advantage for, in order."""
        return list(objectives)

    def trained_scores(self, scores: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
        """Map (B,K) scores of the configured objectives to (B,K') scores of the trained ones; ``preference``
        is (K,), or (B,K), each sample's own (conditioning: MORLHF then scalarises each row by its own)."""
        return scores

    def trained_preference(self, preference: torch.Tensor) -> torch.Tensor:
        """(K',) preference over the trained objectives, the one the combine step sees ((B,K') from (B,K):
        one per sample, under conditioning)."""
        return preference


@dataclass
class AdvantageCombiner(Combiner, ABC):
    """Combines the K' per-objective advantages into one, for one PPO clipped surrogate."""

    @abstractmethod
    def combine(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        preference: torch.Tensor,
        ratio: torch.Tensor | None,
        clip_coef: float,
        active: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,T,K') per-objective advantages -> (B,T) combined advantage and the weights used.

        Weights are (B,T,K') for token granularity or (K',) for batch granularity. ``active`` (K',) bool
        leaves the other objectives out of the combine (None: all take part).
        """


@dataclass
class Pama(AdvantageCombiner):
    """PAMA: per token, the Theorem-1 closed form of the min over objectives."""

    per_sample_active: bool = True

    def combine(self, advantages, mask, preference, ratio, clip_coef, active=None):
        return combine_pama_token(advantages, preference, active)


@dataclass
class PamaBatch(AdvantageCombiner):
    name: str = "pama_batch"

    def combine(self, advantages, mask, preference, ratio, clip_coef, active=None):
        # One set of weights per minibatch across all ranks: the means cover every rank's tokens.
        return combine_pama_batch(
            advantages,
            mask,
            preference,
            ratio=ratio,
            clip_coef=clip_coef,
            mean_fn=distributed.masked_mean,
            active=active,
        )


@dataclass
class Morlhf(AdvantageCombiner):
    """Linear scalarisation of the rewards (the paper's MORLHF baseline): ordinary PPO on sum_i w_i R_i."""

    name: str = "morlhf"
    noon: bool = False
    excludes_objectives: bool = False

    def trained_objectives(self, objectives):
        return ["scalarised"]

    def trained_scores(self, scores, preference):
        return (scores * preference).sum(-1, keepdim=True)

    def trained_preference(self, preference):
        return preference.new_ones(*preference.shape[:-1], 1)  # (1,), or (B,1) per sample

    def combine(self, advantages, mask, preference, ratio, clip_coef, active=None):
        return advantages[..., 0], preference.new_ones(1)


@dataclass
class NoonPPO(Morlhf):
    """Single-objective PPO with Noon (no negative advantages): PAMA's n=1 special case."""

    name: str = "noon_ppo"
    noon: bool = True

    def trained_objectives(self, objectives):
        if len(objectives) != 1:
            raise ValueError(
                f"algorithm=noon_ppo optimises one objective, got {len(objectives)}; pick one "
                "(e.g. objective=sentiment) or use algorithm=pama for several"
            )
        return ["scalarised"]


@dataclass
class GradientCombiner(Combiner):
    """Combines the K per-objective PPO losses' gradients: ``mgda_step.mgda_backward`` in ``gradient_space``."""

    noon: bool = False
    excludes_objectives: bool = False


@dataclass
class MgdaUB(GradientCombiner):
    """MGDA-UB (Sener and Koltun 2018): min-norm weights of the per-objective PPO losses' gradients
    with respect to the last hidden states, then one backward of the weighted loss.

    No Noon by default: the paper's baseline runs MGDA-UB on ordinary per-objective PPO losses, and
    Noon is part of PAMA's contribution (``algorithm.noon=true`` adds it).
    """

    name: str = "mgda_ub"
    gradient_space: str | None = "representation"


@dataclass
class Mgda(MgdaUB):
    """Full MGDA over the shared trainable parameters (the LoRA adapters): K backward passes, the
    Gram matrix of the flattened gradients, the combined gradient written back before the step."""

    name: str = "mgda"
    gradient_space: str | None = "parameters"


COMBINERS: dict[str, type[Combiner]] = {
    "pama": Pama,
    "pama_batch": PamaBatch,
    "morlhf": Morlhf,
    "noon_ppo": NoonPPO,
    "mgda_ub": MgdaUB,
    "mgda": Mgda,
}


def build_combiner(name: str, noon: bool | None = None, satisfied_at_ceiling: bool = False) -> Combiner:
    """The combiner for ``algorithm.name``; ``noon`` overrides its default Noon setting;
    ``satisfied_at_ceiling`` is refused by combiners without per-sample masks."""
    if name not in COMBINERS:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(COMBINERS)}")
    combiner = COMBINERS[name]()
    if noon is not None:
        combiner.noon = bool(noon)
    if satisfied_at_ceiling:
        if not combiner.per_sample_active:
            allowed = ", ".join(n for n, c in COMBINERS.items() if c.per_sample_active)
            raise ValueError(
                f"algorithm.satisfied_at_ceiling=true: algorithm={name} cannot leave an objective out at "
                f"some samples only (its update has no per-token min); it applies to {allowed} (use false here)"
            )
        combiner.satisfied_at_ceiling = True
    return combiner
