"""Helpers shared by the benchmarks: prompts, clocks, memory, the pama_lit harness, tables and JSON.

The benchmarks are scripts run by hand (``python benchmarks/<name>.py``), never by the test suite.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from pama_lit.infra.atomic import write_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Eight prompts of about 16 SmolLM2 tokens each (15-17), fed raw (no chat template) to both trainers.
PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain to a ten year old child why the sky looks blue during the day.",
    "Describe the smell of fresh bread in a small village bakery early in the morning.",
    "Give me three practical tips for keeping a vegetable garden healthy in summer.",
    "What would you pack for a week long hiking trip in the mountains and why?",
    "Tell me about the first time a robot learned to paint a picture of the sea.",
    "Summarise the main reasons people enjoy reading mystery novels on long train rides.",
    "Invent a new holiday and explain how families would celebrate it every year.",
]


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


# ----------------------------------------------------------------------------------------- memory
def rss_mib() -> float:
    """Resident set size of this process now, MiB."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """High-water mark of this process's resident set since start or the last ``reset_peak_rss``, MiB."""
    return _status_kib("VmHWM") / 1024


def reset_peak_rss() -> None:
    """Return freed heap to the OS, then restart the high-water mark at the current RSS (Linux >= 4.0).

    Without the trim, memory a previous variant freed but glibc kept would count towards the next
    variant's peak.
    """
    import gc

    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_kib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


# ---------------------------------------------------------------------------------------- machine
def machine_info() -> dict:
    """CPU model, cores, memory, load, library versions and the date: every result file records them."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
    }
    for name in ("torch", "transformers", "peft", "lightning", "torchjd"):
        with contextlib.suppress(ImportError, AttributeError):
            info[name] = __import__(name).__version__
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        info["git_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return info


# ------------------------------------------------------------------------------------ JSON, tables
def shown(path: str | Path) -> str:
    """A path as a report shows it: relative to the repository when inside it, else as given."""
    path = Path(path)
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def write_result(name: str, payload: dict, folder: Path = RESULTS) -> Path:
    """Write ``<folder>/<name>.json`` (the latest run; ``benchmarks/results`` by default) and print where."""
    path = write_atomic(folder / f"{name}.json", json.dumps(payload, indent=2, default=float) + "\n")
    print(f"\nwrote {shown(path)}")
    return path


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> None:
    def fmt(x):
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 0.01 and x != 0 else f"{x:,.2f}"
        return str(x)

    cells = [[fmt(x) for x in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    sys.stdout.flush()


# ----------------------------------------------------------------------------- pama_lit harness
class SharedBaseLoader:
    """Model loader for many variants in one process: every variant shares one frozen base model.

    Each call returns a fresh module tree whose parameters are the master's tensors (a deepcopy that
    maps every parameter to itself), so LoRA adapters and value heads are per variant while the
    134.5M base weights exist once. Only valid with LoRA: the base must never be trained.
    """

    def __init__(self, dtype: str = "float32") -> None:
        from pama_lit.models.loading import load_embedded_smollm2

        self.master = load_embedded_smollm2(dtype)

    def __call__(self):
        from pama_lit.models.loading import LoadedModel

        model = self.master.model
        memo = {id(p): p for p in model.parameters()}
        return LoadedModel(copy.deepcopy(model, memo), self.master.tokenizer)


def compose(overrides: list[str]):
    """The project's Hydra config with overrides, as ``train.py`` would compose it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import pama_lit.run.schema  # noqa: F401  registers train_schema, which conf/train.yaml extends

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/pama_lit_benchmark"
    return cfg


def build_module(cfg, rewards: dict, model_loader=None):
    """The ``PamaModule`` that ``train()`` builds from a composed config, optionally on another loader."""
    from pama_lit.run.train import build_module as build

    module = build(cfg, rewards)
    if model_loader is not None:
        module.model_loader = model_loader
    return module


class IterationClock:
    """Times one PPO iteration of a ``PamaModule`` under a Lightning Trainer, phase by phase.

    ``generate`` is the sampling alone (``policy.generate``), ``update`` everything else; the
    module's own phase timers (rollout, score, advantages, update, pareto_solve, ...) come along.
    """

    def __init__(self, precision: str = "32-true") -> None:
        self.precision = precision

    def run(
        self, module, prompts: list[str], iterations: int = 1, measure_memory: bool = False
    ) -> list[dict]:
        import lightning as L
        import torch
        from torch.utils.data import DataLoader

        records: list[dict] = []
        clock = self

        class _Callback(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if measure_memory:
                    reset_peak_rss()
                    self.rss_before = rss_mib()
                clock._generate_seconds = 0.0
                self.start = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                total = time.perf_counter() - self.start
                times = {k.removeprefix("train/time/"): float(v) for k, v in trainer.callback_metrics.items()
                         if k.startswith("train/time/")}  # fmt: skip
                record = {"iteration": total, "generate": clock._generate_seconds,
                          "update": total - clock._generate_seconds, "phases": times}  # fmt: skip
                if measure_memory:
                    record["peak_rss_mib"] = peak_rss_mib()
                    record["peak_over_start_mib"] = peak_rss_mib() - self.rss_before
                records.append(record)

        module.configure_model()
        policy = module.policy
        if not getattr(policy, "_benchmark_clocked", False):
            original = policy.generate

            def timed_generate(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    clock._generate_seconds += time.perf_counter() - start

            policy.generate = timed_generate
            policy._benchmark_clocked = True
        loader = DataLoader(list(prompts) * iterations, batch_size=len(prompts), shuffle=False,
                            collate_fn=lambda b: {"prompt": list(b)})  # fmt: skip
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            precision=self.precision,
            max_epochs=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[_Callback()],
        )
        torch.manual_seed(0)
        trainer.fit(module, train_dataloaders=loader)
        return records


def quiet_logs() -> None:
    """Silence Lightning's and transformers' per-fit chatter so the tables stay readable."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pama_lit", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def smollm2_lora_policy():
    """SmolLM2-135M-Instruct (fp32) with the default LoRA of ``conf/model/smollm2.yaml``, lora_B drawn
    from N(0, 0.02) under seed 0 (as after training: zeros would cost the same), and its tokenizer
    padding on the left. Returns (policy, lora config, tokenizer)."""
    import torch
    from omegaconf import OmegaConf

    from pama_lit.models import PolicyWithValueHeads, load_embedded_smollm2

    lora = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/smollm2.yaml").lora)
    loaded = load_embedded_smollm2("float32")
    torch.manual_seed(0)
    policy = PolicyWithValueHeads(loaded.model, num_value_heads=1, lora=lora)
    with torch.no_grad():
        for name, p in policy.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    return policy, lora, tokenizer
