"""``PamaModule``: the LightningModule that orchestrates one PPO iteration per training step.

The math lives in pure tensor functions (``ops``, ``pareto``, ``losses``, ``kl_control``); this
module only sequences them, owns the models, and logs. One ``training_step`` is one iteration,
read top to bottom:

1. rollout     sample responses, record pi_old / pi_ref log-probabilities and the K values
2. score       one reward per objective -> scores (B,K)
3. shape       per-token rewards: -beta * KL_t (``ppo.kl.placement=reward``), plus the score on the last token
4. advantages  GAE per objective, whitened per objective; Noon clamps negatives to 0
5. update      PPO epochs over minibatches; the combine step (the Pareto solve) runs per minibatch,
               and ``placement=loss`` adds beta * KL to the loss after it
6. control     adaptive KL coefficient update; logging

One axis, the objectives: K scores, one per configured objective; K' value heads and K' advantages,
one per trained objective (``Combiner.trained_objectives``): K' = K, except MORLHF and Noon PPO, which
train one objective, the scalarised score. The gradient baselines (mgda_ub, mgda) replace step 5's
minibatch backward: ``training.mgda_module.MgdaModule``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import lightning as L
import torch

from pama_lit.core import ops
from pama_lit.core.kl_control import build_kl_controller
from pama_lit.core.losses import kl_loss, policy_loss, value_loss
from pama_lit.core.pareto import combine_stats
from pama_lit.core.preference import (
    preference_prefix,
    quantize_preferences,
    resolve_preference,
    sample_preferences,
    simplex_grid,
)
from pama_lit.infra import distributed
from pama_lit.infra.checkpointing import capture_rng, restore_rng
from pama_lit.models.merging import SAMPLING_DTYPES
from pama_lit.models.policy import PolicyWithValueHeads
from pama_lit.rewards import Normalized, Reward
from pama_lit.run.config import check_context_window
from pama_lit.run.schema import (
    AlgorithmConfig,
    ConditioningConfig,
    DiagnosticsConfig,
    EvalConfig,
    ModelConfig,
    PPOConfig,
    RolloutConfig,
)
from pama_lit.training.combiners import AdvantageCombiner, Combiner, build_combiner
from pama_lit.training.mgda_step import pareto_diagnostic
from pama_lit.training.rollout import PolicyForward, Rollout, response_mask_from_eos
from pama_lit.training.scoring import RewardError, mask_unscored, score_rollout
from pama_lit.training.timing import PhaseTimer

log = logging.getLogger(__name__)


class PamaModule(L.LightningModule):
    """Policy, reference and value heads, trained by PAMA (or a baseline) with manual optimization.

    Takes the advantage-space algorithms (pama, pama_batch, morlhf, noon_ppo); the gradient-space
    ones train with ``MgdaModule``, which ``run.train.build_module`` picks for them.

    Args:
        model_loader: zero-argument callable returning a ``LoadedModel`` (policy LM + tokenizer).
        rewards: objective id -> reward, in objective order. Kept outside the module tree, so
            rewards never reach an optimizer or a checkpoint.
        algorithm: ``name`` (pama, pama_batch, morlhf, noon_ppo, mgda_ub, mgda), ``noon``; for pama
            and pama_batch ``min_score_std`` and ``veto_threshold`` (see ``active_objectives``).
        ppo: PPO hyperparameters. Each section's fields are documented in ``pama_lit.run.schema``
            and ``conf/train.yaml``.
        rollout: generation settings (max_new_tokens, min_new_tokens, temperature, top_k, top_p).
        model: model settings (lora, chat_template, max_prompt_length, gradient_checkpointing).
        optimizer: a partial optimizer constructor taking the parameters.
        evaluation: ``seed`` of the sampling during validation (the same responses for the same
            policy) and ``num_samples`` kept in each evaluation's summary.
        rewards_on_error: "raise" stops at a reward that raises or returns NaN/inf; "skip" leaves
            such samples out of the update and counts them in ``train/skipped_samples``.
        diagnostics: ``every_n_iterations``: measure Pareto stationarity (``train/diag/*``) on the
            iterations that divide by it; 0 = never.
        preference: K positive weights in objective order, or None for uniform. Conditioned: the
            preference of every validation (written into its prompts), rounded onto the grid.
        conditioning: ``mode`` none (None too), prompt or svd_lora: every training prompt gets its
            own preference, drawn each iteration (``draw_preferences``), which prompt writes before it
            (``condition_prompts``) and svd_lora sets on the policy's adapters (``svd_lora`` settings,
            in place of ``model.lora``); the combine uses each sample's own (docs/conditioning.md).
        seed: the run's seed; conditioned draws are seeded by it, the iteration and the rank.
    """

    # The combiners this module's minibatch_backward can train with.
    combiner_type: type[Combiner] = AdvantageCombiner
    # Whether minibatch_backward can take the rollout's own forward (fused_forward) instead of running one.
    reuses_rollout_forward = True

    def __init__(
        self,
        model_loader,
        rewards: dict[str, Reward],
        algorithm: AlgorithmConfig,
        ppo: PPOConfig,
        rollout: RolloutConfig,
        model: ModelConfig,
        optimizer,
        evaluation: EvalConfig,
        rewards_on_error: str,
        diagnostics: DiagnosticsConfig,
        preference: list[float] | None = None,
        conditioning: ConditioningConfig | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        # Checkpoints hold only the trainable weights; the frozen base loads from its source.
        self.strict_loading = False
        self.objectives = list(rewards)
        self.rewards = dict(rewards)
        # Validation scores raw rewards (reward.normalize only shapes training): comparable across runs.
        self.raw_rewards = {k: r.reward if isinstance(r, Normalized) else r for k, r in self.rewards.items()}
        self.preference = resolve_preference(preference, self.objectives)
        self.conditioning = conditioning if conditioning is not None and conditioning.mode != "none" else None
        if self.conditioning is not None and self.conditioning.mode == "svd_lora":
            svd = self.conditioning.svd_lora
            if svd.target_modules is None:  # recorded resolved: checkpoints and final/ name the layers
                svd = dataclasses.replace(svd, target_modules=list(model.lora.target_modules))
            self.conditioning = dataclasses.replace(self.conditioning, svd_lora=svd)
        self.seed = seed
        # Conditioned validation also evaluates a preference grid (None: off): (P,K) rows on the decimals grid.
        self.eval_grid: torch.Tensor | None = None
        # The hypervolume's reference point: the first validation's mean rewards (the reference policy's).
        self.reference_point: list[float] | None = None
        if self.conditioning is not None:
            # The weights the prompt shows are the weights the policy is scored at.
            steps = 10**self.conditioning.decimals
            self.preference = quantize_preferences(self.preference, steps)
            if self.conditioning.eval_grid_steps is not None:
                grid = torch.tensor(simplex_grid(len(self.objectives), self.conditioning.eval_grid_steps))
                self.eval_grid = quantize_preferences(grid, steps)
        self.algo_cfg = algorithm
        self.ppo_cfg = ppo
        self.rollout_cfg = rollout
        self.model_cfg = model
        dtype = getattr(rollout, "sampling_dtype", None)
        if dtype is not None and dtype not in SAMPLING_DTYPES:
            raise ValueError(f"rollout.sampling_dtype={dtype!r}: allowed: null, {', '.join(SAMPLING_DTYPES)}")
        self.sampling_dtype = SAMPLING_DTYPES[dtype] if dtype is not None else None
        # Log-probabilities (pi_old, pi_theta, pi_ref) are those of the sampling distribution.
        self.temperature = rollout.temperature
        self.combiner = build_combiner(algorithm.name, algorithm.noon, algorithm.satisfied_at_ceiling)
        if not isinstance(self.combiner, self.combiner_type):
            raise ValueError(
                f"algorithm={self.combiner.name} does not train with {type(self).__name__}, which takes "
                f"{self.combiner_type.__name__}s; run.train.build_module picks the module for an algorithm"
            )
        self.min_score_std = algorithm.min_score_std
        self.veto_threshold = algorithm.veto_threshold
        # (K,) each objective's score ceiling (nan: none), with algorithm.satisfied_at_ceiling; else None.
        self.ceilings = self.score_ceilings() if self.combiner.satisfied_at_ceiling else None
        self._warned_degenerate: set[str] = set()
        self._warned_no_objective = False
        # One value head and one advantage per trained objective (MORLHF: the scalarised one).
        self.trained_objectives = self.combiner.trained_objectives(self.objectives)
        # One epoch of one minibatch: the rollout's policy forward is also the update's (see sample_rollout).
        self.fused_forward = (
            self.ppo_cfg.epochs == 1 and self.ppo_cfg.num_minibatches == 1 and self.reuses_rollout_forward
        )
        self.model_loader = model_loader
        self.optimizer_factory = optimizer
        self.eval_seed = evaluation.seed
        self.eval_samples = evaluation.num_samples
        kl = self.ppo_cfg.kl
        self.kl_ctl = build_kl_controller(kl.controller, kl.init_coef, kl.target, kl.horizon)
        self.policy: PolicyWithValueHeads | None = None
        self.tokenizer = None
        self._val_records: list[dict[str, Any]] = []
        self.last_eval: dict[str, Any] | None = None
        self.last_eval_records: list[dict[str, Any]] | None = None  # every response of that evaluation
        self.skipped_steps = 0
        self.rewards_on_error = rewards_on_error
        self.skipped_samples = 0
        # PPO iterations completed, counted here (checkpointed) rather than read from Lightning's loop
        # state, which validation inside fit() sees before it counts the iteration just finished.
        self.completed_iterations = 0
        self.last_eval_iteration: int | None = None
        self.diagnostics_every = diagnostics.every_n_iterations

    # ----------------------------------------------------------------------------------- set-up
    def configure_model(self) -> None:
        if self.policy is not None:
            return
        loaded = self.model_loader()
        self.tokenizer = loaded.tokenizer
        lora = self.model_cfg.lora
        svd_lora = None
        if self.conditioning is not None and self.conditioning.mode == "svd_lora":
            svd_lora = dataclasses.asdict(self.conditioning.svd_lora) | {
                "num_preferences": len(self.objectives)
            }
        self.policy = PolicyWithValueHeads(
            loaded.model,
            num_value_heads=len(self.trained_objectives),
            lora=dataclasses.asdict(lora) if lora.enabled and svd_lora is None else None,
            no_dropout=self.model_cfg.disable_dropout,
            gradient_checkpointing=self.model_cfg.gradient_checkpointing,
            svd_lora=svd_lora,
        )
        # from_pretrained returns eval mode, where Hugging Face skips gradient checkpointing (and
        # Lightning warns); dropout is already off, so train mode changes nothing else.
        self.policy.lm.train()
        self.policy.value_head.train()
        check_context_window(loaded.model.config, self.model_cfg, self.rollout_cfg)
        eos = {self.tokenizer.eos_token_id}
        gen_eos = loaded.model.generation_config.eos_token_id
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        self.register_buffer("eos_token_ids", torch.tensor(sorted(eos)), persistent=False)

    def setup(self, stage: str) -> None:
        self.configure_model()
        for reward in self.rewards.values():
            reward.to(self.device)
        if stage == "fit":
            distributed.decorrelate_rng()  # after the weights are built; a resume restores each rank's stream

    def configure_optimizers(self):
        heads = [p for p in self.policy.value_head.parameters() if p.requires_grad]
        head_ids = {id(p) for p in heads}
        trunk = [p for p in self.policy.parameters() if p.requires_grad and id(p) not in head_ids]
        if self.ppo_cfg.value_head_lr is None:
            return self.optimizer_factory(trunk + heads)
        # A zero-initialised head moves about lr per Adam step: at the policy's rate it cannot reach the
        # returns' scale within a short run (docs/stability.md, "value heads").
        return self.optimizer_factory(
            [{"params": trunk}, {"params": heads, "lr": self.ppo_cfg.value_head_lr}]
        )

    # ------------------------------------------------------------------------------ the iteration
    def training_step(self, batch: dict[str, list[str]], batch_idx: int) -> dict[str, Any]:
        """One PPO iteration on a batch of prompts.

        Returns:
            ``{"rollout": Rollout, "scores": (B,K)}``, which Lightning hands to the callbacks'
            ``on_train_batch_end`` as ``outputs`` (e.g. ``SampleTable``).
        """
        timer = PhaseTimer()
        with timer("rollout"):
            # forward: the rollout's policy forward with its graph when fused_forward, else None.
            # Conditioned: each prompt's own preference (B,K), in its prompt or the adapters; else the run's (K,).
            preference = self.draw_preferences(len(batch["prompt"])) if self.conditioning else self.preference
            rollout, forward = self.sample_rollout(
                batch["prompt"], keep_graph=self.fused_forward, preferences=preference
            )  # 1
        with timer("score"):
            rollout, scores = self.score(rollout)  # 2: (B,K)
        with timer("advantages"):
            preference = preference.to(scores)
            active = self.active_objectives(scores, rollout)  # (K,) bool
            satisfied = self.satisfied_samples(scores)  # (B,K) bool, or None
            # Per sample, an objective whose ceiling the sample reaches sits out of that sample's min.
            combine_active = active if satisfied is None else active & ~satisfied
            kl = ops.kl_penalty(rollout.logprobs, rollout.ref_logprobs, self.ppo_cfg.kl.estimator)
            trained_scores = self.combiner.trained_scores(scores, preference)  # (B,K')
            rewards = ops.shape_rewards(trained_scores, kl, rollout.response_mask, self.reward_kl_coef)  # 3
            advantages, returns = self.compute_advantages(rewards, rollout)  # 4: (B,T,K')
        diagnostics = self.measure_stationarity(rollout, scores, kl, timer)  # of pi_old, before the update
        with timer("update"):
            stats = self.ppo_update(
                rollout, advantages, returns, combine_active, timer, forward, preference
            )  # 5
        if self.combiner.excludes_objectives:
            stats["pareto/excluded"] = (~active).float()
        if satisfied is not None:
            stats["pareto/satisfied"] = ops.masked_mean(
                satisfied.to(scores.dtype), rollout.response_mask.any(-1)
            )
        stats["value/explained_var"] = ops.explained_variance(
            rollout.values, returns, rollout.response_mask, var_fn=distributed.masked_var
        )  # the rollout's values against the returns built from them, over all ranks' tokens
        stats.update(diagnostics)
        # The controller's target is a k1 sequence KL (TRL's semantics), whatever estimator shapes the rewards.
        k1 = ops.kl_penalty(rollout.logprobs, rollout.ref_logprobs, "k1")
        seq_kl = distributed.mean((k1 * rollout.response_mask).sum(-1).mean())  # over every rank's samples
        self.kl_ctl.update(float(seq_kl), n_steps=len(rollout.texts) * distributed.world_size())  # 6
        self.log_iteration(rollout, scores, stats, seq_kl, timer)
        self.completed_iterations += 1
        return {"rollout": rollout, "scores": scores}

    def score(self, rollout: Rollout) -> tuple[Rollout, torch.Tensor]:
        """Phase 2: (B,K) scores; with ``rewards_on_error=skip`` unscored samples leave the update.

        A reward error on any rank stops every rank (a lone failing rank would leave the others
        waiting in the next collective). Skipped samples keep their row, with an empty response mask.
        """
        error = None
        try:
            scores = score_rollout(self.rewards, rollout, self.global_iteration, self.rewards_on_error)
        except RewardError as err:
            error = err
        if not distributed.all_true(error is None, self.device):
            raise error or RewardError(
                f"a reward failed on another rank at iteration {self.global_iteration}; its log names the sample"
            )
        if self.rewards_on_error != "skip":
            return rollout, scores
        rollout, scores, skipped = mask_unscored(rollout, scores)
        skipped = distributed.sum_int(skipped, self.device)
        if skipped == len(rollout.texts) * distributed.world_size():
            raise RewardError(
                f"every sample of iteration {self.global_iteration} was skipped (rewards_on_error=skip): "
                "no reward gives finite scores, which is a bug in a reward rather than bad samples"
            )
        self.skipped_samples += skipped
        return rollout, scores

    def active_objectives(self, scores: torch.Tensor, rollout: Rollout) -> torch.Tensor:
        """(K,) bool: the objectives that take part in this iteration's combine (all, for the baselines).

        Left out of PAMA's min, so that they cannot veto a token:

        - an objective whose raw scores have a std below ``algorithm.min_score_std`` over every rank's
          scored samples. Its scores do not distinguish the samples, so it carries no preference
          direction this iteration; whitened, its advantage would be KL and value noise at unit
          variance, vetoing about half the tokens at random (and a constant score can make the
          combined advantage 0 everywhere). Warned once per objective.
        - an objective whose preference weight is below ``algorithm.veto_threshold`` (0: none), so a
          preference sweep can reach the front's ends.

        With none left the policy-gradient term is 0: the step fits the value loss alone (which still
        reaches the adapters through the shared trunk).
        """
        k = len(self.objectives)
        if not self.combiner.excludes_objectives:
            return torch.ones(k, dtype=torch.bool, device=scores.device)
        std = distributed.masked_var(scores, rollout.response_mask.any(-1)).sqrt()
        degenerate = std < self.min_score_std
        for i in degenerate.nonzero().flatten().tolist():
            name = self.objectives[i]
            if name not in self._warned_degenerate:
                self._warned_degenerate.add(name)
                log.warning(
                    "objective %r: its scores have std %.3g < algorithm.min_score_std=%g over iteration %d's "
                    "samples; they do not distinguish the samples, so the objective is left out of the "
                    "combine (it vetoes no token) this iteration and whenever this recurs "
                    "(train/pareto/excluded/%s)",
                    name, float(std[i]), self.min_score_std, self.global_iteration, name,
                )  # fmt: skip
        active = ~degenerate & (self.preference.to(scores) >= self.veto_threshold)
        if not active.any() and not self._warned_no_objective:
            self._warned_no_objective = True
            log.warning(
                "iteration %d: every objective is left out of the combine (degenerate scores or weight "
                "below algorithm.veto_threshold): the policy-gradient term is 0 and the step fits the "
                "value loss alone; this warning is not repeated (train/pareto/excluded/* are all 1)",
                self.global_iteration,
            )
        return active

    def score_ceilings(self) -> torch.Tensor:
        """(K,) float32: each objective's ``Reward.ceiling``, nan where its reward has none.

        Raises:
            ValueError: no objective's reward declares a ceiling, so ``algorithm.satisfied_at_ceiling``
                would change nothing.
        """
        ceilings = [getattr(self.rewards[name], "ceiling", None) for name in self.objectives]
        if all(c is None for c in ceilings):
            raise ValueError(
                "algorithm.satisfied_at_ceiling=true, but no objective's reward has a ceiling (objectives: "
                f"{', '.join(self.objectives)}); a ceiling is the largest score a reward can give, e.g. "
                "LengthReward's high, and a reward wrapped by reward.normalize has none (its training "
                "scores are not raw): use false, or an objective with a clipped reward"
            )
        return torch.tensor([torch.nan if c is None else float(c) for c in ceilings], dtype=torch.float32)

    def satisfied_samples(self, scores: torch.Tensor) -> torch.Tensor | None:
        """(B,K) bool: the samples scoring their objective's ceiling (``algorithm.satisfied_at_ceiling``), or None.

        Such a sample has satisfied the objective: no response scores higher, so the objective has
        nothing left to ask of it. Left in, it would still take part in the min at the sample's tokens,
        and once most responses reach the ceiling (a length cap the policy has learned to fill) it
        binds the min there with a small advantage (how far the sample stands above a batch mean
        near the cap, plus KL and value noise), throttling the step the other objectives ask for.
        Left out, the sample's tokens follow the other objectives' min; the satisfied objective loses
        nothing, since its reward cannot rise there and Noon still keeps its negative advantages
        (below the ceiling) vetoing tokens of the samples that do not reach it.
        """
        if self.ceilings is None:
            return None
        ceilings = self.ceilings.to(scores)
        # Scores are float32; a clipped reward returns its bound exactly, so a relative 1e-6 is ample.
        tolerance = 1e-6 * ceilings.abs().clamp(min=1)
        return ~torch.isnan(ceilings) & (scores >= ceilings - tolerance)

    @property
    def global_iteration(self) -> int:
        """Iterations completed so far: the 0-based index of the one running in ``training_step``."""
        return self.completed_iterations

    def draw_preferences(self, n: int) -> torch.Tensor:
        """(n,K) float32: this iteration's preferences for this rank's n prompts, on the
        ``conditioning.decimals`` grid. Seeded by (seed, iteration, rank), so a resumed run draws
        what the interrupted one would have."""
        c = self.conditioning
        seed = [self.seed, self.global_iteration, distributed.rank()]
        draws = sample_preferences(n, len(self.objectives), c.concentration, c.corner_share, seed)
        return quantize_preferences(draws, 10**c.decimals).to(self.device)

    def condition_prompts(self, prompts: list[str], preferences: torch.Tensor | None) -> list[str]:
        """The prompts the policy reads: with ``conditioning=prompt`` each behind its preference's line
        (``preference_prefix``; a (K,) preference, or None for the run's, applies to all); else as given
        (svd_lora carries the preference in the adapters)."""
        if self.conditioning is None or self.conditioning.mode != "prompt":
            return list(prompts)
        rows = (self.preference if preferences is None else preferences).expand(len(prompts), -1).tolist()
        digits = self.conditioning.decimals
        lines = [preference_prefix(w, self.objectives, digits) for w in rows]
        return [line + self.fit_prompt(line, p) for line, p in zip(lines, prompts, strict=True)]

    def fit_prompt(self, line: str, prompt: str) -> str:
        """``prompt``, cut from the left so that ``line + prompt`` fits ``model.max_prompt_length``.

        Tokenization cuts over-long queries from the left, which would drop the preference line
        first; the prompt's own beginning goes instead (the usual warning says when).
        """
        tok, max_len = self.tokenizer, self.model_cfg.max_prompt_length
        for _ in range(4):  # a decoded cut can re-encode a token longer; a few rounds settle it
            texts, add_special = self.query_texts([line + prompt])
            excess = len(tok(texts[0], add_special_tokens=add_special).input_ids) - max_len
            if excess <= 0:
                break
            self.warn_truncation(max_len)
            ids = tok(prompt, add_special_tokens=False).input_ids
            prompt = tok.decode(ids[min(excess, len(ids)) :])
        return prompt

    def sample_rollout(
        self,
        prompts: list[str],
        do_sample: bool = True,
        keep_graph: bool = False,
        preferences: torch.Tensor | None = None,
    ) -> tuple[Rollout, PolicyForward | None]:
        """Phase 1: sample and record pi_old, pi_ref log-probabilities and values, all without grad.

        With ``keep_graph`` (``fused_forward``: one PPO epoch of one minibatch) the policy forward
        runs with grad and comes back as well, for ``ppo_update`` to differentiate instead of running
        a forward of its own: pi_old is exactly the policy being updated, so the ratio is 1, as it
        would be after a second, identical forward.

        Conditioned, the policy samples each prompt at its preference (``preferences`` (B,K), (K,) or
        None for the run's): written before the prompt (``condition_prompts``), or set on the SVD-LoRA
        adapters; the rollout keeps the prompts as given, which is what the rewards read, and the
        rows' preferences, which the update's forwards set on the adapters again.

        Returns:
            the rollout, and the policy forward with its graph (``keep_graph``) or None.
        """
        cfg = self.rollout_cfg
        rows = None
        if self.conditioning is not None:
            rows = (self.preference if preferences is None else preferences).to(self.device)
            rows = rows.expand(len(prompts), -1).float()
        with torch.no_grad():
            queries, query_mask = self.tokenize_prompts(self.condition_prompts(prompts, preferences))
            responses = self.policy.generate(
                queries,
                query_mask,
                eos_token_ids=self.eos_token_ids.tolist(),
                pad_token_id=self.tokenizer.pad_token_id,
                max_new_tokens=cfg.max_new_tokens,
                min_new_tokens=cfg.min_new_tokens,
                temperature=self.temperature,
                top_k=cfg.top_k,
                top_p=cfg.top_p,
                do_sample=do_sample,
                merge_adapters=cfg.merge_adapters,
                preferences=rows,
                sampling_dtype=self.sampling_dtype,
            )
            response_mask = response_mask_from_eos(responses, self.eos_token_ids)
            responses = responses.masked_fill(~response_mask, self.tokenizer.pad_token_id)
            input_ids = torch.cat([queries, responses], dim=1)
            attention_mask = torch.cat([query_mask, response_mask], dim=1)
            num_response = responses.shape[1]
            ref_logits = self.policy.reference_logits(input_ids, attention_mask, num_response)
            ref_logprobs = ops.logprobs_from_logits(ref_logits, responses, self.temperature)
            del ref_logits
        with torch.set_grad_enabled(keep_graph):
            logits, values = self.policy(input_ids, attention_mask, num_response, preferences=rows)
            logprobs = ops.logprobs_from_logits(logits, responses, self.temperature)
        with torch.no_grad():
            entropy = ops.entropy_from_logits(logits, self.temperature) if keep_graph else None
        forward = PolicyForward(logprobs, values, entropy) if keep_graph else None
        del logits
        logprobs, values = logprobs.detach(), values.detach()
        m = response_mask
        texts = self.tokenizer.batch_decode(
            responses.masked_fill(~m, self.tokenizer.pad_token_id), skip_special_tokens=True
        )
        rollout = Rollout(
            input_ids=input_ids,
            attention_mask=attention_mask,
            responses=responses,
            response_mask=m,
            logprobs=logprobs * m,
            ref_logprobs=ref_logprobs * m,
            values=values * m.unsqueeze(-1),
            prompts=list(prompts),
            texts=texts,
            preferences=rows,
        )
        return rollout, forward

    def query_texts(self, prompts: list[str]) -> tuple[list[str], bool]:
        """The texts the policy reads (through the chat template when the model has one), and whether
        tokenizing them adds the special tokens."""
        tok = self.tokenizer
        if self.model_cfg.chat_template and getattr(tok, "chat_template", None):
            texts = [
                tok.apply_chat_template(
                    [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
                )
                for p in prompts
            ]
            return texts, False
        return list(prompts), True

    def warn_truncation(self, max_len: int) -> None:
        if not getattr(self, "_warned_truncation", False):
            log.warning(
                "Prompts longer than model.max_prompt_length=%d tokens are cut from the left", max_len
            )
            self._warned_truncation = True

    def tokenize_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded (B,Tq) query ids and mask, through the chat template when the model has one."""
        tok = self.tokenizer
        texts, add_special = self.query_texts(prompts)
        max_len = self.model_cfg.max_prompt_length
        enc = tok(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_len,
            add_special_tokens=add_special,
        )
        if enc.attention_mask.sum(-1).max() >= max_len:
            self.warn_truncation(max_len)
        return enc.input_ids.to(self.device), enc.attention_mask.to(self.device).bool()

    def compute_advantages(
        self, rewards: torch.Tensor, rollout: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase 4: per-objective GAE, per-objective whitening and (where the algorithm asks) Noon.

        Args:
            rewards: (B,T,K') shaped per-token rewards of the trained objectives.
            rollout: the iteration's samples (values (B,T,K'), response mask).

        Returns:
            advantages and returns, both (B,T,K').
        """
        cfg = self.ppo_cfg
        advantages, returns = ops.gae(
            rewards, rollout.values, rollout.response_mask, cfg.gamma, cfg.gae_lambda
        )
        if cfg.whiten_advantages:
            advantages = distributed.masked_whiten(advantages, rollout.response_mask)  # all ranks' tokens
        if self.combiner.noon:
            advantages = ops.noon(advantages)
        return advantages, returns

    def measure_stationarity(
        self, rollout: Rollout, scores: torch.Tensor, kl: torch.Tensor, timer: PhaseTimer
    ) -> dict[str, torch.Tensor]:
        """``train/diag/*``: measured every ``diagnostics.every_n_iterations``, NaN in between, {} when off."""
        if not self.diagnostics_every:
            return {}
        if self.global_iteration % self.diagnostics_every:
            timer.seconds["diagnostics"] = 0.0
            return self.unmeasured_diagnostics()
        with timer("diagnostics"):
            return self.pareto_diagnostics(rollout, scores, kl)

    def pareto_diagnostics(self, rollout: Rollout, scores: torch.Tensor, kl: torch.Tensor) -> dict:
        """Pareto stationarity of the policy about to be updated, measured alike for every algorithm.

        Objective i's own loss is the clipped surrogate with objective i's whitened Monte-Carlo
        return of its KL-shaped reward: no value baseline, which morlhf's single head could not give
        per objective and which would make the measure depend on each algorithm's value heads; no
        Noon, which only some algorithms apply. Taken before the update, at ratio 1, its gradient is
        objective i's policy gradient. The gradients come from the iteration's first minibatch.

        Args:
            rollout: the iteration's samples.
            scores: (B,K) raw scores, one per objective (not morlhf's scalarised one).
            kl: (B,T) per-token KL estimates of the reward shaping.

        Returns:
            ``mgda_step.pareto_diagnostic``'s detached stats.
        """
        cfg = self.ppo_cfg
        mask = rollout.response_mask
        rewards = ops.shape_rewards(scores, kl, mask, self.reward_kl_coef)
        returns, _ = ops.gae(rewards, torch.zeros_like(rewards), mask, cfg.gamma, 1.0)
        kl_share = self.kl_share(returns, scores, kl, mask)
        advantages = distributed.masked_whiten(returns, mask)
        idx = torch.arange(rollout.responses.shape[0] // cfg.num_minibatches, device=self.device)
        # With dropout on, the extra forward would draw from the random stream the update then uses.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            stats = pareto_diagnostic(self.policy, rollout, advantages, idx, cfg.clip_coef, self.temperature)
        return {**stats, "diag/kl_share": kl_share}

    def kl_share(
        self, returns: torch.Tensor, scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """(K,) how much of each objective's return spread is the KL penalty's, in [0, 1].

        A return splits into the score's part (the score, discounted from the last token) and the
        KL-penalty part, which every objective shares. The share is var(KL part) / (var(KL part) +
        var(score part)) over every rank's response tokens. Near 1, whitening turns the objective into
        a second KL term (an objective whose scores barely vary); near 0, its scores drive its advantage.
        """
        cfg = self.ppo_cfg
        score_rewards = ops.shape_rewards(scores, kl, mask, 0.0)
        score_returns, _ = ops.gae(score_rewards, torch.zeros_like(score_rewards), mask, cfg.gamma, 1.0)
        var_score = distributed.masked_var(score_returns, mask)
        var_kl = distributed.masked_var(returns - score_returns, mask)
        total = var_kl + var_score
        return torch.where(
            total > 0, var_kl / total.clamp(min=torch.finfo(total.dtype).tiny), torch.zeros_like(total)
        )

    def unmeasured_diagnostics(self) -> dict[str, torch.Tensor]:
        """NaN for every ``train/diag/*`` value, logged on the iterations between two measurements.

        Lightning logs a step metric's last value again at every step that does not log it, which
        would read as a fresh measurement.
        """
        nan = torch.full((len(self.objectives),), float("nan"), device=self.device)
        stats = {"diag/min_norm": nan[0], "diag/weight": nan, "diag/grad_norm": nan, "diag/kl_share": nan}
        if len(self.objectives) > 1:
            stats["diag/grad_cos"] = nan[0]
        return stats

    def ppo_update(
        self,
        rollout: Rollout,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        active: torch.Tensor,
        timer: PhaseTimer,
        forward: PolicyForward | None = None,
        preference: torch.Tensor | None = None,
    ) -> dict:
        """Phase 5: PPO epochs over shuffled minibatches with the combine step in each.

        Args:
            rollout: the iteration's samples.
            advantages: (B,T,K') per-objective advantages.
            returns: (B,T,K') per-objective returns.
            active: (K,) bool, the objectives that take part in the combine (``active_objectives``), or
                (B,K) one row per sample (``algorithm.satisfied_at_ceiling``).
            timer: accumulates the minibatches' phases.
            forward: the rollout's policy forward with its graph (``fused_forward``), which the first
                minibatch, then the only one, differentiates instead of running a forward.
            preference: (K,) the run's preference (None: ``self.preference``), or (B,K) each
                sample's own (conditioning).
        """
        cfg = self.ppo_cfg
        opt = self.optimizers()
        batch_size = rollout.responses.shape[0]
        mb_size = batch_size // cfg.num_minibatches
        preference = self.preference if preference is None else preference
        pref = self.combiner.trained_preference(preference.to(advantages))  # (K',) or (B,K')
        acc: dict[str, list[torch.Tensor]] = {}
        for _ in range(cfg.epochs):
            for idx in torch.randperm(batch_size, device=self.device).split(mb_size):
                opt.zero_grad(set_to_none=True)
                minibatch_forward = forward.rows(idx) if forward is not None else None
                forward = None  # its graph is freed by the backward: good for one minibatch only
                rows_pref = pref[idx] if pref.dim() == 2 else pref
                rows_active = active[idx] if active.dim() == 2 else active
                loss, stats = self.minibatch_backward(
                    rollout, advantages, returns, idx, rows_pref, rows_active, timer, minibatch_forward
                )
                stats["policy/grad_norm"] = self.apply_gradients(opt, loss)
                for k, v in stats.items():
                    acc.setdefault(k, []).append(v)
        return {k: torch.stack(v).mean(0) for k, v in acc.items()}

    def minibatch_backward(
        self,
        rollout: Rollout,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        idx: torch.Tensor,
        pref: torch.Tensor,
        active: torch.Tensor,
        timer: PhaseTimer,
        forward: PolicyForward | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One minibatch's loss, backward into ``.grad``: the combine step, then the PPO losses.

        Args:
            idx: (M,) the minibatch's rows.
            pref: (K',) preference over the trained objectives, or (M,K') the rows' own (conditioning).
            active: (K',) bool, or (M,K') the rows' own masks.
            forward: the rows' policy forward with grad, or None to run one.
            (the others as in ``ppo_update``.)

        Returns:
            the 0-dim loss and the minibatch's detached stats.
        """
        cfg = self.ppo_cfg
        mask = rollout.response_mask[idx]
        if forward is None:
            forward = self.policy_forward(rollout, idx)
        logprobs, values = forward.logprobs, forward.values
        entropy = ops.masked_mean(forward.entropy, mask)
        ratio = torch.exp(logprobs - rollout.logprobs[idx]).detach()
        with timer("pareto_solve"):
            combined, weights = self.combiner.combine(
                advantages[idx], mask, pref, ratio, cfg.clip_coef, active
            )
        pg_loss, pg_stats = policy_loss(logprobs, rollout.logprobs[idx], combined, mask, cfg.clip_coef)
        vf_loss, vf_per_head = value_loss(values, rollout.values[idx], returns[idx], mask, cfg.vf_clip)
        loss = pg_loss + cfg.vf_coef * vf_loss
        kl_term = self.kl_loss_term(logprobs, rollout.ref_logprobs[idx], mask)
        if kl_term is not None:
            loss = loss + kl_term
        self.manual_backward(loss)
        pareto = combine_stats(advantages[idx], combined.detach(), weights.detach(), mask)
        stats = {
            "loss/policy": pg_loss.detach(),
            "loss/value": vf_loss.detach(),
            "loss/value_heads": vf_per_head,
            "policy/entropy": entropy,
            "policy/clipfrac": pg_stats["clipfrac"],
            "policy/approx_kl": pg_stats["approx_kl"],
            "pareto/binding": pareto["binding"],
            "pareto/active_frac": pareto["active_frac"],
            "pareto/combined_adv": ops.masked_mean(combined.detach(), mask),
        }
        if self.combiner.noon:
            stats["pareto/noon_zero_frac"] = pareto["zero_frac"]
        if kl_term is not None:
            stats["loss/kl"] = kl_term.detach()
        return loss, stats

    @property
    def reward_kl_coef(self) -> float:
        """beta in the per-token rewards: the controller's, or 0 where the KL is a loss term (``ppo.kl.placement``)."""
        return self.kl_ctl.value if self.ppo_cfg.kl.placement == "reward" else 0.0

    def kl_loss_term(
        self, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor | None:
        """beta * KL(pi_theta || pi_ref) over a minibatch's tokens with ``ppo.kl.placement=loss``, else None.

        Args:
            logprobs: (M,T) log pi_theta of the sampled tokens, with grad.
            ref_logprobs: (M,T) log pi_ref of the same tokens, from the rollout.
            mask: (M,T) bool, the real response tokens.
        """
        kl = self.ppo_cfg.kl
        if kl.placement != "loss":
            return None
        return self.kl_ctl.value * kl_loss(logprobs, ref_logprobs, mask, kl.estimator)

    def policy_forward(self, rollout: Rollout, idx: torch.Tensor) -> PolicyForward:
        """The policy's forward over the rows idx (M,): log-probs and values with grad, entropy without."""
        logits, values = self.policy(
            rollout.input_ids[idx],
            rollout.attention_mask[idx],
            rollout.num_response,
            preferences=rollout.rows(idx),
        )
        logprobs = ops.logprobs_from_logits(logits, rollout.responses[idx], self.temperature)
        with torch.no_grad():
            entropy = ops.entropy_from_logits(logits, self.temperature)
        return PolicyForward(logprobs, values, entropy)

    def apply_gradients(self, opt, loss: torch.Tensor) -> torch.Tensor:
        """Clip and step on the gradients in ``.grad``; skip the step when the loss or a gradient is not finite.

        Returns:
            0-dim float32 total norm of the trainable gradients before clipping.
        """
        norms = [p.grad.detach().float().norm() for p in self.policy.parameters() if p.grad is not None]
        norms = torch.stack(norms) if norms else torch.zeros(1, device=self.device)
        if self.finite_gradients(loss, norms):
            if self.ppo_cfg.max_grad_norm:
                self.clip_gradients(
                    opt, gradient_clip_val=self.ppo_cfg.max_grad_norm, gradient_clip_algorithm="norm"
                )
            opt.step()
        else:
            self.skipped_steps += 1
        # Free the gradients now: kept until the next backward they would sit through the next rollout,
        # a parameter-sized block on top of the forward's activations under full fine-tuning.
        opt.zero_grad(set_to_none=True)
        return torch.linalg.vector_norm(norms)

    def finite_gradients(self, loss: torch.Tensor, grad_norms: torch.Tensor) -> bool:
        """True when the loss and every gradient are finite on every rank: a NaN never reaches the optimizer step.

        Args:
            loss: the minibatch's 0-dim loss.
            grad_norms: (P,) the norm of each trainable gradient.
        """
        finite = bool(torch.isfinite(loss))
        if not finite:
            log.warning(
                "Non-finite loss %s at iteration %d: optimizer step skipped",
                loss.item(),
                self.global_iteration,
            )
        elif not torch.isfinite(grad_norms).all():
            log.warning("Non-finite gradient at iteration %d: optimizer step skipped", self.global_iteration)
            finite = False
        return distributed.all_true(finite, self.device)  # every rank steps, or none does

    # ------------------------------------------------------------------------------------ logging
    def log_iteration(self, rollout: Rollout, scores, stats, seq_kl, timer: PhaseTimer) -> None:
        m: dict[str, Any] = {}
        for i, name in enumerate(self.objectives):
            m[f"train/reward/{name}"] = ops.masked_mean(scores[:, i], rollout.response_mask.any(-1))
        # Per-objective stats: key -> (metric prefix, the objectives its entries belong to).
        trained, scored = self.trained_objectives, self.objectives
        per_objective = {
            "loss/value_heads": ("loss/value", trained),
            "pareto/binding": ("pareto/binding_frac", trained),
            "pareto/weight": ("pareto/weight", trained),
            "value/explained_var": ("value/explained_var", trained),
            "pareto/noon_zero_frac": ("pareto/noon_zero_frac", trained),
            "diag/weight": ("diag/weight", scored),
            "diag/grad_norm": ("diag/grad_norm", scored),
            "diag/kl_share": ("diag/kl_share", scored),
            "pareto/excluded": ("pareto/excluded", scored),
            "pareto/satisfied": ("pareto/satisfied", scored),
        }
        for key, value in stats.items():
            if value.dim() == 0:
                m[f"train/{key}"] = value
            elif key in per_objective:
                prefix, names = per_objective[key]
                for i, name in enumerate(names):
                    m[f"train/{prefix}/{name}"] = value[i]
        m["train/kl/ref"] = seq_kl
        m["train/kl/coef"] = self.kl_ctl.value
        m["train/response_length"] = rollout.lengths.float().mean()
        m["train/skipped_steps"] = float(self.skipped_steps)
        m["train/skipped_samples"] = float(self.skipped_samples)
        for phase, seconds in timer.seconds.items():
            m[f"train/time/{phase}"] = seconds
        for name, reward in self.rewards.items():
            for key, value in reward.metrics().items():
                m[f"train/reward_stats/{key}/{name}"] = value
        m = distributed.mean_floats(m, self.device)  # logged means cover every rank's samples
        # The row goes to the loggers now, as Lightning's own logging would (same step and epoch
        # columns), not after the batch-end callbacks: ModelCheckpoint saves in on_train_batch_end,
        # and a kill between that save and Lightning's logging lost the row for good (the resumed
        # run starts after this iteration).
        row = {key: float(value) for key, value in m.items()} | {"epoch": self.current_epoch}
        for logger in self.loggers:
            logger.log_metrics(row, step=self.global_iteration)
            logger.save()
        self.log_dict(m, logger=False, on_step=True, on_epoch=False, batch_size=len(rollout.texts))
        bar = {f"r/{name}": m[f"train/reward/{name}"] for name in self.objectives}
        bar["kl"] = m["train/kl/ref"]
        self.log_dict(
            bar, prog_bar=True, logger=False, on_step=True, on_epoch=False, batch_size=len(rollout.texts)
        )

    # --------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_records = []
        self._val_error: str | None = None
        if self.eval_grid is not None:
            # Per grid point: the sums of the finite raw scores (P,K) and their counts (P,).
            self._grid_sums = torch.zeros(self.eval_grid.shape, dtype=torch.float64)
            self._grid_counts = torch.zeros(len(self.eval_grid), dtype=torch.float64)

    def validation_step(self, batch: dict[str, list[str]], batch_idx: int) -> None:
        # Fixed sampling seed per batch: the same policy gives the same responses at every evaluation.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.eval_seed + batch_idx)
            rollout, _ = self.sample_rollout(batch["prompt"])
        try:
            scores = score_rollout(self.raw_rewards, rollout, self.global_iteration, self.rewards_on_error)
        except RewardError as err:
            if distributed.world_size() == 1:
                raise
            # Ranks may hold different numbers of validation batches: report at the epoch's end, together.
            self._val_error = self._val_error or str(err)
            return
        kl = ((rollout.logprobs - rollout.ref_logprobs) * rollout.response_mask).sum(-1)
        ref_logprob = (rollout.ref_logprobs * rollout.response_mask).sum(-1)  # (B,) fluency under pi_ref
        for b in range(len(rollout.texts)):
            if not torch.isfinite(scores[b]).all():  # rewards_on_error=skip: left out of the summary
                continue
            self._val_records.append(
                {
                    "prompt": rollout.prompts[b],
                    "response": rollout.texts[b],
                    "scores": {name: float(scores[b, i]) for i, name in enumerate(self.objectives)},
                    "kl_ref": float(kl[b]),
                    "ref_logprob": float(ref_logprob[b]),
                    "length": int(rollout.lengths[b]),
                }
            )
        if self.eval_grid is not None:
            self.validate_grid(batch["prompt"], batch_idx)

    def validate_grid(self, prompts: list[str], batch_idx: int) -> None:
        """Conditioned: sample and score the batch at every ``eval_grid`` preference, as validation does
        at the run's (same seed), adding to the per-point sums of finite raw scores."""
        for j, point in enumerate(self.eval_grid):
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.eval_seed + batch_idx)
                rollout, _ = self.sample_rollout(prompts, preferences=point.to(self.device))
            try:
                scores = score_rollout(
                    self.raw_rewards, rollout, self.global_iteration, self.rewards_on_error
                )
            except RewardError as err:
                if distributed.world_size() == 1:
                    raise
                self._val_error = self._val_error or str(err)
                return
            finite = torch.isfinite(scores).all(-1)
            self._grid_sums[j] += scores[finite].double().sum(0).cpu()
            self._grid_counts[j] += float(finite.sum())

    def grid_metrics(self, summary: dict[str, Any]) -> dict[str, float]:
        """``val/conditioning/*`` of the validation just finished, also kept in ``summary["preference_grid"]``.

        The hypervolume of the grid's mean rewards against the reference point (the first validation's
        mean rewards: the reference policy's, before training), and per objective the Spearman
        correlation over the grid of its weight with its mean reward (controllability).
        """
        from pama_lit.fronts.metrics import spearman
        from pama_lit.fronts.torch_metrics import HypervolumeMetric

        parts = distributed.gather_objects((self._grid_sums, self._grid_counts))  # every rank's
        sums, counts = sum(p[0] for p in parts), sum(p[1] for p in parts)
        means = sums / counts.clamp(min=1)[:, None]  # (P,K)
        if self.reference_point is None:
            self.reference_point = [summary["rewards"][name]["mean"] for name in self.objectives]
        hv = HypervolumeMetric(self.reference_point, sync_on_compute=False)
        hv.update(means)
        grid = self.eval_grid.double()
        rho = {
            name: spearman(grid[:, i].numpy(), means[:, i].numpy()) for i, name in enumerate(self.objectives)
        }
        summary["preference_grid"] = {
            "preferences": self.eval_grid.tolist(),
            "rewards": means.tolist(),
            "reference_point": list(self.reference_point),
            "hypervolume": float(hv.compute()),
            "spearman": rho,
        }
        metrics = {"val/conditioning/hypervolume": summary["preference_grid"]["hypervolume"]}
        metrics.update({f"val/conditioning/spearman/{name}": value for name, value in rho.items()})
        return metrics

    def on_validation_epoch_end(self) -> None:
        from pama_lit.run.results import summarise

        errors = [e for e in distributed.gather_objects(self._val_error) if e]
        if errors:
            raise RewardError(errors[0])
        records = [r for part in distributed.gather_objects(self._val_records) for r in part]  # every rank's
        summary = summarise(records, self.objectives, self.eval_samples)
        self.last_eval = summary
        self.last_eval_records = records
        self.last_eval_iteration = self.global_iteration
        metrics = {f"val/reward/{name}": summary["rewards"][name]["mean"] for name in self.objectives}
        metrics["val/kl/ref"] = summary["kl_ref"]
        metrics["val/response_length"] = summary["response_length"]
        metrics.update({f"val/fluency/{name}": value for name, value in summary["fluency"].items()})
        if self.eval_grid is not None and records:
            metrics.update(self.grid_metrics(summary))
        self.log_dict(metrics, sync_dist=False, batch_size=max(1, len(records)))

    # -------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in self._trainable_keys()
        }
        checkpoint["pama"] = {
            "objectives": self.objectives,
            "algorithm": self.combiner.name,
            "preference": self.preference.tolist(),
            "conditioning": self.conditioning_state(),
            "reference_point": self.reference_point,
            "kl_controller": self.kl_ctl.state_dict(),
            "skipped_steps": self.skipped_steps,
            "skipped_samples": self.skipped_samples,
            "completed_iterations": self.completed_iterations,
            "reward_normalizers": self._normalizers_state(),
            "wandb_id": self.wandb_run_id(),  # a run resumed in its folder continues this W&B run
            # One entry per rank, in types that torch.load(weights_only=True) accepts.
            "rng": distributed.gather_objects(capture_rng()),
        }

    def wandb_run_id(self) -> str | None:
        """The id of the W&B run this run logs to (rank 0 writes checkpoints and holds it), else None."""
        from lightning.pytorch.loggers import WandbLogger

        ids = [lg.version for lg in self.loggers if isinstance(lg, WandbLogger)]
        return str(ids[0]) if ids and ids[0] else None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("pama")
        if state is None:
            raise ValueError("this checkpoint was not written by pama_lit (no 'pama' section)")
        if list(state["objectives"]) != self.objectives:
            raise ValueError(
                f"checkpoint objectives {state['objectives']} differ from this run's {self.objectives}; "
                "resume with the same objective= setting"
            )
        saved = state.get("conditioning", {"mode": "none"})  # checkpoints from before conditioning
        if saved != self.conditioning_state():
            raise ValueError(
                f"checkpoint conditioning {saved} differs from this run's {self.conditioning_state()}; "
                "resume with the same conditioning= setting"
            )
        self.reference_point = state.get("reference_point")
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self._load_normalizers(state.get("reward_normalizers", {}))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.skipped_samples = int(state.get("skipped_samples", 0))
        steps_per_iteration = self.ppo_cfg.epochs * self.ppo_cfg.num_minibatches
        self.completed_iterations = int(
            state.get("completed_iterations", checkpoint.get("global_step", 0) // steps_per_iteration)
        )
        # A checkpoint written at its run's last iteration has Lightning's epoch marked as on its last
        # batch, so a run that raises `iterations` and continues it would end at once, training nothing.
        # This run's data (the iterations after `completed_iterations`) decides where the epoch ends.
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
        if isinstance(progress, dict) and progress.get("is_last_batch"):
            progress["is_last_batch"] = False
        states = state["rng"]
        if len(states) == distributed.world_size():
            restore_rng(states[distributed.rank()])
        else:
            log.warning(
                "checkpoint was written by %d process(es), this run has %d: sampling continues from "
                "rank 0's generator state, not exactly as the interrupted run would have",
                len(states), distributed.world_size(),
            )  # fmt: skip
            restore_rng(states[0])
            distributed.decorrelate_rng()

    def conditioning_state(self) -> dict[str, Any]:
        """The conditioning as checkpoints and ``final/conditioning.json`` record it (``svd_lora``'s
        settings with that mode only, so that a prompt run's record is what it was before svd_lora)."""
        if self.conditioning is None:
            return {"mode": "none"}
        state = dataclasses.asdict(self.conditioning)
        if self.conditioning.mode != "svd_lora":
            del state["svd_lora"]
        return state

    def _normalizers_state(self) -> dict[str, dict]:
        return {k: r.state_dict() for k, r in self.rewards.items() if isinstance(r, Normalized)}

    def _load_normalizers(self, saved: dict[str, dict]) -> None:
        if set(saved) != set(self._normalizers_state()):
            raise ValueError(
                f"checkpoint normalises objectives {sorted(saved)}, this run {sorted(self._normalizers_state())}; "
                "resume with the same reward.normalize setting"
            )
        for name, state in saved.items():
            self.rewards[name].load_state_dict(state)

    def _trainable_keys(self) -> set[str]:
        return {f"policy.{k}" for k in self.policy.trainable_state_dict()}
