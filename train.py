"""Train one PAMA run: ``python train.py [overrides]`` (e.g. ``objective=humor+harmless model=gpt2``)."""

import hydra
from omegaconf import DictConfig

from pama_lit.run.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
