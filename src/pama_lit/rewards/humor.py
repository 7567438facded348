"""Humor as P(joke) from the project's own MiniLM + logistic-regression classifier (offline)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch

from pama_lit.rewards.base import Reads, Reward, check_reads, read_texts

log = logging.getLogger(__name__)


class HumorClassifier(Reward):
    """P(joke) (or its logit) of a text, from MiniLM sentence embeddings and logistic regression.

    The embedded stand-in for the paper's mohameddhiab/humor-no-humor (``reward=humor_hub``). The
    classifier is trained by ``python -m pama_lit.rewards.humor_train`` (see there for the data) and
    stored as JSON in the user cache; when the cached artifact is missing or damaged (checked against
    its manifest) the first score trains it (tens of seconds on 2 CPU cores).

    How it can be gamed: it learned what jokes *look like* in a few hundred packaged examples, not
    what is funny. Joke templates score high whatever follows ("Why did the X ...? Because ...",
    "Knock knock", "What do you call ..."), as do the pyjokes themes (Chuck Norris, programmers,
    bars); a policy can recite stock jokes regardless of the prompt. Plain factual answers and polite
    assistant boilerplate score low. Pair it with an objective that keeps responses on topic, and
    read samples, not only the curve.

    Args:
        output: "prob" (P(joke) in [0, 1]) or "logit" (unbounded, the paper's convention for
            classifier rewards).
        reads: "response" (default) or "prompt+response".
        artifact: the classifier's JSON file; by default ``humor_classifier_v1/classifier.json`` in
            the cache, trained again when damaged (a file given here never is).
        train_if_missing: train the classifier when the artifact does not exist (else raise).
        batch_size: texts per MiniLM forward pass.
        device: where MiniLM runs until ``to(device)`` moves it.
    """

    def __init__(
        self,
        output: Literal["prob", "logit"] = "prob",
        reads: Reads = "response",
        artifact: str | None = None,
        train_if_missing: bool = True,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        if output not in ("prob", "logit"):
            raise ValueError(f"HumorClassifier: output must be 'prob' or 'logit', got {output!r}")
        self.output, self.reads = output, check_reads(reads, type(self).__name__)
        self.artifact_path = Path(artifact).expanduser() if artifact else None
        self.train_if_missing, self.batch_size = train_if_missing, int(batch_size)
        self.device = torch.device(device)
        self.embedder = None
        self.info: dict | None = None

    def _load(self) -> None:
        # Imported here so that `python -m pama_lit.rewards.humor_train` runs a module not yet imported.
        from pama_lit.infra.cache import manifest_problem
        from pama_lit.rewards.humor_train import (
            cached_artifact,
            default_artifact_path,
            load_artifact,
            load_embedder,
            train_humor_classifier,
        )

        embedder = load_embedder(str(self.device))
        how = "train it with `python -m pama_lit.rewards.humor_train`"
        if self.artifact_path is None:  # the cached artifact: checked against its manifest
            path = default_artifact_path()
            if self.train_if_missing:
                cached_artifact(embedder)
            elif problem := manifest_problem(path.parent):
                raise FileNotFoundError(
                    f"humor classifier {path.parent} is missing or damaged ({problem}); {how}"
                )
            info = load_artifact(path)
        elif self.artifact_path.exists():
            info = load_artifact(self.artifact_path)
        elif self.train_if_missing:
            log.info("humor classifier %s not found: training it now", self.artifact_path)
            info = train_humor_classifier(self.artifact_path, embedder=embedder, progress=True)
        else:
            raise FileNotFoundError(f"humor classifier {self.artifact_path} not found; {how}")
        self.info, self.embedder = info, embedder
        self.coef = torch.tensor(info["coef"], dtype=torch.float32, device=self.device)
        self.intercept = float(info["intercept"])

    def to(self, device):
        self.device = torch.device(device)
        if self.embedder is None:
            self._load()
        else:
            self.embedder.to(self.device)
            self.coef = self.coef.to(self.device)
        return self

    @torch.no_grad()
    def score(self, prompts, responses, response_lengths):
        if self.embedder is None:
            self._load()
        texts = read_texts(self.reads, prompts, responses)
        emb = self.embedder.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        logits = emb.float() @ self.coef + self.intercept
        return logits if self.output == "logit" else torch.sigmoid(logits)
