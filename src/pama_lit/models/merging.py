"""Sampling through merged LoRA weights, with the base weights left bit for bit as they were.

Unmerged LoRA costs every decoding step two extra small matmuls per adapted projection; merged
weights ``W + scale * B @ A`` cost none. peft's ``merge_adapter()`` / ``unmerge_adapter()`` add the
delta into ``W`` and subtract it again in floating point, which does not give ``W`` back (on
SmolLM2 with the default LoRA every one of the 210 adapted weights differs after one cycle, by up
to 1.2e-7), and under LoRA ``W`` is also the reference policy. Here the merged weight is a new
tensor that stands in for ``W`` while the adapters are disabled; ``W`` itself is never written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

# ``rollout.sampling_dtype``'s values (null aside): the dtype ``cast_parameters`` samples in.
SAMPLING_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def _lora_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            yield name, module


def _sharding_wrappers() -> tuple[type, ...]:
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # torch built without distributed support: nothing can be sharded
        return ()
    return FSDPModule, FullyShardedDataParallel


def _active(layer: nn.Module) -> list[str]:
    return [a for a in layer.active_adapters if a in layer.lora_A]


def merge_blocker(model: nn.Module, sampling_dtype: torch.dtype | None = None) -> str | None:
    """Why ``merged_adapters`` cannot reproduce ``model``'s adapted forward exactly, or None if it can.

    Mergeable: a ``PeftModel`` whose tuner layers are all plain LoRA ``Linear`` layers (``nn.Linear``
    or GPT-2's ``Conv1D`` base) over unsharded floating-point weights, none already merged, with no
    DoRA or other LoRA variant, no ``lora_bias``, no active LoRA dropout (merged weights would drop
    its noise) and no ``modules_to_save`` or trainable-token wrappers (which disabling would switch
    to their originals); and the merged weights are held in float32 or wider.

    That last condition: a merged weight ``W + delta`` in bfloat16 or float16 rounds to a step of
    1/256 (1/2048) of the weight, while a LoRA update is far smaller (on SmolLM2 after 12 PPO
    iterations a layer's median ``|delta|`` is 0.18% of its median ``|W|``), so rounding mostly erases
    it: what a bfloat16 merged weight carries of that policy's update, ``bf16(W + delta) -
    bf16(W)``, is off by 97% of the update's norm (benchmarks/sampling_dtype.py ``--adapter``).
    Unmerged, the adapters' product is computed on its own and keeps its precision.

    Args:
        model: the model to sample from.
        sampling_dtype: the dtype the weights are sampled in (``rollout.sampling_dtype``); None for
            their own.
    """
    from peft import PeftModel
    from peft.tuners.lora.layer import Linear
    from peft.utils import AuxiliaryTrainingWrapper

    if not isinstance(model, PeftModel):
        return f"the model is a {type(model).__name__}, not a peft PeftModel"
    sharded = _sharding_wrappers()
    for name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, AuxiliaryTrainingWrapper):
            return f"{name} is a {kind} (modules_to_save or trainable tokens)"
        # FSDP holds each layer's weights in shards and swaps the full ones in at that layer's own
        # forward, over anything set here; DeepSpeed ZeRO-3 (ds_id below) gathers them the same way.
        if isinstance(module, sharded):
            return f"{name} is sharded by FSDP ({kind})"
    for name, layer in _lora_layers(model):
        if type(layer) is not Linear:
            return f"{name} is a {type(layer).__module__}.{type(layer).__name__}, not a plain LoRA Linear"
        if layer.merged:
            return f"{name} already has adapters {layer.merged_adapters} merged into its base weight"
        weight = layer.get_base_layer().weight
        if type(weight) is not nn.Parameter or not weight.is_floating_point() or hasattr(weight, "ds_id"):
            return (
                f"{name}'s base weight is a {type(weight).__name__} of {weight.dtype}, not a plain "
                "floating-point Parameter (quantised or sharded)"
            )
        for held in (weight.dtype, sampling_dtype or weight.dtype):
            if torch.finfo(held).eps > torch.finfo(torch.float32).eps:
                return (
                    f"{name}'s merged weight would be held in {held}, whose rounding (a step of "
                    f"{torch.finfo(held).eps:.2g} of the weight) erases the far smaller adapter update; "
                    "unmerged, the update keeps its precision"
                )
        for adapter in _active(layer):
            if adapter in layer.lora_variant:
                variant = type(layer.lora_variant[adapter]).__name__
                return f"{name} adapter {adapter!r} is a LoRA variant ({variant})"
            if layer.lora_bias.get(adapter, False):
                return f"{name} adapter {adapter!r} has lora_bias"
            dropout = layer.lora_dropout[adapter]
            if isinstance(dropout, nn.Dropout) and dropout.p > 0 and dropout.training:
                return f"{name} adapter {adapter!r} has active LoRA dropout (p={dropout.p})"
    return None


@contextlib.contextmanager
def merged_adapters(model: nn.Module) -> Iterator[None]:
    """Run ``model`` through merged LoRA weights inside the block; restore every Parameter on exit.

    For each LoRA layer the merged weight ``W + sum_a get_delta_weight(a)`` (peft's own delta: B @ A
    times the adapter's scaling, transposed for ``fan_in_fan_out``) is built as a new tensor, summed
    in at least float32 and rounded once to ``W``'s dtype, and registered on the base layer in place
    of ``W`` while peft's ``disable_adapter()`` makes each LoRA layer compute ``base_layer(x)`` alone.
    On exit, also by an exception, the original Parameter objects go back: ``W`` is never written to,
    so the base weights (the reference policy under LoRA) stay bit-identical. Swapping the Parameter
    object rather than its ``.data`` also keeps a weight tied to another module (an output layer
    tied to the embeddings) unmerged in that other module, as the adapted forward has it.

    Memory: while the block runs, one merged copy of every LoRA-adapted base weight exists next to
    the originals (SmolLM2-135M with r=16 on all seven projections: 106M entries, 0.4 GiB in fp32),
    plus one layer's delta at a time while they are built; all are freed on exit.

    Args:
        model: a peft ``PeftModel`` for which ``merge_blocker`` returns None.

    Raises:
        ValueError: ``merge_blocker`` names a reason the merged forward would not be exact.
    """
    reason = merge_blocker(model)
    if reason is not None:
        raise ValueError(f"cannot sample through merged LoRA weights: {reason}")
    swapped: list[tuple[nn.Module, nn.Parameter]] = []
    try:
        with torch.no_grad():
            for _, layer in _lora_layers(model):
                adapters = _active(layer)
                if not adapters:
                    continue
                base = layer.get_base_layer()
                original = base.weight
                dtype = torch.promote_types(original.dtype, torch.float32)
                merged = original.to(dtype)
                for adapter in adapters:
                    merged = merged + layer.get_delta_weight(adapter).to(dtype)
                swapped.append((base, original))
                base.weight = nn.Parameter(merged.to(original.dtype), requires_grad=False)
        with model.disable_adapter():
            yield
    finally:
        for base, original in reversed(swapped):
            base.weight = original


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every peft tuner layer's adapters (``lora_A``, ``lora_B``, ...): the small
    trained matrices that compute their product apart from the base weight and add it to its output."""
    found: list[nn.Parameter] = []
    for _, layer in _lora_layers(model):
        for attr in layer.adapter_layer_names:
            container = getattr(layer, attr, None)
            if isinstance(container, nn.Module):
                found.extend(container.parameters())
    return found


@contextlib.contextmanager
def cast_parameters(
    model: nn.Module, dtype: torch.dtype, keep: Iterable[nn.Parameter] = ()
) -> Iterator[None]:
    """Run ``model`` with every floating-point Parameter cast to ``dtype`` inside the block.

    For sampling in a lower precision than the model trains in (``rollout.sampling_dtype``), as
    frameworks that sample with an inference engine do: each Parameter is replaced, on the module
    that holds it, by a new ``dtype`` copy; on exit, also by an exception, the original objects go
    back, never written to. A Parameter shared by several modules (tied embeddings and output
    layer) gets one copy that all of them hold, so the tie survives inside the block. Buffers (say
    rotary frequencies) are left as they are: models that keep them in float32 compute with them in
    float32 on purpose. So are the Parameters in ``keep``: the policy keeps its LoRA adapters
    (``adapter_parameters``) in their own dtype and unmerged (``merge_blocker`` refuses a
    half-precision merged weight), so that the update they add keeps its precision; peft and
    SVD-LoRA cast a layer's input to the adapters' dtype and their output back.

    Memory: one ``dtype`` copy of every cast Parameter while the block runs (SmolLM2-135M in
    bfloat16: 0.27 GiB).
    """
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    copies: dict[int, nn.Parameter] = {}
    kept = {id(p) for p in keep}
    try:
        with torch.no_grad():
            for module in model.modules():
                for name, param in list(module._parameters.items()):
                    if (
                        param is None
                        or not param.is_floating_point()
                        or param.dtype == dtype
                        or id(param) in kept
                    ):
                        continue
                    copy = copies.get(id(param))
                    if copy is None:
                        copy = copies[id(param)] = nn.Parameter(param.detach().to(dtype), requires_grad=False)
                    swapped.append((module, name, param))
                    module._parameters[name] = copy
        yield
    finally:
        for module, name, param in reversed(swapped):
            module._parameters[name] = param
