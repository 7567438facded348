"""Any Python function as a reward, named by import path in the config."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pama_lit.rewards.base import Reads, Reward, check_reads


def import_callable(path: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (or the dotted ``package.module.function``)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"reward function {path!r}: expected 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"reward function {path!r}: cannot import module {module_name!r}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(
                f"reward function {path!r}: {module_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(obj):
        raise TypeError(f"reward function {path!r} is a {type(obj).__name__}, not a callable")
    return obj


class CallableReward(Reward):
    """A plain function as a reward, so users add one without touching the package.

    The function receives ``responses`` (``reads="response"``) or ``prompts, responses``
    (``reads="prompt+response"``), both lists of B strings, plus ``kwargs``, and returns B floats
    (list, NumPy array or tensor). With ``lengths=True`` it also receives
    ``response_lengths=`` (a (B,) long tensor, policy tokens). For example::

        rewards:
          polite:
            _target_: pama_lit.rewards.CallableReward
            fn: my_project.rewards:count_please
            kwargs: {bonus: 0.5}

    Args:
        fn: the function, or its import path "package.module:function".
        reads: what the function reads.
        batch_size: at most this many samples per call.
        lengths: pass ``response_lengths=`` too.
        kwargs: extra keyword arguments for every call.
    """

    def __init__(
        self,
        fn: str | Callable[..., Any],
        reads: Reads = "response",
        batch_size: int = 256,
        lengths: bool = False,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.fn = import_callable(fn) if isinstance(fn, str) else fn
        if not callable(self.fn):
            raise TypeError(f"CallableReward: fn must be callable or an import path, got {fn!r}")
        self.reads = check_reads(reads, type(self).__name__)
        self.batch_size = int(batch_size)
        self.lengths = lengths
        self.kwargs = dict(kwargs or {})

    def score(self, prompts, responses, response_lengths):
        args = (list(responses),) if self.reads == "response" else (list(prompts), list(responses))
        extra = {"response_lengths": response_lengths} if self.lengths else {}
        return self.fn(*args, **extra, **self.kwargs)
