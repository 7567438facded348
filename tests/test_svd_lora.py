"""The SVD-LoRA adapter (models/svd_lora.py) against an explicit per-sample weight, and on a tiny Llama:
generation with the KV cache, gradient checkpointing, the state dict."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_llama_config
from torch import nn

from pama_lit.models.svd_lora import SvdLora, SvdLoraLinear, _Slot


def _randomised(layer: SvdLoraLinear, seed: int = 0) -> SvdLoraLinear:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (layer.u, layer.v, layer.sigma, layer.pref_scale):
            p.copy_(torch.randn(p.shape, generator=g))
    return layer


def _oracle(layer: SvdLoraLinear, x: torch.Tensor, prefs: torch.Tensor) -> torch.Tensor:
    """Row by row: W_b = W + (alpha/r) U diag(s_b) V^T with s_b = [sigma, c * w_b], y_b = x_b W_b^T + bias."""
    W, bias = layer.base_layer.weight, layer.base_layer.bias
    rows = []
    for b in range(x.shape[0]):
        s = torch.cat([layer.sigma, prefs[b] * layer.pref_scale])
        W_b = W + layer.scaling * layer.u @ torch.diag(s) @ layer.v
        rows.append(x[b] @ W_b.T + bias)
    return torch.stack(rows)


@pytest.mark.parametrize("rank,K", [(3, 2), (1, 3)])
def test_the_adapted_layer_is_the_per_sample_weight_of_the_oracle(rank, K):
    torch.manual_seed(0)
    slot = _Slot()
    # float64: the comparison is of the algebra, not of float32 summation orders.
    layer = _randomised(SvdLoraLinear(nn.Linear(6, 5), rank, K, alpha=4.0, init="lora", slot=slot)).double()
    x = torch.randn(4, 7, 6, dtype=torch.float64, requires_grad=True)
    prefs = torch.distributions.Dirichlet(torch.ones(K)).sample((4,)).double()
    slot.preference = prefs
    y = layer(x)
    expected = _oracle(layer, x, prefs)
    torch.testing.assert_close(y, expected)
    # The gradients too, for every adapter tensor and the input.
    tensors = [x, layer.u, layer.v, layer.sigma, layer.pref_scale]
    got = torch.autograd.grad(y.square().sum(), tensors)
    want = torch.autograd.grad(expected.square().sum(), tensors)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # Each sample reads its own preference: another row's preference changes that row only.
    slot.preference = torch.cat([prefs[:1].flip(-1), prefs[1:]])
    y2 = layer(x)
    assert not torch.allclose(y2[0], y[0]) and torch.equal(y2[1:], y[1:])
    # One (K,) preference applies to every sample.
    slot.preference = prefs[2]
    torch.testing.assert_close(layer(x), _oracle(layer, x, prefs[2].expand(4, K)))
    # Disabled: the base layer alone.
    slot.enabled = False
    torch.testing.assert_close(layer(x), layer.base_layer(x))


@pytest.mark.parametrize("init", ["lora", "adalora"])
def test_both_inits_start_at_the_base_layer_and_can_learn(init):
    torch.manual_seed(0)
    slot = _Slot(preference=torch.tensor([[0.3, 0.7], [0.9, 0.1]]))
    layer = SvdLoraLinear(nn.Linear(6, 5), 2, 2, alpha=4.0, init=init, slot=slot)
    x = torch.randn(2, 3, 6)
    y = layer(x)
    assert torch.equal(y, layer.base_layer(x))
    grads = torch.autograd.grad(y.sum(), [layer.u, layer.v, layer.sigma, layer.pref_scale], allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_the_layer_refuses_a_missing_or_misshapen_preference():
    slot = _Slot()
    layer = SvdLoraLinear(nn.Linear(6, 5), 2, 2, alpha=4.0, init="lora", slot=slot)
    with pytest.raises(RuntimeError, match="without a preference"):
        layer(torch.randn(2, 6))
    slot.preference = torch.rand(3, 2)
    with pytest.raises(ValueError, match="3 preferences for an input of shape"):
        layer(torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="init='pissa': must be one of lora, adalora"):
        SvdLoraLinear(nn.Linear(6, 5), 2, 2, alpha=4.0, init="pissa", slot=slot)


def _tiny_lm(seed: int = 0):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    # Large weights: the random model's next token then depends on what it reads.
    lm = LlamaForCausalLM(tiny_llama_config(initializer_range=1.0)).eval().requires_grad_(False)
    return lm


def _adapted(lm, seed: int = 1, **kw) -> SvdLora:
    svd = SvdLora(lm, kw.get("targets", ["q_proj", "v_proj", "up_proj"]), rank=2, num_preferences=2, alpha=4.0,
                  init="lora")  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in svd.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return svd


def test_a_model_gets_adapters_where_named_and_refuses_names_it_lacks():
    lm = _tiny_lm()
    svd = _adapted(lm)
    assert sorted(svd.layers) == sorted(
        f"model.layers.{i}.{m}"
        for i in range(2)
        for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj")
    )
    assert all(isinstance(svd.layers[n], SvdLoraLinear) for n in svd.layers)
    assert [n for n, p in lm.named_parameters() if p.requires_grad] == [
        n for n, _ in lm.named_parameters() if n.endswith((".u", ".v", ".sigma", ".pref_scale"))
    ]
    with pytest.raises(ValueError, match=r"target_modules=\['c_attn'\]: no linear layer .* named .*q_proj"):
        SvdLora(_tiny_lm(), ["c_attn"], rank=2, num_preferences=2, alpha=4.0, init="lora")


def test_the_state_dict_round_trips_and_refuses_another_shape():
    source, target = (
        _adapted(_tiny_lm()),
        SvdLora(_tiny_lm(), ["q_proj", "v_proj", "up_proj"], 2, 2, 4.0, "lora"),
    )
    target.load_state_dict(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)
    other = SvdLora(_tiny_lm(), ["q_proj", "v_proj", "up_proj"], 3, 2, 4.0, "lora")
    with pytest.raises(ValueError, match="has shape .*svd_lora.rank"):
        other.load_state_dict(source.state_dict())
    with pytest.raises(ValueError, match="missing"):
        target.load_state_dict(
            {k: v for k, v in source.state_dict().items() if not k.startswith("model.layers.0")}
        )


def test_generation_reads_each_samples_own_preference_at_every_step():
    """Batched greedy decoding with the KV cache, one preference per row, equals decoding each row alone."""
    lm = _tiny_lm()
    svd = _adapted(lm)
    ids = torch.tensor([[5, 9, 3, 7], [5, 9, 3, 7]])
    prefs = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    with svd.preference(prefs):
        both = lm.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    for b in range(2):
        with svd.preference(prefs[b]):
            alone = lm.generate(ids[b : b + 1], attention_mask=torch.ones_like(ids[b : b + 1]), **kw)
        assert torch.equal(both[b], alone[0])
    assert not torch.equal(both[0], both[1])  # the same prompt, another preference: another response
    with svd.disabled():
        base = lm.generate(ids[:1], attention_mask=torch.ones_like(ids[:1]), **kw)
    assert not torch.equal(base[0], both[0])


def test_gradient_checkpointing_recomputes_at_the_forwards_preference():
    """The recomputation runs at backward time, after the block set another preference (or none)."""
    prefs = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    ids = torch.tensor([[5, 9, 3, 7, 2], [4, 4, 8, 1, 6]])

    def grads(checkpointing: bool) -> list[torch.Tensor]:
        lm = _tiny_lm()
        svd = _adapted(lm)
        if checkpointing:
            lm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={
                    "use_reentrant": False,
                    "context_fn": svd.checkpoint_context_fn,
                }
            )
        lm.train()
        with svd.preference(prefs):
            loss = lm(input_ids=ids, labels=ids, use_cache=False).loss
        params = list(svd.parameters())
        with svd.preference(prefs.flip(-1)):  # set at backward time: must not reach the recomputation
            # Twice over the kept graph (as the per-objective gradients of the diagnostics do): each
            # backward recomputes the checkpointed forward.
            first = torch.autograd.grad(loss, params, retain_graph=True)
            second = torch.autograd.grad(2 * loss, params)
        return [*first, *second]

    plain, checkpointed = grads(False), grads(True)
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)
