"""Data parallelism: rank reductions against one-process oracles, prompt sharding, and a real 2-process DDP run.

What the end-to-end test compares (``trainer=ddp``, 2 CPU processes, gloo) against a one-process run
with the doubled batch on the same prompts:

* both ranks end with bit-identical adapters and value heads (``rank_weights.json``);
* every continuous per-iteration metric (rewards, KL, losses, entropy, KL coefficient) and every
  final weight agree to float32 rounding (rel 1e-3, abs 1e-5; the policy loss is a small
  difference of large terms). To make the runs comparable, sampling is greedy (``top_k=1``: rank
  and batch composition cannot change a response), every response has the same length
  (``min_new_tokens = max_new_tokens``: DDP's mean of per-rank token means equals the one-process
  token mean) and each PPO epoch is one minibatch (the random split of a batch into minibatches
  differs between the runs).
* ``train/pareto/binding_frac/*`` is left out: it counts ties in the per-token closed form, which
  float rounding of left-padded prompts (padded to 4 vs 8 rows) can flip.

Both runs score two rule rewards of prompt and response (``tests/rule_rewards.py``): greedy responses
of the random tiny model are all alike, so rewards of the response alone are the same for every
sample and the advantages carry only the value heads' error; these differ from sample to sample.
The same comparison runs ``algorithm=mgda_ub``, whose Gram matrix is all-reduced over ranks (with
constant rewards its min-norm value would be 0 and prove nothing).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from train_runs import TINY, iteration_metrics, run_train, train_env

from pama_lit.core import ops
from pama_lit.core.pareto import combine_pama_batch
from pama_lit.data.batches import IterationBatchSampler
from pama_lit.infra import distributed


def test_helpers_are_the_local_ops_in_one_process():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 3)
    mask = torch.rand(4, 6) > 0.3
    assert torch.equal(distributed.masked_whiten(x, mask), ops.masked_whiten(x, mask))
    assert torch.equal(distributed.masked_mean(x, mask), ops.masked_mean(x, mask))
    assert torch.equal(distributed.masked_var(x, mask), ops.masked_var(x, mask))
    assert distributed.mean(x) is x
    assert distributed.mean_floats({"a": torch.tensor(2.0), "b": 3}, x.device) == {"a": 2.0, "b": 3.0}
    assert distributed.all_true(False, x.device) is False and distributed.sum_int(5, x.device) == 5
    assert distributed.gather_objects({"r": 0}) == [{"r": 0}]
    state = torch.get_rng_state()
    distributed.decorrelate_rng()  # rank 0 keeps its stream
    assert torch.equal(torch.get_rng_state(), state)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_rank_worker(rank: int, port: int, results) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        torch.manual_seed(0)  # the same full batch on both ranks; each keeps its half
        x = torch.randn(8, 5, 2)
        mask = torch.rand(8, 5) > 0.25
        kl = torch.randn(8, 5)
        mine = slice(4 * rank, 4 * rank + 4)
        out = {
            "whiten": distributed.masked_whiten(x[mine], mask[mine]),
            "whiten_full": ops.masked_whiten(x, mask)[mine],
            "mean": distributed.masked_mean(x[mine], mask[mine]),
            "mean_full": ops.masked_mean(x, mask),
            "seq_kl": distributed.mean((kl[mine] * mask[mine]).sum(-1).mean()),
            "seq_kl_full": (kl * mask).sum(-1).mean(),
            "all_true": distributed.all_true(rank == 0, x.device),
            "sum": distributed.sum_int(rank + 1, x.device),
            "gathered": distributed.gather_objects(f"rank{rank}"),
            "logged": distributed.mean_floats({"r": float(rank)}, x.device),
        }
        adv = torch.rand(8, 5, 2)
        ratio = 1 + 0.3 * torch.rand(8, 5)
        pref = torch.tensor([0.3, 0.7])
        combined, weights = combine_pama_batch(
            adv[mine], mask[mine], pref, ratio[mine], 0.2, mean_fn=distributed.masked_mean
        )
        full_combined, full_weights = combine_pama_batch(adv, mask, pref, ratio, 0.2)
        out.update(
            combined=combined, weights=weights, combined_full=full_combined[mine], weights_full=full_weights
        )
        distributed.decorrelate_rng()
        out["draw"] = torch.rand(3)
        results[rank] = out
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_reduce_to_the_one_process_statistics():
    """Whitening, masked means, the KL input, pama_batch weights: 2 gloo ranks vs the whole batch."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_two_rank_worker, args=(_free_port(), results), nprocs=2, start_method="spawn")
        r = dict(results)
    for rank in (0, 1):
        out = r[rank]
        torch.testing.assert_close(out["whiten"], out["whiten_full"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["mean"], out["mean_full"])
        torch.testing.assert_close(out["seq_kl"], out["seq_kl_full"])
        torch.testing.assert_close(out["weights"], out["weights_full"])
        torch.testing.assert_close(out["combined"], out["combined_full"])
        assert out["all_true"] is False and out["sum"] == 3
        assert out["gathered"] == ["rank0", "rank1"] and out["logged"] == {"r": 0.5}
    assert not torch.equal(r[0]["draw"], r[1]["draw"]), "ranks must not share a sampling stream"


def test_rank_shards_are_the_one_process_batch_and_resume_by_iteration():
    one = IterationBatchSampler(num_prompts=10, batch_size=6, num_iterations=5, seed=3)
    ranks = [IterationBatchSampler(10, 3, 5, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for t in range(5):
        assert ranks[0].batch(t) + ranks[1].batch(t) == one.batch(t)
    # Every pass over the prompts is a permutation: the first 10 stream positions cover all prompts once.
    assert sorted(one.batch(0) + one.batch(1)[:4]) == list(range(10))
    assert len(one) == 5 and list(one)[2] == one.batch(2)
    one.start = 3
    assert list(one) == [one.batch(3), one.batch(4)] and len(one) == 5


DDP_COMPARABLE = [
    *TINY,
    "iterations=2",
    "rollout.top_k=1",
    "rollout.max_new_tokens=6",
    "rollout.min_new_tokens=6",
    "ppo.num_minibatches=1",
    "data.val_size=4",
]


# Two rewards of prompt and response (tests/rule_rewards.py): they vary between samples even though
# greedy responses of the random tiny model are all alike, so the advantages carry a real signal.
RULE_REWARDS = [
    "objective=length",
    "~objective.rewards.length",
]
for _name, _fn in (("vowels", "vowel_fraction"), ("spaces", "space_fraction")):
    RULE_REWARDS += [
        f"+reward@objective.rewards.{_name}=length",
        f"objective.rewards.{_name}._target_=pama_lit.rewards.CallableReward",
        f"+objective.rewards.{_name}.fn=rule_rewards:{_fn}",
        f"+objective.rewards.{_name}.reads=prompt+response",
        f"~objective.rewards.{_name}.scale",
        f"~objective.rewards.{_name}.low",
        f"~objective.rewards.{_name}.high",
    ]


def test_ddp_two_cpu_processes_match_one_process(tmp_path):
    compare_ddp_to_one_process(tmp_path, RULE_REWARDS)


def test_mgda_ub_on_two_ranks_matches_one_process(tmp_path):
    """The all-reduced Gram matrix: same min-norm weights, min-norm value and update as one process."""
    metrics = compare_ddp_to_one_process(tmp_path, ["algorithm=mgda_ub", *RULE_REWARDS])
    # Both objectives move the policy, so the min-norm value is a real number, not a degenerate 0.
    assert all(m["train/pareto/min_norm"] > 1e-4 for m in metrics.values())


def compare_ddp_to_one_process(tmp_path, extra: list[str]) -> dict[int, dict[str, float]]:
    """Run 2 DDP ranks of batch 4 and one process of batch 8; compare metrics, weights, evaluation."""
    env = train_env(
        PYTHONPATH=str(Path(__file__).parent) + ":" + str(Path(__file__).parents[1] / "src")
    )  # reward functions in tests/
    ddp = run_train(
        [
            *DDP_COMPARABLE,
            *extra,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "rollout.batch_size=4",
        ],
        tmp_path / "ddp",
        timeout=420,
        env=env,
    )
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-4000:]
    assert "distributed_backend=gloo" in ddp.stdout + ddp.stderr
    ranks = json.loads((tmp_path / "ddp" / "rank_weights.json").read_text())
    assert ranks["identical"] and len(ranks["sha256"]) == 2 and len(set(ranks["sha256"])) == 1

    one = run_train([*DDP_COMPARABLE, *extra, "rollout.batch_size=8"], tmp_path / "one", timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-4000:]

    got = iteration_metrics(next((tmp_path / "ddp" / "csv").glob("version_*/metrics.csv")))
    want = iteration_metrics(next((tmp_path / "one" / "csv").glob("version_*/metrics.csv")))
    assert sorted(got) == sorted(want) == [0, 1]
    for step, metrics in want.items():
        for key, value in metrics.items():
            if "/binding_frac/" in key:
                continue
            assert got[step][key] == pytest.approx(value, rel=1e-3, abs=1e-5), (
                step,
                key,
                got[step][key],
                value,
            )

    a = load_file(tmp_path / "ddp" / "final" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "one" / "final" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert any(v.abs().max() > 0 for k, v in b.items() if "lora_B" in k), "the policy did not move"
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    heads = [
        torch.load(tmp_path / run / "final" / "value_heads.pt", weights_only=True) for run in ("ddp", "one")
    ]
    for key in heads[0]["state_dict"]:
        torch.testing.assert_close(
            heads[0]["state_dict"][key], heads[1]["state_dict"][key], rtol=1e-4, atol=1e-5
        )

    evals = [json.loads((tmp_path / run / "eval.json").read_text()) for run in ("ddp", "one")]
    assert evals[0]["num_prompts"] == evals[1]["num_prompts"] == 4  # validation sharded, then gathered
    for name, summary in evals[1]["rewards"].items():
        assert evals[0]["rewards"][name]["mean"] == pytest.approx(summary["mean"], abs=1e-5)
    return want


def test_gpu_strategy_configs_compose_and_validate():
    """trainer=fsdp and trainer=deepspeed are for GPU users: here they are composed and validated only."""
    from conftest import compose_config
    from hydra.utils import instantiate

    from pama_lit.run.config import validate_config

    for name, target in (
        ("ddp", "DDPStrategy"),
        ("fsdp", "FSDPStrategy"),
        ("deepspeed", "DeepSpeedStrategy"),
    ):
        cfg = compose_config(["debug=tiny", f"trainer={name}"])
        validate_config(cfg)
        assert cfg.trainer.strategy._target_.endswith(target)
        assert cfg.trainer.use_distributed_sampler is False
    fsdp = instantiate(compose_config(["trainer=fsdp"]).trainer.strategy)
    assert fsdp.kwargs["use_orig_params"] is True
