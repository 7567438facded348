"""eval.reference: one reference evaluation shared by runs that would evaluate the reference alike."""

from __future__ import annotations

import json

import pytest
from conftest import compose_config
from tiny import TINY

from pama_lit.run.config import ConfigError
from pama_lit.run.reference import load_shared_reference, reference_key
from pama_lit.run.results import SUMMARY_KEYS, read_responses
from pama_lit.run.train import train

BASE = ["data.val_size=4"]


def key(*overrides: str, output_dir: str = "/tmp/a") -> str:
    return reference_key(compose_config([*TINY, *BASE, *overrides], output_dir=output_dir))


@pytest.mark.parametrize(
    "change",
    [
        "algorithm=morlhf",
        "algorithm=mgda_ub",
        "seed=3",
        "optimizer.lr=1e-3",
        "iterations=7",
        "ppo.epochs=3",
        "ppo.kl.placement=loss ppo.kl.estimator=k3",
        "rollout.batch_size=2",
        "eval.every_n_iterations=3",
        "preference=[0.3,0.7]",
        "logger=csv",
    ],
)
def test_what_only_training_reads_does_not_change_the_key(change):
    assert key(*change.split()) == key()


def test_the_run_folder_does_not_change_the_key():
    assert key(output_dir="/tmp/one") == key(output_dir="/tmp/two")


@pytest.mark.parametrize(
    "change",
    [
        "data.val_size=8",
        "data.split_seed=1",
        "rollout.max_new_tokens=5",
        "rollout.temperature=0.7",
        "eval.seed=7",
        "eval.batch_size=1",
        "trainer.precision=bf16-mixed",
        "objective=sentiment",
        "model.max_prompt_length=16",
        "rewards_on_error=skip",
        "conditioning=prompt",
    ],
)
def test_what_the_reference_evaluation_reads_changes_the_key(change):
    assert key(*change.split()) != key()


def test_with_conditioning_the_preference_reaches_the_reference_and_changes_the_key():
    assert key("conditioning=prompt", "preference=[0.3,0.7]") != key("conditioning=prompt")


def test_runs_that_differ_only_in_training_evaluate_the_reference_identically(tmp_path):
    """The claim the key rests on, measured: another algorithm, seed and step size, the same reference."""
    a = compose_config([*TINY, *BASE, "seed=0"], output_dir=tmp_path / "a")
    b = compose_config(
        [*TINY, *BASE, "seed=5", "algorithm=morlhf", "optimizer.lr=1e-3"], output_dir=tmp_path / "b"
    )
    train(a)
    train(b)
    ref_a = json.loads((tmp_path / "a" / "reference" / "eval.json").read_text())
    ref_b = json.loads((tmp_path / "b" / "reference" / "eval.json").read_text())
    assert ref_a["reference_key"] == ref_b["reference_key"] == reference_key(a)
    assert {k: ref_a[k] for k in SUMMARY_KEYS} == {k: ref_b[k] for k in SUMMARY_KEYS}


def test_a_run_takes_a_matching_reference_instead_of_evaluating_it(tmp_path, monkeypatch):
    first = compose_config([*TINY, *BASE], output_dir=tmp_path / "first")
    train(first)
    shared = tmp_path / "first" / "reference" / "eval.json"

    import lightning as L

    validations = []
    original = L.Trainer.validate
    monkeypatch.setattr(
        L.Trainer, "validate", lambda self, *a, **k: validations.append(1) or original(self, *a, **k)
    )
    second = compose_config(
        [*TINY, *BASE, "seed=2", "algorithm=morlhf", f"eval.reference={shared}"],
        output_dir=tmp_path / "second",
    )
    result = train(second)
    assert validations == []  # no reference evaluation: the final one runs inside fit
    copied = json.loads((tmp_path / "second" / "reference" / "eval.json").read_text())
    original_record = json.loads(shared.read_text())
    assert copied == {**original_record, "shared_from": str(shared.resolve())}
    assert (
        read_responses(tmp_path / "second" / "reference" / "eval.json") == read_responses(shared) is not None
    )
    assert result["start"]["rewards"] == original_record["rewards"]
    history = [
        json.loads(line) for line in (tmp_path / "second" / "evaluations.jsonl").read_text().splitlines()
    ]
    assert [h["iteration"] for h in history] == [0, 1]
    assert history[0]["algorithm"] == "morlhf" and history[0]["rewards"] == original_record["rewards"]
    assert (tmp_path / "second" / "eval.json").is_file()


def test_a_reference_from_other_settings_is_refused_before_any_model_loads(tmp_path):
    first = compose_config([*TINY, *BASE], output_dir=tmp_path / "first")
    train(first)
    shared = tmp_path / "first" / "reference" / "eval.json"
    other = compose_config([*TINY, "data.val_size=2", f"eval.reference={shared}"], output_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="evaluated under another model, objectives, data"):
        load_shared_reference(other)
    with pytest.raises(ConfigError, match="evaluated under another"):
        train(other)
    assert not (tmp_path / "x" / "reference").exists()  # nothing written, no model built


def test_unreadable_or_foreign_reference_files_are_refused_by_name(tmp_path):
    trained = {"format": "pama_lit.eval/1", "policy": "trained"}
    unkeyed = {"format": "pama_lit.eval/1", "policy": "reference"}
    cases = {
        "missing.json": (None, "cannot read it as JSON"),
        "broken.json": ("{not json", "cannot read it as JSON"),
        "trained.json": (json.dumps(trained), "is not a reference-policy evaluation"),
        "old.json": (json.dumps(unkeyed), "records no reference_key"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        cfg = compose_config([*TINY, f"eval.reference={path}"], output_dir=tmp_path / "run")
        with pytest.raises(ConfigError, match=message) as err:
            load_shared_reference(cfg)
        assert str(path) in str(err.value)
    assert load_shared_reference(compose_config(TINY, output_dir=tmp_path / "run")) is None


def test_the_key_needs_no_hydra_runtime():
    """Outside a Hydra run the run's folder does not resolve; the key never reads it."""
    from omegaconf import open_dict

    cfg = compose_config([*TINY, *BASE], output_dir="/tmp/a")
    with open_dict(cfg):
        cfg.paths.output_dir = "${hydra:runtime.output_dir}"
    assert reference_key(cfg) == key()
