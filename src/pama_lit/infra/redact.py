"""Keep API keys and tokens out of what a run writes: logged hyperparameters, W&B config, result files.

A config can pull a secret in through an interpolation (``${oc.env:WANDB_API_KEY}``) or hold one
under a key such as ``api_key``; resolved and logged as hyperparameters it would land in
``hparams.yaml`` and the W&B run. :func:`redact` replaces both kinds before anything is logged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
# Variables that hold credentials by convention, plus any whose name says so (below).
SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN")
_SECRET_NAME = re.compile(
    r"(^|[_-])(api[_-]?key|token|secret|passw(or)?d|credentials?|auth)($|[_-])", re.IGNORECASE
)  # api_key, HF_TOKEN, client_secret; not tokenizer or max_new_tokens
_MIN_SECRET_LENGTH = 8  # shorter values (e.g. TOKENIZERS_PARALLELISM=false) are not credentials


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables that hold credentials, longest first."""
    environ = os.environ if environ is None else environ
    values = {
        v
        for k, v in environ.items()
        if (k in SECRET_ENV or _SECRET_NAME.search(k)) and len(v) >= _MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


def redact(obj: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A copy of ``obj`` (nested dicts, lists, strings) with every secret replaced by ``***``.

    Secrets are values under keys that name a credential (``api_key``, ``token``, ``password``, ...)
    and any occurrence of a credential environment variable's value.
    """
    secrets = secret_values(environ)

    def walk(value: Any, key: str | None = None) -> Any:
        if key is not None and _SECRET_NAME.search(key) and isinstance(value, str) and value:
            return MASK
        if isinstance(value, Mapping):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(v) for v in value)
        if isinstance(value, str):
            for secret in secrets:
                value = value.replace(secret, MASK)
        return value

    return walk(obj)
