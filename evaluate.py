"""Evaluate a finished run: ``python evaluate.py run_dir=outputs/... [policy=reference]``."""

import json

import hydra
from omegaconf import DictConfig, OmegaConf

from pama_lit.run.evaluate import evaluate, log_dir

# hydra.run.dir of conf/evaluate.yaml: resolved, and created, before main() runs.
OmegaConf.register_new_resolver("pama_evaluate_dir", log_dir, replace=True)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    result = evaluate(
        cfg.run_dir, cfg.policy, cfg.num_prompts, cfg.seed, cfg.output,
        preference=cfg.preference, grid_steps=cfg.preference_grid.steps,
    )  # fmt: skip
    for record in result if isinstance(result, list) else [result]:
        print(
            json.dumps(
                {k: record[k] for k in ("policy", "algorithm", "preference", "rewards", "kl_ref")}, indent=2
            )
        )


if __name__ == "__main__":
    main()
