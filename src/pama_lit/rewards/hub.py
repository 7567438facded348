"""Hub models as rewards: sequence classifiers and single-logit reward models (frozen, lazy-loaded)."""

from __future__ import annotations

import inspect
import logging
from typing import Literal

import torch

from pama_lit.infra.hub_access import require_hub_model
from pama_lit.rewards.base import Reads, Reward, check_reads

log = logging.getLogger(__name__)

EMBEDDED = "an embedded reward (reward=sentiment, humor, harmless or length)"
DIALOGUE = "\n\nHuman: {prompt}\n\nAssistant: {response}"


class SequenceClassifierReward(Reward):
    """The logit (or probability) of one label of a ``AutoModelForSequenceClassification``.

    E.g. lvwerra/distilbert-imdb with ``label=1`` (POSITIVE) for the paper's sentiment objective, or
    mohameddhiab/humor-no-humor with ``label=1`` for humor. Whether the model can be had is checked
    at construction (seconds; see :func:`require_hub_model`); the weights load on first use or on
    ``to(device)``, in eval mode with every parameter frozen, and scoring runs under ``no_grad``.

    Args:
        model_name: hub id or local folder.
        label: class index, or a label name from the model's ``id2label`` (case-insensitive).
        output: "logit" (the raw logit of ``label``) or "prob" (softmax over labels; sigmoid for a
            single-logit head).
        reads: "response", or "prompt+response": then ``template`` formats both into one text, or
            without a template the tokenizer encodes them as a text pair.
        template: a ``str.format`` template with ``{response}`` (and ``{prompt}``), or None.
        batch_size: samples per forward pass.
        max_length: tokens kept per text (truncated on ``truncation_side``).
        truncation_side: "left" keeps the end of the text; default "left" for prompt+response (the
            response is at the end), "right" otherwise.
        trust_remote_code: passed to ``from_pretrained``; keep False unless you trust the repo.
        device: where the model runs until ``to(device)`` moves it.
        dtype: e.g. "bfloat16" to load a large reward model in half precision (scores are float32).
        revision: hub revision to pin.
        alternative: the embedded reward named in the offline error.
    """

    def __init__(
        self,
        model_name: str,
        label: int | str = 1,
        output: Literal["logit", "prob"] = "logit",
        reads: Reads = "response",
        template: str | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        truncation_side: Literal["left", "right"] | None = None,
        trust_remote_code: bool = False,
        device: str | torch.device = "cpu",
        dtype: str | None = None,
        revision: str | None = None,
        alternative: str = EMBEDDED,
    ) -> None:
        if output not in ("logit", "prob"):
            raise ValueError(f"{type(self).__name__}: output must be 'logit' or 'prob', got {output!r}")
        self.reads = check_reads(reads, type(self).__name__)
        if template is not None:
            if "{response}" not in template:
                raise ValueError(f"{type(self).__name__}: template {template!r} has no {{response}}")
            if "{prompt}" in template and reads == "response":
                raise ValueError(f"{type(self).__name__}: template reads {{prompt}} but reads='response'")
        self.model_name, self.label, self.output, self.template = model_name, label, output, template
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self.truncation_side = truncation_side or ("left" if reads == "prompt+response" else "right")
        self.trust_remote_code, self.revision = trust_remote_code, revision
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.device = torch.device(device)
        self.source = require_hub_model(model_name, "reward model", alternative, revision=revision)
        self.model = self.tokenizer = None
        self.label_index: int | None = None

    def _load(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        log.info("loading reward model %s from %s on %s", self.model_name, self.source, self.device)
        kwargs = {"trust_remote_code": self.trust_remote_code, "revision": self.revision}
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.source, **kwargs)
            if self.dtype is not None:
                kwargs["dtype"] = self.dtype
            model = AutoModelForSequenceClassification.from_pretrained(self.source, **kwargs)
        except OSError as e:
            raise OSError(f"could not load reward model '{self.model_name}' from {self.source}: {e}") from e
        tokenizer.truncation_side = self.truncation_side
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:  # GPT-2 style: the last non-pad token is read, so pad = eos works
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        model.requires_grad_(False)
        self.model, self.tokenizer = model.eval().to(self.device), tokenizer
        self._forward_args = set(inspect.signature(model.forward).parameters)
        self.label_index = self._resolve_label(model.config)

    def _resolve_label(self, config) -> int:
        n, label = config.num_labels, self.label
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            names = {str(v).lower(): int(k) for k, v in config.id2label.items()}
            if label.lower() not in names:
                raise ValueError(
                    f"reward model '{self.model_name}' has no label {label!r}; its labels: {config.id2label}"
                )
            return names[label.lower()]
        index = int(label)
        if not -n <= index < n:
            raise ValueError(
                f"reward model '{self.model_name}' has {n} labels; label {index} is out of range"
            )
        return index % n

    def to(self, device):
        self.device = torch.device(device)
        if self.model is None:
            self._load()
        else:
            self.model.to(self.device)
        return self

    def encode(self, prompts: list[str], responses: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize a batch as the model reads it: padded, truncated, on the model's device."""
        if self.template is not None:
            texts = [
                self.template.format(prompt=p, response=r) for p, r in zip(prompts, responses, strict=True)
            ]
            pair = None
        elif self.reads == "prompt+response":
            texts, pair = list(prompts), list(responses)
        else:
            texts, pair = list(responses), None
        enc = self.tokenizer(
            texts, pair, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in enc.items() if k in self._forward_args}

    @torch.no_grad()
    def score(self, prompts, responses, response_lengths):
        if self.model is None:
            self._load()
        logits = self.model(**self.encode(prompts, responses)).logits.float()
        if self.output == "logit":
            return logits[:, self.label_index]
        if logits.shape[-1] == 1:
            return torch.sigmoid(logits[:, 0])
        return torch.softmax(logits, dim=-1)[:, self.label_index]


class RewardModelReward(SequenceClassifierReward):
    """A single-logit reward model (e.g. Ray2333/gpt2-large-harmless-reward_model) on the dialogue.

    Reads the prompt and response through ``template`` (Anthropic HH style by default, the format
    the HH reward models were trained on) and returns the scalar logit.
    """

    def __init__(
        self,
        model_name: str,
        template: str = DIALOGUE,
        reads: Reads = "prompt+response",
        batch_size: int = 16,
        max_length: int = 1024,
        **kwargs,
    ) -> None:
        super().__init__(
            model_name,
            label=0,
            reads=reads,
            template=template,
            batch_size=batch_size,
            max_length=max_length,
            **kwargs,
        )

    def _load(self) -> None:
        super()._load()
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"reward model '{self.model_name}' has {self.model.config.num_labels} labels, not one: "
                "use SequenceClassifierReward with label=..."
            )
