"""Rollout data: the sampled batch that one PPO iteration learns from."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


def response_mask_from_eos(responses: torch.Tensor, eos_token_ids: torch.Tensor) -> torch.Tensor:
    """(B,T) True on response tokens up to and including the first EOS of each row.

    Never built from ``ids != pad_id``: for models whose pad token is the EOS token that would drop
    the EOS the policy actually sampled.
    """
    is_eos = torch.isin(responses, eos_token_ids)
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()
    return eos_before == 0


@dataclass
class Rollout:
    """One iteration's samples; every tensor is on the policy's device.

    Attributes:
        input_ids: (B,Tq+T) left-padded queries followed by right-padded responses.
        attention_mask: (B,Tq+T) True on real query and response tokens.
        responses: (B,T) response token ids, pad after the first EOS.
        response_mask: (B,T) True on real response tokens.
        logprobs: (B,T) log pi_old of each response token (0 outside the mask).
        ref_logprobs: (B,T) log pi_ref of each response token.
        values: (B,T,K) value-head outputs of pi_old.
        prompts: the B prompt texts (before the chat template).
        texts: the B decoded responses.
        preferences: (B,K) the preference each row was sampled at (conditioned runs), else None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    responses: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    prompts: list[str]
    texts: list[str]
    preferences: torch.Tensor | None = None

    def rows(self, idx: torch.Tensor) -> torch.Tensor | None:
        """(M,K) the preferences of the rows ``idx`` (M,), or None (unconditioned)."""
        return None if self.preferences is None else self.preferences[idx]

    @property
    def num_response(self) -> int:
        return self.responses.shape[1]

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) response lengths in policy tokens."""
        return self.response_mask.sum(-1)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if torch.is_tensor(getattr(self, f.name))}


@dataclass
class PolicyForward:
    """The policy's forward over a batch's responses, with grad: what a PPO minibatch differentiates.

    Attributes:
        logprobs: (B,T) log pi_theta of each response token, with grad.
        values: (B,T,K) value-head outputs, with grad.
        entropy: (B,T) per-token entropy of pi_theta, without grad.
    """

    logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor

    def rows(self, idx: torch.Tensor) -> PolicyForward:
        """The forward of the rows ``idx`` (M,), still attached to the graph."""
        return PolicyForward(self.logprobs[idx], self.values[idx], self.entropy[idx])
