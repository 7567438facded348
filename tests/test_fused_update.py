"""One epoch of one minibatch reuses the rollout's forward: the update must equal the unfused one."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import compose_config
from torch.utils.data import DataLoader

from pama_lit.rewards import LengthReward
from pama_lit.run.train import build_module
from pama_lit.training.module import PamaModule

PROMPTS = ["Tell me a joke.", "What is the capital of France?", "Write a haiku.", "Why is the sky blue?"]


def tiny_module(algorithm: str, epochs: int, minibatches: int, extra: tuple[str, ...] = ()) -> PamaModule:
    cfg = compose_config(
        [
            "model=tiny",
            f"algorithm={algorithm}",
            f"ppo.epochs={epochs}",
            f"ppo.num_minibatches={minibatches}",
            "rollout.batch_size=4",
            "rollout.max_new_tokens=6",
            "optimizer.lr=0.01",
            # A trained critic: the fused forward's values must give the same value update too, and the
            # tied length scores of a first iteration (KL 0) leave the policy loss alone exactly 0.
            "ppo.vf_coef=0.1",
            *extra,
        ]
    )
    return build_module(cfg, {"short": LengthReward(4.0, 0.0, 1.5), "long": LengthReward(2.0, 0.0, 1.0)})


class KeepOutputs(L.Callback):
    """Keeps what ``training_step`` returned, as the callbacks see it."""

    def __init__(self) -> None:
        self.outputs: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.outputs.append(outputs)


def train_one_iteration(module: PamaModule, *callbacks: L.Callback) -> dict[str, torch.Tensor]:
    loader = DataLoader(PROMPTS, batch_size=4, collate_fn=lambda b: {"prompt": list(b)})
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    torch.manual_seed(0)
    trainer.fit(module, train_dataloaders=loader)
    return {k: v.detach().clone() for k, v in module.policy.trainable_state_dict().items()}


@pytest.mark.parametrize("algorithm", ["pama", "morlhf"])
def test_fused_forward_gives_the_same_update(algorithm):
    fused = tiny_module(algorithm, epochs=1, minibatches=1)
    unfused = tiny_module(algorithm, epochs=1, minibatches=1)
    unfused.fused_forward = False
    assert fused.fused_forward
    fused.configure_model()
    unfused.configure_model()
    unfused.policy.load_state_dict(fused.policy.state_dict())  # the same LoRA initialisation
    before = {k: v.detach().clone() for k, v in fused.policy.trainable_state_dict().items()}
    kept = KeepOutputs()
    after_fused = train_one_iteration(fused, kept)
    after_unfused = train_one_iteration(unfused)
    assert any(not torch.equal(before[k], after_fused[k]) for k in before), "the update moved nothing"
    for key in after_fused:
        torch.testing.assert_close(after_fused[key], after_unfused[key], rtol=1e-5, atol=1e-6)
    # No graph left behind: what the step hands on holds no tensor that still requires grad.
    (outputs,) = kept.outputs
    tensors = [outputs["scores"], *outputs["rollout"].tensors().values()]
    assert not any(t.requires_grad for t in tensors)


def count_forwards(module: PamaModule) -> tuple[int, int]:
    """(no-grad, with-grad) forwards of the policy over one iteration, leaving out generate's decoding
    steps: the rollout's reference and pi_old forwards, and the update's."""
    module.configure_model()
    calls, decoding = [], []
    module.policy.lm.register_forward_pre_hook(
        lambda mod, args: None if decoding else calls.append(torch.is_grad_enabled())
    )
    generate = module.policy.generate

    def marked_generate(*args, **kwargs):
        decoding.append(True)
        try:
            return generate(*args, **kwargs)
        finally:
            decoding.clear()

    module.policy.generate = marked_generate
    train_one_iteration(module)
    return calls.count(False), calls.count(True)


@pytest.mark.parametrize("algorithm", ["pama", "morlhf"])
def test_fusion_saves_exactly_the_updates_forward(algorithm):
    extra = ("diagnostics.every_n_iterations=0",)
    fused = tiny_module(algorithm, 1, 1, extra=extra)
    unfused = tiny_module(algorithm, 1, 1, extra=extra)
    unfused.fused_forward = False
    no_grad_fused, grad_fused = count_forwards(fused)
    no_grad_unfused, grad_unfused = count_forwards(unfused)
    # Fused: pi_old's forward runs with grad and the update differentiates it instead of its own.
    assert (no_grad_fused, grad_fused) == (no_grad_unfused - 1, grad_unfused) == (no_grad_unfused - 1, 1)


@pytest.mark.parametrize(
    "algorithm,epochs,minibatches", [("pama", 2, 1), ("pama", 1, 2), ("mgda_ub", 1, 1), ("mgda", 1, 1)]
)
def test_no_fusion_beyond_one_epoch_of_one_minibatch_or_for_gradient_baselines(
    algorithm, epochs, minibatches
):
    """Several minibatches or epochs need pi_old fixed apart from the graph; mgda_ub needs the last
    hidden states, which the rollout's forward does not keep: each update runs its own forwards."""
    extra = ("diagnostics.every_n_iterations=0",)
    reference = tiny_module("pama", 1, 1, extra=extra)
    reference.fused_forward = False
    no_grad_rollout, _ = count_forwards(reference)  # the rollout's no-grad forwards, unfused
    no_grad, grad = count_forwards(tiny_module(algorithm, epochs, minibatches, extra=extra))
    assert no_grad == no_grad_rollout
    assert grad >= epochs * minibatches


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_checkpointing_recomputes_the_layers_in_the_update(checkpointing):
    """from_pretrained returns eval mode, where Hugging Face skips checkpointing: the module must train."""
    # Diagnostics off: their own forward with grad would count too.
    extra = (f"model.gradient_checkpointing={str(checkpointing).lower()}", "diagnostics.every_n_iterations=0")
    module = tiny_module("pama", 1, 1, extra=extra)
    load = module.model_loader

    def load_like_from_pretrained():
        loaded = load()
        loaded.model.eval()
        return loaded

    module.model_loader = load_like_from_pretrained
    module.configure_model()
    assert all(m.training for m in module.policy.modules())
    layers = [m for m in module.policy.lm.modules() if type(m).__name__.endswith("DecoderLayer")]
    assert layers
    calls = []
    # Transformers checkpoints a layer's forward inside its hooks: count a submodule's calls instead,
    # with a pre-hook, since the recomputation stops once it has what the backward needs.
    layers[0].input_layernorm.register_forward_pre_hook(
        lambda mod, args: calls.append(torch.is_grad_enabled())
    )
    train_one_iteration(module)
    # One forward with grad (the fused rollout forward), and its recomputation in the backward.
    assert calls.count(True) == (2 if checkpointing else 1)
