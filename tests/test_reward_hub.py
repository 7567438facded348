"""Hub reward adapters on tiny models built and saved here (no download), and the offline fail-fast."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pama_lit.infra.hub_access import require_hub_dataset
from pama_lit.rewards import (
    HubModelUnavailable,
    RewardModelReward,
    SequenceClassifierReward,
    build_rewards,
    require_hub_model,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
SENTENCES = [
    "what a wonderful film , i loved it",
    "this movie was awful and boring",
    "the plot is fine but the acting is bad",
    "human : tell me a joke assistant : why did the chicken cross the road",
    "thank you so much , that is very kind",
    "i will not help you with that",
]
PROMPTS = ["tell me about the film", "any thoughts ?", "hello", "tell me a joke", "thanks", "help me"]
RESPONSES = [
    "what a wonderful film",
    "awful and boring , i hated the plot and the acting and the music",
    "fine",
    "why did the chicken cross the road",
    "you are very kind",
    "i will not",
]


def tiny_distilbert(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=tok.get_vocab_size(),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        pad_token_id=tok.token_to_id("[PAD]"),
    )
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_gpt2(folder: Path, num_labels: int = 1) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES + PROMPTS + ["\n\nHuman: \n\nAssistant:"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        num_labels=num_labels,
    )
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "distilbert": tiny_distilbert(root / "tiny-distilbert"),
        "gpt2_rm": tiny_gpt2(root / "tiny-gpt2-rm"),
        "gpt2_two_labels": tiny_gpt2(root / "tiny-gpt2-two", num_labels=2),
    }


def lengths(n: int) -> torch.Tensor:
    return torch.full((n,), 5, dtype=torch.long)


def reference_logits(folder: Path, texts: list[str], pairs: list[str] | None = None) -> torch.Tensor:
    """One unpadded forward per text: the oracle that padding and batching must reproduce."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for i, text in enumerate(texts):
            enc = tokenizer(text, pairs[i] if pairs else None, return_tensors="pt")
            enc.pop("token_type_ids", None)
            out.append(model(**enc).logits[0])
    return torch.stack(out)


# Sequence classifiers ------------------------------------------------------------------------------


def test_classifier_logit_of_a_named_label_matches_unbatched_forwards(models):
    reward = SequenceClassifierReward(str(models["distilbert"]), label="positive", batch_size=4)
    assert reward.model is None  # lazy: nothing loaded at construction
    scores = reward(PROMPTS, RESPONSES, lengths(6))
    assert reward.label_index == 1
    expected = reference_logits(models["distilbert"], RESPONSES)[:, 1]
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_classifier_probability_and_integer_label(models):
    prob = SequenceClassifierReward(str(models["distilbert"]), label=0, output="prob")(
        PROMPTS, RESPONSES, lengths(6)
    )
    expected = torch.softmax(reference_logits(models["distilbert"], RESPONSES), -1)[:, 0]
    torch.testing.assert_close(prob, expected, atol=1e-5, rtol=1e-5)


def test_classifier_batching_does_not_change_scores(models):
    one = SequenceClassifierReward(str(models["distilbert"]), batch_size=1)(PROMPTS, RESPONSES, lengths(6))
    many = SequenceClassifierReward(str(models["distilbert"]), batch_size=64)(PROMPTS, RESPONSES, lengths(6))
    torch.testing.assert_close(one, many, atol=1e-5, rtol=1e-5)


def test_classifier_reads_prompt_and_response_as_a_pair(models):
    reward = SequenceClassifierReward(str(models["distilbert"]), reads="prompt+response")
    expected = reference_logits(models["distilbert"], PROMPTS, RESPONSES)[:, 1]
    torch.testing.assert_close(reward(PROMPTS, RESPONSES, lengths(6)), expected, atol=1e-5, rtol=1e-5)


def test_classifier_truncates_long_texts(models):
    reward = SequenceClassifierReward(str(models["distilbert"]), max_length=8)
    scores = reward(["p"], [" ".join(["wonderful film"] * 200)], lengths(1))
    assert scores.shape == (1,) and torch.isfinite(scores).all()


def test_classifier_label_and_option_errors(models):
    with pytest.raises(ValueError, match="no label 'funny'"):
        SequenceClassifierReward(str(models["distilbert"]), label="funny").to("cpu")
    with pytest.raises(ValueError, match="out of range"):
        SequenceClassifierReward(str(models["distilbert"]), label=2).to("cpu")
    with pytest.raises(ValueError, match="output"):
        SequenceClassifierReward(str(models["distilbert"]), output="score")
    with pytest.raises(ValueError, match="reads"):
        SequenceClassifierReward(str(models["distilbert"]), template="{prompt} {response}")


# Reward models -------------------------------------------------------------------------------------


def test_reward_model_scores_the_dialogue_with_padding_and_batching(models):
    reward = RewardModelReward(str(models["gpt2_rm"]), batch_size=4)
    scores = reward(PROMPTS, RESPONSES, lengths(6))
    dialogues = [f"\n\nHuman: {p}\n\nAssistant: {r}" for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    expected = reference_logits(models["gpt2_rm"], dialogues)[:, 0]
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    assert (
        reward.tokenizer.pad_token == "<|endoftext|>"
    )  # GPT-2 has none: pad = eos, read the last real token
    custom = RewardModelReward(str(models["gpt2_rm"]), template="Q: {prompt} A: {response}")
    assert not torch.allclose(custom(PROMPTS, RESPONSES, lengths(6)), scores)


def test_reward_model_rejects_a_multi_label_head(models):
    with pytest.raises(ValueError, match="not one"):
        RewardModelReward(str(models["gpt2_two_labels"])).to("cpu")


def test_hub_rewards_are_frozen_and_outside_the_module_tree(models):
    rewards = [SequenceClassifierReward(str(models["distilbert"])), RewardModelReward(str(models["gpt2_rm"]))]
    holder = torch.nn.Module()
    holder.rewards = {str(i): r.to("cpu") for i, r in enumerate(rewards)}
    assert holder.state_dict() == {} and list(holder.parameters()) == []
    for reward in rewards:
        assert not isinstance(reward, torch.nn.Module)
        assert not reward.model.training
        assert all(not p.requires_grad for p in reward.model.parameters())
        scores = reward(PROMPTS, RESPONSES, lengths(6))
        assert scores.dtype == torch.float32 and not scores.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_hub_reward_on_gpu_matches_cpu(models):
    cpu = SequenceClassifierReward(str(models["distilbert"]))(PROMPTS, RESPONSES, lengths(6))
    reward = SequenceClassifierReward(str(models["distilbert"])).to("cuda")
    gpu = reward(PROMPTS, RESPONSES, lengths(6).cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


# Offline: fail fast with the embedded alternative ------------------------------------------------


def build_from_conf(name: str):
    return build_rewards({"objective": OmegaConf.load(CONF / "reward" / f"{name}.yaml")})


@pytest.mark.parametrize(
    ("config", "model", "alternative"),
    [
        ("sentiment_hub", "lvwerra/distilbert-imdb", "objective=sentiment+length"),
        ("humor_hub", "mohameddhiab/humor-no-humor", "reward@objective.rewards.humor=humor"),
        ("harmless_hub", "Ray2333/gpt2-large-harmless-reward_model", "objective=harmless+length"),
    ],
)
def test_hub_configs_fail_fast_offline_naming_the_embedded_alternative(
    monkeypatch, tmp_path, config, model, alternative
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))  # an empty cache
    start = time.perf_counter()
    with pytest.raises(HubModelUnavailable) as err:
        build_from_conf(config)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert message.startswith("objective 'objective': ")
    assert f"reward model '{model}' is not available offline" in message
    assert alternative in message and "HF_HUB_OFFLINE" in message


def test_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(HubModelUnavailable, match="cannot be reached") as err:
        SequenceClassifierReward("lvwerra/distilbert-imdb", alternative="reward=sentiment (embedded VADER)")
    assert time.perf_counter() - start < 5
    assert "reward=sentiment (embedded VADER)" in str(err.value)


def test_nonsense_names_fail_fast(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    # Online this is a 404, offline an unreachable hub: a clear error either way, within seconds.
    with pytest.raises(HubModelUnavailable, match="pama-lit-test/no-such-model-f3a9"):
        RewardModelReward("pama-lit-test/no-such-model-f3a9", alternative="reward=harmless")
    with pytest.raises(HubModelUnavailable, match="nor a valid hub model id"):
        require_hub_model("not a model!", what="policy model", alternative="model=smollm2")
    with pytest.raises(HubModelUnavailable, match="no such folder"):
        require_hub_model(str(tmp_path / "missing"), what="policy model", alternative="model=smollm2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubModelUnavailable, match="data set 'imdb'.*data=tweets"):
        require_hub_dataset("imdb", alternative="data=tweets")
    assert time.perf_counter() - start < 10


def test_a_cached_model_loads_offline(monkeypatch, tmp_path, models):
    """A model in the Hugging Face cache layout is found with HF_HUB_OFFLINE=1 and never downloaded."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--tiny-org--tiny-distilbert"
    shutil.copytree(models["distilbert"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reward = SequenceClassifierReward("tiny-org/tiny-distilbert")
    assert reward.source == str(repo / "snapshots" / commit)
    expected = SequenceClassifierReward(str(models["distilbert"]))(PROMPTS, RESPONSES, lengths(6))
    torch.testing.assert_close(reward(PROMPTS, RESPONSES, lengths(6)), expected)
