"""The one tiny configuration every test starts from: Hydra overrides and a bare Llama config."""

from __future__ import annotations

# One iteration of the tiny random Llama (debug=tiny), 4 new tokens, 2 validation prompts, no logger:
# a full train() in a few seconds. Tests append what they need; a later override of a key wins.
TINY = ["debug=tiny", "iterations=1", "rollout.max_new_tokens=4", "data.val_size=2", "logger=none"]


def tiny_llama_config(**changes):
    """A 2-layer Llama of width 32 over a 64-token vocabulary; ``changes`` replace any field."""
    from transformers import LlamaConfig  # here: conftest imports this module, most tests need no model

    fields = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    }
    fields.update(changes)
    return LlamaConfig(**fields)
