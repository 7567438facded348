"""The held-out split is fixed by data.split_seed alone; seed only orders training; eval.batch_size batches it."""

from __future__ import annotations

import pytest
from conftest import compose_config
from hydra.utils import instantiate


def datamodule(tmp_path, *overrides: str):
    prompts = tmp_path / "prompts.txt"
    if not prompts.exists():
        prompts.write_text("".join(f"prompt number {i}\n" for i in range(200)))
    cfg = compose_config(["data=file", f"data.source.path={prompts}", *overrides], tmp_path / "run")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    return dm


def first_batches(dm, n: int = 3) -> list[list[str]]:
    sampler = dm.train_dataloader().batch_sampler
    return [[dm.train_prompts[i] for i in sampler.batch(t)] for t in range(n)]


def test_seeds_share_the_held_out_prompts_and_differ_in_training_order(tmp_path):
    a = datamodule(tmp_path, "seed=0")
    b = datamodule(tmp_path, "seed=1")
    assert a.val_prompts == b.val_prompts and len(a.val_prompts) == 32
    assert sorted(a.train_prompts) == sorted(b.train_prompts)
    assert first_batches(a) != first_batches(b)


def test_split_seed_decides_the_split(tmp_path):
    a = datamodule(tmp_path, "data.split_seed=0")
    b = datamodule(tmp_path, "data.split_seed=1")
    assert set(a.val_prompts) != set(b.val_prompts)
    assert not set(a.val_prompts) & set(a.train_prompts)
    # Under the same seed the training order is the same permutation of each split's train prompts.
    assert first_batches(a)[0] != first_batches(b)[0]


def test_max_prompts_subset_follows_split_seed_not_seed(tmp_path):
    a = datamodule(tmp_path, "seed=0", "+data.max_prompts=50")
    b = datamodule(tmp_path, "seed=3", "+data.max_prompts=50")
    assert a.val_prompts == b.val_prompts and a.train_prompts == b.train_prompts


def test_eval_batch_size_sets_the_validation_batches(tmp_path):
    dm = datamodule(tmp_path, "data.val_size=7", "eval.batch_size=3", "rollout.batch_size=16")
    assert [len(batch["prompt"]) for batch in dm.val_dataloader()] == [3, 3, 1]
    assert [p for batch in dm.val_dataloader() for p in batch["prompt"]] == dm.val_prompts


@pytest.mark.parametrize("data", ["tweets", "chitchat"])
def test_embedded_sources_hold_the_default_held_out_set_and_plenty_to_train_on(tmp_path, data):
    cfg = compose_config([f"data={data}"], tmp_path)
    assert cfg.data.val_size == 128 and cfg.data.split_seed == 0 and cfg.data.val_batch_size == 32
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert len(dm.val_prompts) == 128
    assert len(dm.train_prompts) > 10_000


def test_the_harmless_experiment_trains_and_evaluates_on_provocative_chat_turns(tmp_path):
    from profanity_check import predict_prob

    cfg = compose_config(["experiment=embedded_harmless_length"], tmp_path)
    assert cfg.data.source.min_offensive == 0.5
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert len(dm.val_prompts) == 128 and 1_500 < len(dm.train_prompts) + 128 < 3_000  # 2,003 turns at 0.5
    turns = instantiate(cfg.data.source)()
    assert (predict_prob(turns) >= 0.5).all()
    template = cfg.data.template
    assert set(dm.val_prompts) <= {template.format(prompt=t) for t in turns}
    # Every other chat experiment keeps every turn.
    assert compose_config(["experiment=embedded_humor_length"], tmp_path).data.source.min_offensive is None


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_min_offensive_outside_a_probability_is_refused_by_name(bad):
    from pama_lit.data.prompts import chat_turns

    with pytest.raises(ValueError, match=rf"data\.source\.min_offensive={bad}.*\(0, 1\]"):
        chat_turns(min_offensive=bad)
