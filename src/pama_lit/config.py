"""Start-up checks of a composed config: every mistake that needs no model is reported before one loads."""

from __future__ import annotations

from omegaconf import DictConfig, open_dict

from pama_lit.algorithms import COMBINERS
from pama_lit.preference import resolve_preference, simplex_grid


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


def validate_config(cfg: DictConfig) -> None:
    """Check the composed config and resolve ``preference_grid`` into ``preference``.

    Raises:
        ConfigError: naming the bad key and value.
    """
    objectives = list((cfg.objective or {}).get("rewards") or {})
    if not objectives:
        raise ConfigError("objective.rewards is empty: choose objectives, e.g. objective=sentiment+length")
    name = cfg.algorithm.name
    if name not in COMBINERS:
        raise ConfigError(f"unknown algorithm {name!r}; known: {', '.join(COMBINERS)}")
    COMBINERS[name]().num_streams(len(objectives))
    if COMBINERS[name].gradient_space == "parameters" and str(cfg.trainer.get("precision")) == "16-mixed":
        raise ConfigError(
            f"algorithm={name} writes unscaled gradients, which 16-mixed's gradient scaler would unscale again; "
            "use trainer.precision=bf16-mixed or 32-true"
        )
    if cfg.iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {cfg.iterations}")
    r = cfg.rollout
    if r.max_new_tokens < 1:
        raise ConfigError(f"rollout.max_new_tokens must be >= 1, got {r.max_new_tokens}")
    if not 0 <= r.min_new_tokens <= r.max_new_tokens:
        raise ConfigError(f"rollout.min_new_tokens must be in [0, {r.max_new_tokens}], got {r.min_new_tokens}")
    p = cfg.ppo
    if p.num_minibatches < 1 or r.batch_size % p.num_minibatches:
        raise ConfigError(
            f"rollout.batch_size={r.batch_size} does not split into ppo.num_minibatches={p.num_minibatches} "
            "equal minibatches; choose a divisor"
        )
    if p.epochs < 1:
        raise ConfigError(f"ppo.epochs must be >= 1, got {p.epochs}")
    grid = cfg.get("preference_grid") or {}
    if grid.get("steps") is not None or grid.get("index") is not None:
        if cfg.preference is not None:
            raise ConfigError("set either preference or preference_grid, not both")
        if grid.get("steps") is None or grid.get("index") is None:
            raise ConfigError("preference_grid needs both steps and index")
        points = simplex_grid(len(objectives), int(grid.steps))
        if not 0 <= grid.index < len(points):
            raise ConfigError(
                f"preference_grid.index={grid.index} is out of range: steps={grid.steps} gives "
                f"{len(points)} vectors for {len(objectives)} objectives (index 0..{len(points) - 1})"
            )
        with open_dict(cfg):
            cfg.preference = points[grid.index]
    try:
        resolve_preference(None if cfg.preference is None else list(cfg.preference), objectives)
    except ValueError as err:
        raise ConfigError(str(err)) from err
