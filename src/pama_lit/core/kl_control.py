"""KL coefficient controllers with TRL's semantics: fixed, or adaptive towards a target KL."""

from __future__ import annotations

import math

KL_CONTROLLERS = ("fixed", "adaptive")
# Where beta * KL acts: "reward" (-beta * KL_t on every objective's per-token reward, TRL's PPO) or
# "loss" (beta * KL added to the policy loss, outside the advantages: GRPO, verl's use_kl_loss).
KL_PLACEMENTS = ("reward", "loss")


def _finite(x: object) -> float | None:
    """``x`` as a finite float, or None if it is not one."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _check_coef(coef: object) -> float:
    value = _finite(coef)
    if value is None or value < 0:
        raise ValueError(f"KL coefficient must be a finite number >= 0, got {coef!r}")
    return value


class KLController:
    """The interface: a coefficient ``value``, updated once per batch, saved as plain floats.

    Attributes:
        value: the KL coefficient beta.
    """

    def __init__(self, coef: float) -> None:
        self.value = _check_coef(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Update ``value`` after a batch; the base class keeps it."""

    def state_dict(self) -> dict[str, float]:
        """The coefficient, as a plain float."""
        return {"value": float(self.value)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the coefficient saved by ``state_dict``."""
        self.value = _check_coef(state["value"])


class FixedKLController(KLController):
    """A constant KL coefficient (TRL's ``FixedKLController``); ``update`` leaves it unchanged.

    Args:
        coef: the KL coefficient beta (TRL's ``init_kl_coef``), >= 0.
    """


class AdaptiveKLController(KLController):
    """Adaptive KL coefficient of Ziegler et al. (2019), as TRL implements it.

    After each batch: e = clip(current_kl / target - 1, -0.2, 0.2); value *= 1 + e * n_steps / horizon.

    Args:
        init_coef: initial coefficient (TRL's ``init_kl_coef``).
        target: the KL the controller steers towards (TRL's ``target``), > 0.
        horizon: how many samples it takes to move the coefficient by a factor of about e^0.2 (TRL's ``horizon``).

    Attributes:
        value: the current KL coefficient beta.
    """

    def __init__(self, init_coef: float, target: float, horizon: float = 10000) -> None:
        super().__init__(init_coef)
        if (_finite(target) or 0) <= 0:
            raise ValueError(
                f"adaptive KL control needs a positive finite target KL, got {target!r}; "
                "set one, or use the 'fixed' controller"
            )
        if (_finite(horizon) or 0) <= 0:
            raise ValueError(f"adaptive KL control needs a positive finite horizon, got {horizon!r}")
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move the coefficient towards the target.

        Args:
            current_kl: the KL measured on the last batch (mean over samples of the summed per-token KL).
            n_steps: samples in that batch.
        """
        proportional_error = min(max(float(current_kl) / self.target - 1, -0.2), 0.2)
        self.value *= 1 + proportional_error * n_steps / self.horizon


def build_kl_controller(
    kind: str, init_coef: float, target: float | None = None, horizon: float = 10000
) -> KLController:
    """Build a KL controller by name.

    Args:
        kind: "fixed" or "adaptive".
        init_coef: (initial) coefficient beta.
        target: target KL, required (> 0) for "adaptive", ignored for "fixed".
        horizon: adaptation horizon for "adaptive".

    Raises:
        ValueError: for an unknown kind, or "adaptive" without a positive target.
    """
    if kind == "fixed":
        return FixedKLController(init_coef)
    if kind == "adaptive":
        return AdaptiveKLController(init_coef, target, horizon)
    raise ValueError(f"unknown KL controller kind {kind!r}; allowed: {', '.join(KL_CONTROLLERS)}")
