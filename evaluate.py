"""Evaluate a finished run: ``python evaluate.py run_dir=outputs/... [policy=reference]``."""

import json

import hydra
from omegaconf import DictConfig

from pama_lit.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    record = evaluate(cfg.run_dir, cfg.policy, cfg.num_prompts, cfg.seed, cfg.output)
    print(
        json.dumps(
            {k: record[k] for k in ("policy", "algorithm", "preference", "rewards", "kl_ref")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
