"""MGDA-UB and MGDA baselines: the min-norm math against oracles, and one minibatch on a tiny Llama."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from tiny import tiny_llama_config
from transformers import LlamaForCausalLM

from pama_lit.core import ops
from pama_lit.core.losses import kl_loss, policy_loss, value_loss
from pama_lit.core.mgda import (
    combine_gradients,
    flatten_gradients,
    gram_matrix,
    per_objective_ppo_losses,
    solve_min_norm,
    write_gradients,
)
from pama_lit.models.policy import PolicyWithValueHeads
from pama_lit.run.config import ConfigError, validate_config
from pama_lit.training.mgda_step import mgda_backward
from pama_lit.training.rollout import Rollout
from pama_lit.training.timing import PhaseTimer

PPO = {"clip_coef": 0.2, "vf_clip": 0.2, "vf_coef": 0.1}


def simplex_grid(k: int, steps: int) -> torch.Tensor:
    points = [c for c in itertools.product(range(steps + 1), repeat=k) if sum(c) == steps]
    return torch.tensor(points, dtype=torch.float64) / steps


# ------------------------------------------------------------------------------------ pure math
def test_per_objective_losses_match_one_policy_and_value_loss_per_objective():
    torch.manual_seed(0)
    b, t, k = 3, 5, 3
    logprobs, old = torch.randn(b, t), torch.randn(b, t)
    adv, values, old_values, returns = (torch.randn(b, t, k) for _ in range(4))
    mask = torch.rand(b, t) > 0.3
    pg, vf, stats = per_objective_ppo_losses(logprobs, old, adv, values, old_values, returns, mask, 0.2, 0.3)
    for i in range(k):
        expected_pg, expected_stats = policy_loss(logprobs, old, adv[..., i], mask, 0.2)
        expected_vf, _ = value_loss(
            values[..., i : i + 1], old_values[..., i : i + 1], returns[..., i : i + 1], mask, 0.3
        )
        torch.testing.assert_close(pg[i], expected_pg)
        torch.testing.assert_close(vf[i], expected_vf)
        torch.testing.assert_close(stats["clipfrac"][i], expected_stats["clipfrac"])
    torch.testing.assert_close(stats["approx_kl"], expected_stats["approx_kl"])


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(3))
def test_min_norm_weights_lie_on_the_simplex_and_beat_a_grid(k, seed):
    gen = torch.Generator().manual_seed(seed)
    grads = torch.randn(k, 7, generator=gen, dtype=torch.float64)
    preference = torch.rand(k, generator=gen, dtype=torch.float64) + 0.2
    preference /= preference.sum()
    sol = solve_min_norm(gram_matrix(grads), preference)
    assert (sol.weights >= 0).all()
    torch.testing.assert_close(sol.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(sol.coefficients, sol.weights / (k * preference))
    direction = combine_gradients(grads, sol.coefficients)
    torch.testing.assert_close(sol.norm, direction.norm())
    scaled = grads / (k * preference)[:, None]
    grid_best = (simplex_grid(k, 12) @ scaled).norm(dim=-1).min()
    assert sol.norm <= grid_best + 1e-9


def test_combined_gradient_is_the_weighted_sum_and_writes_back_in_order():
    torch.manual_seed(1)
    grads = torch.randn(3, 10)
    coef = torch.tensor([0.2, 0.5, 0.3])
    torch.testing.assert_close(combine_gradients(grads, coef), sum(coef[i] * grads[i] for i in range(3)))
    params = [torch.zeros(2, 3, requires_grad=True), torch.zeros(4, requires_grad=True)]
    flat = torch.arange(10.0)
    write_gradients(params, flat)
    torch.testing.assert_close(flatten_gradients([p.grad for p in params], params), flat)
    with pytest.raises(ValueError, match="entries"):
        write_gradients(params, torch.zeros(11))


@pytest.mark.parametrize("scale,expected", [(1.0, [0.5, 0.5]), (2.0, [2 / 3, 1 / 3])])
def test_opposed_objectives_give_the_zero_direction(scale, expected):
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    grads = torch.stack([g, -scale * g])
    sol = solve_min_norm(gram_matrix(grads))
    torch.testing.assert_close(sol.weights, torch.tensor(expected, dtype=torch.float64))
    assert sol.norm < 1e-12
    assert combine_gradients(grads, sol.coefficients).abs().max() < 1e-12


@pytest.mark.parametrize("preference", [None, [0.5, 0.5], [0.7, 0.3], [0.2, 0.8]])
def test_conflicting_objectives_get_a_balanced_direction(preference):
    """<d, g_i> = K w_i ||d||^2 for both: each objective improves in proportion to its weight."""
    grads = torch.tensor([[1.0, 0.2], [-0.6, 1.0]], dtype=torch.float64)
    w = torch.tensor(preference or [0.5, 0.5], dtype=torch.float64)
    sol = solve_min_norm(gram_matrix(grads), None if preference is None else w)
    d = combine_gradients(grads, sol.coefficients)
    assert (sol.weights > 0).all()
    torch.testing.assert_close(grads @ d, 2 * w * d.square().sum())


def test_identical_objectives_reduce_to_the_single_gradient():
    g = torch.randn(6, dtype=torch.float64)
    sol = solve_min_norm(gram_matrix(torch.stack([g, g, g])))
    torch.testing.assert_close(combine_gradients(torch.stack([g, g, g]), sol.coefficients), g)
    torch.testing.assert_close(sol.norm, g.norm())


# ------------------------------------------------------------------------- one minibatch, tiny Llama
def tiny_policy(num_heads: int, seed: int = 0) -> PolicyWithValueHeads:
    config = tiny_llama_config(
        vocab_size=40, hidden_size=16, intermediate_size=32, max_position_embeddings=32
    )
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(config)
    lora = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}
    policy = PolicyWithValueHeads(lm, num_value_heads=num_heads, lora=lora).double()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:  # LoRA's B starts at zero: give every adapter a gradient
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        policy.value_head.weight.copy_(policy.value_head.weight[:1].expand_as(policy.value_head.weight))
        policy.value_head.bias.fill_(0.05)
    return policy


def tiny_rollout(policy: PolicyWithValueHeads, seed: int = 0) -> Rollout:
    gen = torch.Generator().manual_seed(seed)
    b, tq, t = 4, 3, 5
    queries = torch.randint(0, 40, (b, tq), generator=gen)
    responses = torch.randint(0, 40, (b, t), generator=gen)
    query_mask = torch.ones(b, tq, dtype=torch.bool)
    query_mask[0, 0] = False
    response_mask = torch.ones(b, t, dtype=torch.bool)
    response_mask[1, 3:] = False
    input_ids, attention_mask = torch.cat([queries, responses], 1), torch.cat([query_mask, response_mask], 1)
    with torch.no_grad():
        logits, values = policy(input_ids, attention_mask, t)
        logprobs = ops.logprobs_from_logits(logits, responses)
    m = response_mask
    return Rollout(input_ids, attention_mask, responses, m, logprobs * m, logprobs * m,
                   values * m.unsqueeze(-1), ["p"] * b, ["r"] * b)  # fmt: skip


def per_objective_gradients(policy, rollout, advantages, returns, params):
    """Oracle: a fresh forward and K independent gradients of L_i = pg_i + vf_coef * vf_i."""
    logits, values = policy(rollout.input_ids, rollout.attention_mask, rollout.num_response)
    logprobs = ops.logprobs_from_logits(logits, rollout.responses)
    pg, vf, _ = per_objective_ppo_losses(logprobs, rollout.logprobs, advantages, values, rollout.values,
                                         returns, rollout.response_mask, PPO["clip_coef"], PPO["vf_clip"])  # fmt: skip
    losses = pg + PPO["vf_coef"] * vf
    return [flatten_gradients(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params)
            for loss in losses]  # fmt: skip


def run_mgda(policy, rollout, advantages, returns, space, preference=None, kl_term=None):
    k = advantages.shape[-1]
    pref = (
        torch.full((k,), 1 / k, dtype=torch.float64)
        if preference is None
        else torch.tensor(preference).double()
    )
    policy.zero_grad(set_to_none=True)
    idx = torch.arange(rollout.responses.shape[0])
    timer = PhaseTimer()
    loss, stats = mgda_backward(
        policy,
        lambda x: x.backward(),
        space,
        rollout,
        advantages,
        returns,
        idx,
        pref,
        PPO,
        timer,
        kl_term=kl_term,
    )
    assert {"objective_grads", "pareto_solve"} <= set(timer.seconds)
    return loss, stats


def shared_and_heads(policy):
    shared = [p for p in policy.lm.parameters() if p.requires_grad]
    return shared, list(policy.value_head.parameters())


@pytest.mark.parametrize("space", ["representation", "parameters"])
@pytest.mark.parametrize("preference", [None, [0.3, 0.5, 0.2]])
def test_update_is_the_weighted_sum_of_per_objective_gradients(space, preference):
    policy = tiny_policy(3)
    rollout = tiny_rollout(policy)
    gen = torch.Generator().manual_seed(3)
    advantages = torch.randn(4, 5, 3, generator=gen, dtype=torch.float64)
    returns = torch.randn(4, 5, 3, generator=gen, dtype=torch.float64)
    loss, stats = run_mgda(policy, rollout, advantages, returns, space, preference)

    weights = stats["pareto/weight"]
    assert weights.shape == (3,) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=weights.dtype))
    w = (
        torch.full((3,), 1 / 3, dtype=torch.float64)
        if preference is None
        else torch.tensor(preference).double()
    )
    coef = weights / (3 * w)

    shared, heads = shared_and_heads(policy)
    got_shared = flatten_gradients([p.grad for p in shared], shared)
    got_heads = flatten_gradients([p.grad for p in heads], heads)
    per_shared = per_objective_gradients(policy, rollout, advantages, returns, shared)
    per_heads = per_objective_gradients(policy, rollout, advantages, returns, heads)
    torch.testing.assert_close(got_shared, sum(c * g for c, g in zip(coef, per_shared, strict=True)))
    # The value heads are task-specific: each takes its own objective's gradient, unweighted.
    torch.testing.assert_close(got_heads, sum(per_heads))
    assert stats["pareto/min_norm"] >= 0 and loss.dim() == 0
    if space == "parameters":  # MGDA's min-norm value is the norm of the shared update itself
        torch.testing.assert_close(stats["pareto/min_norm"], got_shared.norm())


@pytest.mark.parametrize("space", ["representation", "parameters"])
def test_a_kl_loss_term_adds_its_own_gradient_outside_the_min_norm_solve(space):
    """ppo.kl.placement=loss: the update is MGDA's combination plus the KL term's gradient, same weights."""
    import dataclasses

    policy = tiny_policy(2)
    rollout = tiny_rollout(policy)
    noise = 0.3 * torch.randn(
        rollout.logprobs.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    rollout = dataclasses.replace(rollout, ref_logprobs=(rollout.logprobs + noise) * rollout.response_mask)
    gen = torch.Generator().manual_seed(3)
    advantages = torch.randn(4, 5, 2, generator=gen, dtype=torch.float64)
    returns = torch.randn(4, 5, 2, generator=gen, dtype=torch.float64)
    shared, heads = shared_and_heads(policy)

    def term(logprobs, ref_logprobs, mask):
        return 0.7 * kl_loss(logprobs, ref_logprobs, mask, "k3")

    loss0, stats0 = run_mgda(policy, rollout, advantages, returns, space)
    plain = flatten_gradients([p.grad for p in shared], shared)
    loss1, stats1 = run_mgda(policy, rollout, advantages, returns, space, kl_term=term)
    with_kl = flatten_gradients([p.grad for p in shared], shared)

    logits, _ = policy(rollout.input_ids, rollout.attention_mask, rollout.num_response)
    kl = term(
        ops.logprobs_from_logits(logits, rollout.responses), rollout.ref_logprobs, rollout.response_mask
    )
    kl_grad = flatten_gradients(torch.autograd.grad(kl, shared), shared)
    assert kl_grad.norm() > 1e-3
    torch.testing.assert_close(stats1["pareto/weight"], stats0["pareto/weight"])  # not in the solve
    torch.testing.assert_close(with_kl, plain + kl_grad)
    torch.testing.assert_close(stats1["loss/kl"], kl.detach())
    torch.testing.assert_close(loss1, loss0 + kl.detach())
    assert "loss/kl" not in stats0


@pytest.mark.parametrize("space", ["representation", "parameters"])
def test_opposed_objectives_leave_the_shared_network_still(space):
    policy = tiny_policy(2)
    rollout = tiny_rollout(policy)
    adv = torch.randn(4, 5, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    advantages = torch.cat([adv, -adv], -1)
    returns = rollout.values.clone()  # zero value loss: only the opposed surrogates remain
    _, stats = run_mgda(policy, rollout, advantages, returns, space)
    torch.testing.assert_close(stats["pareto/weight"], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert stats["pareto/min_norm"] < 1e-10
    shared, _ = shared_and_heads(policy)
    assert max(p.grad.abs().max() for p in shared) < 1e-10


@pytest.mark.parametrize("space", ["representation", "parameters"])
def test_identical_objectives_reduce_to_single_objective_ppo(space):
    single, double = tiny_policy(1), tiny_policy(2)
    rollout2 = tiny_rollout(double)
    rollout1 = tiny_rollout(single)
    gen = torch.Generator().manual_seed(7)
    adv = torch.randn(4, 5, 1, generator=gen, dtype=torch.float64)
    ret = torch.randn(4, 5, 1, generator=gen, dtype=torch.float64)
    run_mgda(double, rollout2, adv.repeat(1, 1, 2), ret.repeat(1, 1, 2), space)

    # Single-objective PPO: the module's loss for one stream, one backward.
    logits, values = single(rollout1.input_ids, rollout1.attention_mask, rollout1.num_response)
    logprobs = ops.logprobs_from_logits(logits, rollout1.responses)
    mask = rollout1.response_mask
    pg, _ = policy_loss(logprobs, rollout1.logprobs, adv[..., 0], mask, PPO["clip_coef"])
    vf, _ = value_loss(values, rollout1.values, ret, mask, PPO["vf_clip"])
    single.zero_grad(set_to_none=True)
    (pg + PPO["vf_coef"] * vf).backward()

    (s1, h1), (s2, h2) = shared_and_heads(single), shared_and_heads(double)
    for a, b in zip(s1, s2, strict=True):
        torch.testing.assert_close(b.grad, a.grad)
    for a, b in zip(h1, h2, strict=True):  # every head row moves as the single head does
        torch.testing.assert_close(b.grad, a.grad.expand_as(b.grad))


def test_representation_gradients_are_taken_at_the_tensor_the_heads_read():
    policy = tiny_policy(2)
    rollout = tiny_rollout(policy)
    logits, values, hidden = policy(
        rollout.input_ids, rollout.attention_mask, rollout.num_response, return_hidden=True
    )
    lm_head = policy.lm.get_output_embeddings()
    torch.testing.assert_close(lm_head(hidden[:, -(rollout.num_response + 1) : -1]), logits)
    grad = torch.autograd.grad(values.sum(), hidden)[0]
    assert grad[:, : -(rollout.num_response + 1)].abs().max() == 0 and grad.abs().max() > 0


def test_unknown_gradient_space_is_refused():
    policy = tiny_policy(2)
    rollout = tiny_rollout(policy)
    with pytest.raises(ValueError, match="gradient space"):
        run_mgda(policy, rollout, torch.zeros(4, 5, 2), torch.zeros(4, 5, 2), "weights")


# ------------------------------------------------------------------------------ configs, end to end
# tiny_cfg (conftest): the tiny model, 2 iterations of 4 prompts, 6 new tokens, CSV logs.
@pytest.mark.parametrize(
    ("algorithm", "module_class"),
    [("mgda_ub", "MgdaModule"), ("mgda", "MgdaModule"), ("pama", "PamaModule"), ("morlhf", "PamaModule")],
)
def test_each_algorithm_trains_with_the_module_whose_step_it_implements(tiny_cfg, algorithm, module_class):
    """Gradient combiners have no advantage combine; the module that would call one refuses them."""
    from pama_lit.rewards import build_rewards
    from pama_lit.run.schema import (
        AlgorithmConfig,
        DiagnosticsConfig,
        EvalConfig,
        ModelConfig,
        PPOConfig,
        RolloutConfig,
        typed,
    )  # fmt: skip
    from pama_lit.run.train import build_module
    from pama_lit.training.mgda_module import MgdaModule
    from pama_lit.training.module import PamaModule

    with open_dict(tiny_cfg):
        tiny_cfg.algorithm.name = algorithm
    rewards = build_rewards(tiny_cfg.objective.rewards)
    module = build_module(tiny_cfg, rewards)
    assert type(module).__name__ == module_class
    assert hasattr(module.combiner, "combine") == (module_class == "PamaModule")
    other = PamaModule if module_class == "MgdaModule" else MgdaModule
    with pytest.raises(ValueError, match=f"algorithm={algorithm} does not train with {other.__name__}"):
        other(
            model_loader=None, rewards=rewards, algorithm=typed(AlgorithmConfig, tiny_cfg.algorithm),
            ppo=typed(PPOConfig, tiny_cfg.ppo), rollout=typed(RolloutConfig, tiny_cfg.rollout),
            model=typed(ModelConfig, tiny_cfg.model), optimizer=None, evaluation=typed(EvalConfig, tiny_cfg.eval),
            rewards_on_error="raise", diagnostics=typed(DiagnosticsConfig, tiny_cfg.diagnostics),
        )  # fmt: skip


@pytest.mark.parametrize("algorithm", ["mgda", "mgda_ub"])
def test_gradient_baselines_refuse_16_mixed(tiny_cfg, algorithm):
    """Both write gradients past 16-mixed's scaler (mgda the shared ones, mgda_ub the value heads')."""
    with open_dict(tiny_cfg):
        tiny_cfg.algorithm.name = algorithm
        tiny_cfg.trainer.precision = "16-mixed"
    with pytest.raises(ConfigError, match=f"algorithm={algorithm} writes unscaled gradients.*bf16-mixed"):
        validate_config(tiny_cfg)


@pytest.mark.parametrize("algorithm", ["mgda_ub", "mgda"])
def test_gradient_baselines_train_and_log_their_weights(tiny_cfg, algorithm):
    import csv

    from pama_lit.run.train import train

    with open_dict(tiny_cfg):
        tiny_cfg.algorithm.name = algorithm
        tiny_cfg.algorithm.noon = False
    train(tiny_cfg)
    (metrics,) = Path(tiny_cfg.paths.output_dir).rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    keys = set(rows[0])
    objectives = list(tiny_cfg.objective.rewards)
    expected = {"train/pareto/min_norm", "train/time/pareto_solve", "train/time/objective_grads"}
    expected |= {f"train/pareto/weight/{name}" for name in objectives}
    assert expected <= keys
    weights = [
        [float(r[f"train/pareto/weight/{n}"]) for n in objectives]
        for r in rows
        if r.get("train/pareto/min_norm")
    ]
    assert weights and all(abs(sum(w) - 1) < 1e-5 and min(w) >= 0 for w in weights)


@pytest.mark.parametrize(
    "trainer",
    [
        {"devices": 2},
        {"devices": "0,1"},
        {"devices": [0, 1]},
        {"num_nodes": 2},
        {"strategy": "ddp_spawn"},
        {"strategy": {"_target_": "lightning.pytorch.strategies.DDPStrategy"}},
    ],
)
def test_mgda_refuses_several_processes_before_loading_a_model(tiny_cfg, trainer):
    with open_dict(tiny_cfg):
        tiny_cfg.algorithm.name = "mgda"
        for key, value in trainer.items():
            tiny_cfg.trainer[key] = value
    with pytest.raises(ConfigError, match="one process only .* use algorithm=mgda_ub"):
        validate_config(tiny_cfg)
    with open_dict(tiny_cfg):
        tiny_cfg.algorithm.name = "mgda_ub"
    validate_config(tiny_cfg)  # mgda_ub all-reduces its Gram matrix


def test_mgda_accepts_one_process(tiny_cfg):
    with open_dict(tiny_cfg):
        tiny_cfg.algorithm.name = "mgda"
        tiny_cfg.trainer.devices = "auto"
    validate_config(tiny_cfg)
