"""Fail fast, with a clear message, when a hub model or data set cannot be had.

``from_pretrained`` or ``load_dataset`` on a machine without internet either retries for minutes
or ends in a long traceback that never says what to do instead. :func:`require_hub_model` and
:func:`require_hub_dataset` answer within seconds: a local folder or a repo already in the Hugging
Face cache is used as is; otherwise one short HTTP request asks the hub whether the repo exists,
and an unreachable hub (or ``HF_HUB_OFFLINE=1``) raises :class:`HubModelUnavailable` naming the
repo and the embedded alternative.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

_TRUE = {"1", "ON", "YES", "TRUE"}
_OFFLINE_VARS = {
    "model": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"),
    "dataset": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"),
}


class HubModelUnavailable(RuntimeError):
    """A hub model or data set is neither local, nor cached, nor reachable."""


def hub_offline(kind: Literal["model", "dataset"] = "model") -> str | None:
    """The offline variable that is set to a true value (``HF_HUB_OFFLINE`` ...), or None."""
    return next((k for k in _OFFLINE_VARS[kind] if os.environ.get(k, "").strip().upper() in _TRUE), None)


def hub_endpoint() -> str:
    """The hub's base URL (``$HF_ENDPOINT`` or huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def cached_snapshot(name: str, revision: str | None = None) -> str | None:
    """The local snapshot folder of model ``name`` if its ``config.json`` is in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # an invalid repo id is simply not cached
        return None
    return str(Path(path).parent) if isinstance(path, str) else None


def _dataset_cached(name: str) -> bool:
    from huggingface_hub import constants

    folder = "datasets--" + name.replace("/", "--")
    return (Path(constants.HF_HUB_CACHE) / folder / "snapshots").is_dir()


def probe_hub(
    name: str, timeout: float = 3.0, kind: Literal["model", "dataset"] = "model"
) -> tuple[int | None, str]:
    """Ask the hub for ``name``'s API page with a hard time limit.

    Returns:
        (HTTP status, "") when the hub answered, or (None, reason) when it could not be reached.
        The request runs in a daemon thread because a hanging DNS lookup ignores socket timeouts.
    """
    url = f"{hub_endpoint()}/api/{kind}s/{urllib.parse.quote(name, safe='/')}"
    result: dict[str, object] = {}

    def run() -> None:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "pama_lit"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result["status"] = response.status
        except urllib.error.HTTPError as e:
            result["status"] = e.code
        except Exception as e:  # URLError, timeouts, DNS failures: all mean "unreachable"
            result["error"] = f"{type(e).__name__}: {getattr(e, 'reason', e)}"

    thread = threading.Thread(target=run, name="pama-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if "status" in result:
        return int(result["status"]), ""  # type: ignore[arg-type]
    return None, str(result.get("error", f"no answer within {timeout:g} s"))


def _require(
    name: str,
    kind: Literal["model", "dataset"],
    what: str,
    alternative: str,
    cached: str | None,
    timeout: float,
) -> str:
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    download = "hf download" + (" --repo-type dataset" if kind == "dataset" else "")

    def fail(reason: str, offline: bool = True) -> HubModelUnavailable:
        if not offline:
            return HubModelUnavailable(
                f"{what} '{name}' is not available: {reason}. Instead use {alternative}."
            )
        return HubModelUnavailable(
            f"{what} '{name}' is not available offline: it is not a local folder, not in the Hugging Face "
            f"cache, and {reason}. Instead use {alternative}; or run where the hub is reachable (a repo "
            f"fetched there with `{download} {name}` is then found in the cache)."
        )

    if name.startswith((".", "/", "~")):
        raise fail("it looks like a path but no such folder exists", offline=False)
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except Exception as e:
        raise fail(f"it is neither a folder nor a valid hub {kind} id ({e})", offline=False) from None

    offline_var = hub_offline(kind)
    if offline_var:
        if cached:
            return cached
        raise fail(f"offline mode is on ({offline_var} is set)")
    status, reason = probe_hub(name, timeout, kind)
    if status is None:
        if cached:
            log.warning("hub unreachable (%s); using the cached %s '%s'", reason, what, name)
            return cached
        raise fail(f"the hub {hub_endpoint()} cannot be reached ({reason})")
    if status == 404:
        raise fail(f"the hub {hub_endpoint()} has no {kind} of that name (HTTP 404)", offline=False)
    return name


def require_hub_model(
    name: str, what: str, alternative: str, *, revision: str | None = None, timeout: float = 3.0
) -> str:
    """Check, within seconds, that a model can be loaded; return what to pass to ``from_pretrained``.

    Args:
        name: a hub repo id (``org/model``) or a local folder.
        what: what the model is for, for the message (e.g. "reward model", "policy model").
        alternative: what to use instead offline (e.g. "reward=sentiment (embedded VADER)").
        revision: the hub revision, when pinned.
        timeout: seconds to wait for the hub.

    Returns:
        A local folder (the given one, or the cached snapshot when offline or the hub cannot be
        reached: loading it makes no network call), or ``name`` when the hub has the model.

    Raises:
        HubModelUnavailable: the model is not local, not cached and the hub is offline, unreachable
            or has no such model.
    """
    return _require(name, "model", what, alternative, cached_snapshot(name, revision), timeout)


def require_hub_dataset(name: str, alternative: str, *, what: str = "data set", timeout: float = 3.0) -> str:
    """Check, within seconds, that ``datasets.load_dataset(name)`` can work; return ``name`` or the folder.

    Like :func:`require_hub_model`, for data sets; ``HF_DATASETS_OFFLINE`` counts as offline too.
    A data set in the hub cache passes (``load_dataset`` then needs ``HF_HUB_OFFLINE=1`` or a
    reachable hub to use it).
    """
    cached = name if not Path(name).expanduser().is_dir() and _dataset_cached(name) else None
    return _require(name, "dataset", what, alternative, cached, timeout)
