"""ppo.value_head_lr: the value heads' own learning rate (a separate Adam parameter group)."""

from __future__ import annotations

import pytest
from conftest import compose_config
from tiny import TINY

from pama_lit.run.config import validate_config
from pama_lit.run.train import train
from pama_lit.training.module import PamaModule

LR = 1e-4


def _head_bias_change(tmp_path, monkeypatch, extra: list[str]) -> tuple[float, list[float]]:
    """Max |change| of the value heads' bias over one tiny iteration, and the optimizer groups' lrs."""
    seen = {}
    original = PamaModule.configure_optimizers

    def spy(self):
        seen["before"] = self.policy.value_head.bias.detach().clone()
        seen["module"] = self
        optimizer = original(self)
        seen["lrs"] = [group["lr"] for group in optimizer.param_groups]
        return optimizer

    monkeypatch.setattr(PamaModule, "configure_optimizers", spy)
    cfg = compose_config(
        [*TINY, f"optimizer.lr={LR}", "ppo.vf_coef=0.1", "ppo.vf_clip=100", *extra],
        output_dir=tmp_path / "run",
    )
    train(cfg)
    after = seen["module"].policy.value_head.bias.detach()
    return (after - seen["before"]).abs().max().item(), seen["lrs"]


def test_value_head_lr_moves_the_heads_at_their_own_rate(tmp_path, monkeypatch):
    head_lr = 1e-2
    # debug=tiny: 1 iteration x ppo.epochs x num_minibatches Adam steps; each moves a parameter by about lr.
    steps = 4
    shared, shared_lrs = _head_bias_change(tmp_path / "a", monkeypatch, [])
    own, own_lrs = _head_bias_change(tmp_path / "b", monkeypatch, [f"ppo.value_head_lr={head_lr}"])
    assert shared_lrs == [LR]
    assert own_lrs == [LR, head_lr]
    assert shared <= steps * LR * 1.01
    assert own > 10 * steps * LR, (own, shared)


def test_value_head_lr_is_checked():
    with pytest.raises(ValueError, match="value_head_lr"):
        validate_config(compose_config([*TINY, "ppo.value_head_lr=-1"]))
