"""pama_lit: Pareto multi-objective alignment (PAMA) of language models on Lightning and Hydra."""

__version__ = "0.1.0"
