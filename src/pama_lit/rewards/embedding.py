"""Rewards read from MiniLM sentence embeddings by a logistic regression this project trains (offline)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch

from pama_lit.rewards.base import Reads, Reward, check_reads, read_texts

log = logging.getLogger(__name__)


class EmbeddingClassifier(Reward):
    """Logits of a text from MiniLM sentence embeddings and a linear classifier stored as JSON.

    The shared part of :class:`~pama_lit.rewards.HumorClassifier` and
    :class:`~pama_lit.rewards.TweetSentiment`: find the artifact (the cached one, checked against its
    manifest and trained again when missing or damaged; or a file given, never retrained), load the
    embedder, and turn texts into one logit per class. A subclass names its training module
    (``trainer``: ``default_artifact_path``, ``cached_artifact``, ``load_artifact`` and the function named
    ``train_function``) and maps the logits to its score.

    Args:
        reads: "response" (default) or "prompt+response".
        artifact: the classifier's JSON file; by default the trainer's cached one.
        train_if_missing: train the classifier when the artifact does not exist (else raise).
        batch_size: texts per MiniLM forward pass.
        device: where MiniLM runs until ``to(device)`` moves it.
    """

    trainer: str  # the training module, e.g. "pama_lit.rewards.humor_train"
    train_function: str  # its training function's name
    what: str  # what the artifact is called in messages

    def __init__(
        self,
        reads: Reads = "response",
        artifact: str | None = None,
        train_if_missing: bool = True,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        self.reads = check_reads(reads, type(self).__name__)
        self.artifact_path = Path(artifact).expanduser() if artifact else None
        self.train_if_missing, self.batch_size = train_if_missing, int(batch_size)
        self.device = torch.device(device)
        self.embedder = None
        self.info: dict | None = None

    def _load(self) -> None:
        # Imported here so that `python -m <trainer>` runs a module not yet imported.
        from pama_lit.infra.cache import manifest_problem
        from pama_lit.rewards.humor_train import load_embedder

        module = importlib.import_module(self.trainer)
        embedder = load_embedder(str(self.device))
        how = f"train it with `python -m {self.trainer}`"
        if self.artifact_path is None:  # the cached artifact: checked against its manifest
            path = module.default_artifact_path()
            if self.train_if_missing:
                module.cached_artifact(embedder)
            elif problem := manifest_problem(path.parent):
                raise FileNotFoundError(f"{self.what} {path.parent} is missing or damaged ({problem}); {how}")
            info = module.load_artifact(path)
        elif self.artifact_path.exists():
            info = module.load_artifact(self.artifact_path)
        elif self.train_if_missing:
            log.info("%s %s not found: training it now", self.what, self.artifact_path)
            info = getattr(module, self.train_function)(self.artifact_path, embedder=embedder, progress=True)
        else:
            raise FileNotFoundError(f"{self.what} {self.artifact_path} not found; {how}")
        self.info, self.embedder = info, embedder
        # (classes, 384) -> (384, classes): one row of weights per class; a binary classifier has one.
        coef = torch.tensor(info["coef"], dtype=torch.float32, device=self.device)
        self.coef = coef.reshape(-1, coef.shape[-1]).T.contiguous()
        self.intercept = torch.tensor(info["intercept"], dtype=torch.float32, device=self.device).reshape(-1)

    def to(self, device):
        self.device = torch.device(device)
        if self.embedder is None:
            self._load()
        else:
            self.embedder.to(self.device)
            self.coef, self.intercept = self.coef.to(self.device), self.intercept.to(self.device)
        return self

    @torch.no_grad()
    def logits(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """(B, classes) float32 logits of the texts this reward reads."""
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
        return emb.float().reshape(len(texts), -1) @ self.coef + self.intercept
