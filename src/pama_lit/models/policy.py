"""The trainable policy: a causal LM (LoRA by default) with K scalar value heads on its last hidden state."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from pama_lit.models.merging import adapter_parameters, cast_parameters, merge_blocker, merged_adapters
from pama_lit.models.svd_lora import SvdLora

log = logging.getLogger(__name__)


def disable_dropout(model: nn.Module) -> None:
    """Zero every dropout: PPO's first-epoch ratio must be exactly 1 (TRL and OpenRLHF do the same)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        # Attention kernels take a float probability (Llama's ``attention_dropout``, passed to SDPA in
        # train mode), not a Dropout module.
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    if config is not None:
        for name, value in vars(config).items():
            if ("dropout" in name or name.endswith("_pdrop")) and isinstance(value, float):
                setattr(config, name, 0.0)


class PolicyWithValueHeads(nn.Module):
    """Policy LM, reference LM and K value heads (``Linear(hidden, K)``) in one module.

    With LoRA (or SVD-LoRA) the reference is the same network with the adapters disabled, so no second
    copy is held in memory; with full fine-tuning a frozen deep copy is kept as ``ref_lm``.

    Args:
        lm: a causal LM (``PreTrainedModel``).
        num_value_heads: K, one scalar head per trained objective.
        lora: LoRA settings (``r``, ``alpha``, ``dropout``, ``target_modules``) or None for full fine-tuning.
        svd_lora: instead of ``lora``, preference-conditioned SVD-LoRA adapters (``SvdLora``'s arguments:
            ``target_modules``, ``rank``, ``num_preferences``, ``alpha``, ``init``); every forward and
            ``generate`` then takes ``preferences``.
        no_dropout: zero every dropout probability, the LoRA adapters' ``lora_dropout`` included.
        gradient_checkpointing: trade compute for activation memory in the update forward.
    """

    def __init__(
        self,
        lm: PreTrainedModel,
        num_value_heads: int,
        lora: dict | None = None,
        no_dropout: bool = True,
        gradient_checkpointing: bool = False,
        svd_lora: dict | None = None,
    ) -> None:
        super().__init__()
        if lora is not None and svd_lora is not None:
            raise ValueError("PolicyWithValueHeads takes lora or svd_lora, not both")
        self.uses_lora = lora is not None
        self._merge_fallback_logged = False
        # Not a submodule: its layers are already in lm's tree.
        self.svd_lora = SvdLora(lm.requires_grad_(False), **svd_lora) if svd_lora is not None else None
        if gradient_checkpointing:
            kwargs: dict = {"use_reentrant": False}
            if (
                self.svd_lora is not None
            ):  # the recomputation, at backward time, reads the forward's preference
                kwargs["context_fn"] = self.svd_lora.checkpoint_context_fn
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if self.svd_lora is not None:
            self.lm = lm
            self.ref_lm = None
        elif self.uses_lora:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=int(lora["r"]),
                lora_alpha=float(lora["alpha"]),
                lora_dropout=float(lora.get("dropout", 0.0)),
                target_modules=list(lora["target_modules"]),
                task_type="CAUSAL_LM",
            )
            self.lm = get_peft_model(lm, config)
            self.ref_lm = None
        else:
            self.ref_lm = copy.deepcopy(lm).eval().requires_grad_(False)
            self.lm = lm
        if no_dropout:
            # After get_peft_model: the adapters bring their own Dropout modules (lora_dropout), which
            # would otherwise stay on in train mode and make sampling, pi_old and the update see
            # three different networks.
            disable_dropout(self.lm)
        hidden = lm.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, num_value_heads)
        # Zero init: every value starts at 0, the bootstrap GAE assumes before any fit.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @property
    def num_value_heads(self) -> int:
        return self.value_head.out_features

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Adapters (or all LM weights without LoRA) and value heads: what a checkpoint holds."""
        return {k: v for k, v in self.named_parameters() if v.requires_grad}

    @staticmethod
    def _inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, num_response: int) -> dict:
        # Left padding: positions count real tokens only, as generate() counts them.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=num_response + 1,
            use_cache=False,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        num_response: int,
        return_hidden: bool = False,
        preferences: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Logits and values at the positions that predict the response tokens.

        Args:
            input_ids: (B, Tq+T) left-padded queries followed by right-padded responses.
            attention_mask: (B, Tq+T) True on real query and response tokens.
            num_response: T.
            return_hidden: also return the last hidden state, the representation that both the LM head
                and the value heads read (MGDA-UB differentiates with respect to it).
            preferences: (B,K) each row's preference, which an SVD-LoRA policy needs (ignored otherwise).

        Returns:
            logits (B,T,V) and values (B,T,K) (float32), position t predicting response token t; with
            ``return_hidden`` also the final (normed) hidden state (B, Tq+T, H), the very tensor the
            logits and values are computed from.
        """
        with self.conditioned(preferences):
            out = self.lm(**self._inputs(input_ids, attention_mask, num_response), output_hidden_states=True)
        logits = out.logits[:, :-1]
        hidden = out.hidden_states[-1][:, -(num_response + 1) : -1]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).float()
        if return_hidden:
            return logits, values, out.hidden_states[-1]
        return logits, values

    @torch.no_grad()
    def reference_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_response: int
    ) -> torch.Tensor:
        """(B,T,V) logits of the frozen reference policy (adapters disabled under LoRA)."""
        inputs = self._inputs(input_ids, attention_mask, num_response)
        if self.ref_lm is not None:
            return self.ref_lm(**inputs).logits[:, :-1]
        if self.svd_lora is not None:
            with self.svd_lora.disabled():
                return self.lm(**inputs).logits[:, :-1]
        with self.lm.disable_adapter():
            return self.lm(**inputs).logits[:, :-1]

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        max_new_tokens: int,
        min_new_tokens: int = 1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        do_sample: bool = True,
        merge_adapters: bool = True,
        preferences: torch.Tensor | None = None,
        sampling_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Sample responses with the KV cache; returns (B,T) new tokens, T <= max_new_tokens.

        With LoRA and ``merge_adapters`` the decoding runs through merged weights (``merged_adapters``:
        no per-step adapter matmuls, base weights restored bit for bit); a model that cannot be merged
        exactly (``merge_blocker``) samples through its unmerged adapters, with one warning. SVD-LoRA
        always samples unmerged: each row has its own weights, so there is no one merged weight; its
        ``preferences`` (B,K) hold for every decoding step. With ``sampling_dtype`` the decoding runs
        through a copy of the weights in that dtype (``cast_parameters``), the adapters unmerged
        and in their own dtype when it is a half-precision one (``merge_blocker``); the log-probabilities PPO uses still come
        from the training forward passes.
        """
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_k=top_k if do_sample else None,
            top_p=top_p if do_sample else None,
            eos_token_id=list(eos_token_ids),
            pad_token_id=pad_token_id,
            use_cache=True,
        )
        # CPU autocast recasts every frozen fp32 weight to bf16 at every decoding step (its cast cache keeps
        # trainable leaves only), which made bf16-mixed sampling slower than fp32: sample in the weights'
        # own dtype there. The log-probabilities PPO uses still come from the autocast forward passes.
        on_cpu = input_ids.device.type == "cpu"
        with (
            torch.autocast("cpu", enabled=False) if on_cpu else contextlib.nullcontext(),
            self.sampling_weights(merge_adapters, sampling_dtype),
            self.conditioned(preferences),
        ):
            out = self.lm.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config
            )
        return out[:, input_ids.shape[1] :]

    def conditioned(self, preferences: torch.Tensor | None) -> contextlib.AbstractContextManager:
        """SVD-LoRA: the adapters read ``preferences`` inside the block (required); otherwise nothing."""
        if self.svd_lora is None:
            return contextlib.nullcontext()
        if preferences is None:
            raise ValueError("an svd_lora policy needs the preferences of the rows it runs on")
        return self.svd_lora.preference(preferences)

    @contextlib.contextmanager
    def sampling_weights(
        self, merge_adapters: bool, sampling_dtype: torch.dtype | None = None
    ) -> Iterator[None]:
        """The weights ``generate`` decodes with, inside the block: merged LoRA weights where that is
        exact (``merge_blocker``: never held in a half-precision dtype, whose rounding would erase the
        update), then every weight but the adapters' cast to ``sampling_dtype`` (None: as they are); the
        adapters (LoRA, SVD-LoRA) keep their dtype, so the update they add keeps its precision. All
        restored on exit."""
        with contextlib.ExitStack() as stack:
            if self.uses_lora and merge_adapters:
                reason = merge_blocker(self.lm, sampling_dtype)
                if reason is None:
                    stack.enter_context(merged_adapters(self.lm))
                elif not self._merge_fallback_logged:
                    log.warning(
                        "rollout.merge_adapters: sampling through unmerged adapters, because %s", reason
                    )
                    self._merge_fallback_logged = True
            if sampling_dtype is not None:
                keep = adapter_parameters(self.lm)
                if self.svd_lora is not None:
                    keep.extend(self.svd_lora.parameters())
                stack.enter_context(cast_parameters(self.lm, sampling_dtype, keep=keep))
            yield
