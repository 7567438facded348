"""Policy models: loaders (embedded, tiny, hub), LoRA set-up, the policy with value heads, merged sampling."""

from pama_lit.models.loading import (
    LoadedModel,
    build_tiny_llama,
    load_embedded_smollm2,
    load_hub_model,
)
from pama_lit.models.merging import merge_blocker, merged_adapters
from pama_lit.models.policy import PolicyWithValueHeads

__all__ = [
    "LoadedModel",
    "PolicyWithValueHeads",
    "build_tiny_llama",
    "load_embedded_smollm2",
    "load_hub_model",
    "merge_blocker",
    "merged_adapters",
]
