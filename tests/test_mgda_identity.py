"""At one token, PAMA's closed form is exactly MGDA's min-norm direction over all parameters.

Every objective's loss at a token is L_i = -A_i * log pi(y), so g_i = A_i * g with g = -grad log pi(y):
the gradients are collinear and the min-norm point of their convex hull is s*(A) * g. This builds a
tiny randomly initialised Llama, computes the K full parameter gradients, solves the min-norm
problem on their Gram matrix, and compares with one backward pass of the PAMA loss.
"""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_llama_config
from transformers import LlamaForCausalLM

from pama_lit.core.pareto import combine_pama_token, min_norm_weights


@pytest.fixture(scope="module")
def tiny_llama() -> LlamaForCausalLM:
    config = tiny_llama_config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, max_position_embeddings=16
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).double().eval()


def response_logprob(model: LlamaForCausalLM) -> torch.Tensor:
    """log pi(y | x) of one response token y after a three-token prompt x, shape (1,1)."""
    input_ids = torch.tensor([[3, 17, 8, 21]])
    logits = model(input_ids=input_ids).logits
    return logits[:, -2].log_softmax(-1)[:, input_ids[0, -1]].unsqueeze(-1)


def flat_grad(loss: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


@pytest.mark.parametrize(
    "advantages,preference",
    [
        ([0.7, 1.9], None),
        ([2.0, 0.3, 1.1], None),
        ([1.2, 0.0], None),  # one objective sees nothing to gain: the min-norm point is 0
        ([0.5, 0.0, 2.0], None),
        ([0.9, 1.4, 0.6], [0.5, 0.3, 0.2]),  # with a preference, the scaled gradients
        ([1.5, -0.5], None),  # mixed signs without Noon: 0 lies between the two gradients
    ],
)
def test_pama_gradient_is_the_min_norm_point_of_the_objective_gradients(tiny_llama, advantages, preference):
    k = len(advantages)
    adv = torch.tensor(advantages, dtype=torch.float64)
    w = (
        torch.full((k,), 1 / k, dtype=torch.float64)
        if preference is None
        else torch.tensor(preference, dtype=torch.float64)
    )
    scaled = adv / (k * w)

    grads = torch.stack(
        [flat_grad(-scaled[i] * response_logprob(tiny_llama).sum(), tiny_llama) for i in range(k)]
    )
    assert grads.shape[1] > 1000
    weights, value = min_norm_weights(grads @ grads.T)
    min_norm_point = weights @ grads

    # Brute force over a simplex grid confirms the solver's optimum.
    grid = torch.cartesian_prod(*[torch.linspace(0, 1, 41, dtype=torch.float64)] * k)
    grid = grid[(grid.sum(-1) - 1).abs() < 1e-9]
    grid_norms = (grid @ grads).norm(dim=-1)
    assert min_norm_point.norm() <= grid_norms.min() + 1e-9
    torch.testing.assert_close(value, min_norm_point.norm() ** 2)

    combined, _ = combine_pama_token(adv.reshape(1, 1, k), w)
    pama_grad = flat_grad(-(combined * response_logprob(tiny_llama)).sum(), tiny_llama)
    # Llama's RMSNorm and attention softmax run in float32 even in a float64 model, so the K backward
    # passes are collinear only to about 1e-7 relative; the tolerance is set from that, not from float64.
    scale = float(grads.abs().max())
    torch.testing.assert_close(pama_grad, min_norm_point, atol=1e-6 * scale, rtol=1e-6)
    if (adv <= 0).any():
        assert pama_grad.abs().max() == 0
