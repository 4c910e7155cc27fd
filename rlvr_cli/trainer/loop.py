"""The GRPO loop. ``train_step`` reads as the stage table of the README:

    data -> rollout -> reward -> advantage -> old log-probs -> method -> loss + step -> metrics
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rlvr_cli import diagnostics
from rlvr_cli import dist as ddp
from rlvr_cli.advantages import grpo_advantages, zero_std_groups
from rlvr_cli.configs import TrainConfig
from rlvr_cli.errors import UserError
from rlvr_cli.eval import sample_and_grade, summarize_samples
from rlvr_cli.losses import agg_loss, kl_penalty, masked_mean, micro_batch_loss
from rlvr_cli.methods import StepContext
from rlvr_cli.stats import entropy_dynamics
from rlvr_cli.models import has_dropout
from rlvr_cli.progress import StepProgress
from rlvr_cli.rewards.functions import RewardInputs, score as reward_score
from rlvr_cli.rollout.correction import importance_weights, mismatch_metrics, weight_metrics
from rlvr_cli.rollout.config import SamplingSpec
from rlvr_cli.trainer import checkpoint as ckpt
from rlvr_cli.trainer.actor import Actor, Totals, rows
from rlvr_cli.trainer.setup import RunParts, build_run
from rlvr_cli.trainer.signals import GracefulStop, StepAbandoned, exit_code, name as signal_name
from rlvr_cli.timing import StageTimer
from rlvr_cli.typed import to_dict
from rlvr_cli.types import MethodOutput, PolicyBatch, Rollouts, TrainBatch

log = logging.getLogger(__name__)
FAULT_KILL_ENV = "RLVR_FAULT_KILL_AT_STEP"  # fault injection for the resume test: SIGKILL after step N
# fault injection for the graceful-stop tests: "<step>:<SIGNAL>[:<rank>]" sends this process that signal
# while step <step> generates its rollouts (on every rank, or on the one named)
FAULT_SIGNAL_ENV = "RLVR_FAULT_SIGNAL"


def _inject_signal(step: int, rank: int) -> None:
    spec = os.environ.get(FAULT_SIGNAL_ENV, "").split(":")
    if len(spec) >= 2 and spec[0] == str(step) and (len(spec) == 2 or spec[2] == str(rank)):
        os.kill(os.getpid(), getattr(signal, spec[1]))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class GRPOTrainer:
    """One policy, one method, one run folder. ``fit()`` trains to ``trainer.max_steps``."""

    def __init__(self, parts: RunParts):
        """A run of ``parts`` (``trainer.setup.build_run``); ``GRPOTrainer.from_config(cfg, out_dir)`` builds them."""
        cfg = self.cfg = parts.cfg
        self.out_dir = parts.out_dir
        self.algo, self.rollout_cfg, self.trainer_cfg = cfg.algo, cfg.rollout, cfg.trainer
        process, data = parts.process, parts.data
        self.device, self.distributed, self.rank, self.world = (process.device, process.distributed, process.rank,
                                                                process.world)
        self.tokenizer = parts.tokenizer
        self.train_prompts, self.train_report = data.train_prompts, data.train_report
        self.test_prompts, self.test_report, self.sampler = data.test_prompts, data.test_report, data.sampler
        self.method, self.algo_clip, self.clip = parts.method, parts.algo_clip, parts.clip
        self.grader, self.reward_terms = parts.grader, parts.reward_terms
        self.precision, self.engine, self.lora = parts.policy.precision, parts.policy.engine, parts.policy.lora
        self.actor, self.stop, self.rollout, self.tracker = parts.actor, parts.stop, parts.rollout, parts.tracker
        self.resume_from = parts.resume_from
        # method/grad_ratio and grad_cos every N steps (rlvr_cli.diagnostics; 0 = off)
        self.diagnose_every = self.trainer_cfg.diagnose_every
        self._diagnosis: dict[str, float] = {}  # the current step's, merged into update()'s metrics
        self._diagnose_at: tuple[int, int] | None = None  # (epoch, mini-batch) diagnosed in this step
        self.term_values: list[dict[str, list[float]]] = []  # each reward term's values, per sampling round
        resumed = parts.resumed
        self.step, self.bad_streak, self.prev_entropy = (resumed.step, resumed.bad_streak, resumed.prev_entropy) \
            if resumed else (0, 0, None)
        self.saved_step: int | None = self.step if resumed else None  # the newest checkpoint this process wrote
        self.gen_s = 0.0  # generation seconds of the current step (all refill rounds)
        self.timer = StageTimer(self.device)  # timing_s/<stage> of the current step
        self.stopper = GracefulStop(self.trainer_cfg.stop_mode, abandon_allowed=self.world == 1)
        self.stopped_by: int | None = None  # the signal that ended the run early (``exit_code`` gives the status)
        r, v = self.rollout_cfg, cfg.val
        self.spec = SamplingSpec(r.temperature, r.top_p, r.max_new_tokens, self.stop)
        self.val_spec = SamplingSpec(v.temperature, v.top_p, v.max_new_tokens, self.stop)
        if resumed and resumed.metrics:  # killed after the checkpoint, before its step's line was logged
            self.tracker.ensure(resumed.metrics, self.step)

    @classmethod
    def from_config(cls, cfg: TrainConfig | DictConfig, out_dir: str | Path) -> GRPOTrainer:
        return cls(build_run(cfg, out_dir))

    @property
    def model(self) -> torch.nn.Module:
        return self.engine.module

    @property
    def ref_model(self):
        return self.actor.ref_model

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step, "engine": self.engine.state_dict(),
            "sampler": self.sampler.state_dict(), "method": self.method.state_dict(),
            "bad_streak": self.bad_streak, "prev_entropy": self.prev_entropy,
            "config": to_dict(self.cfg),
        }

    def save(self, metrics: dict[str, float] | None = None) -> Path:
        """HF weights + trainer state (rank 0), per-rank RNG, and the engine's own state (all ranks).
        Weights that are not finite are never saved (a step with a non-finite update is not applied,
        so this only fails if something else corrupted them): the last checkpoint stays the good one.
        ``metrics``: the step's metrics, kept so that a run killed before logging them logs them on
        resume."""
        params = [(n, p.data) for n, p in self.model.named_parameters() if p.data.numel()]  # ZeRO-3: local shards
        finite = torch.stack([torch.isfinite(t).all() for _, t in params]).tolist() if params else []  # one sync
        bad = [n for (n, _), ok in zip(params, finite) if not ok]
        if ddp.all_sum(float(len(bad))):
            raise UserError(f"not saving step {self.step}: the weights hold non-finite values ({', '.join(bad[:3])}"
                            f"{' …' if len(bad) > 3 else ''}); the last checkpoint is step {self.saved_step}")
        state = {**self._state(), **({"metrics": metrics} if metrics else {})}
        path = ckpt.save_checkpoint(self.out_dir, self.step, self.engine, self.tokenizer, state,
                                    keep_last=self.trainer_cfg.keep_last, rank=self.rank, world_size=self.world)
        self.saved_step = self.step
        return path

    # ------------------------------------------------------------------------------------------ step
    def train_step(self) -> dict[str, float]:
        """One GRPO step over a fresh batch of prompts. Each stage is timed (``timing_s/<stage>``);
        ``fit`` adds validation and the checkpoint and closes the step's timings."""
        t0 = time.perf_counter()
        self.timer.reset()
        step = self.step + 1
        self.engine.set_lr_for_step(self.step)
        # 1-3. data -> rollout -> reward, in rounds when DAPO's dynamic sampling refills the batch
        self.gen_s, self.term_values = 0.0, []
        rollouts, grades, scores, keep, rounds = self.sample_batch()
        with self.timer.stage("gen"):
            self.rollout.sleep()  # the engine's KV cache (and weights) leave the GPU during the update
        t_gen = self.gen_s
        # 4. advantage: group-normalised, broadcast to tokens; `keep` says which responses train (algo filters)
        adv = grpo_advantages(scores, rollouts.group_ids, self.algo.norm_adv_by_std, self.algo.adv_eps)
        metrics = self._rollout_metrics(rollouts, grades, scores, keep, t_gen)
        metrics["rollout/gen_rounds"] = float(rounds)
        metrics["adv/kept_groups"] = ddp.all_sum(torch.unique(rollouts.group_ids[keep]).numel())
        if hasattr(self.rollout, "sync_s"):
            metrics["perf/weight_sync_s"] = self.rollout.sync_s
        if ddp.all_sum(float(keep.sum())) > 0:
            batch = self._train_batch(rollouts, scores, adv, keep)
            # 5. old log-probs and the token statistics the method asked for (rollout policy, no grad);
            #    with an engine of its own (vLLM): the mismatch and its importance weights. Skipped when
            #    the update is strictly on-policy: its own log-probs, detached, are the old ones
            reuse = self.reuse_update_logprobs(batch)
            metrics["perf/old_log_prob_pass"] = 0.0 if reuse else 1.0
            if not reuse:
                batch.token.update(self.score(batch))
                metrics.update(self._dynamics(batch))
            if "rollout_logprobs" in batch.token:
                with self.timer.stage("old_log_prob"):
                    metrics.update(self._rollout_correction(batch))
            # 6. method: batch-scope statistics (quantiles, top-k, anchors) over the whole train batch
            with self.timer.stage("method"):
                metrics.update({f"method/{self.method.name}/{k}": v for k, v in self.method.prepare(batch, self._ctx(step)).items()})
            # 7. loss + optimizer steps over mini-/micro-batches
            metrics.update(self.update(batch, step, record=("logprobs", "entropy", "top1_prob") if reuse else ()))
            if reuse:  # 5, after the fact: the rollout policy's statistics from the update's forwards
                batch.token["old_logprobs"] = batch.token.pop("logprobs")
                metrics.update(self._dynamics(batch))
        else:
            metrics["train/skipped_no_signal"] = 1.0
        self.step = step
        # 8. metrics, averaged over ranks
        metrics.update(self.actor.take_forward_stats())
        metrics["optim/lr"] = self.engine.lr
        metrics["perf/step_s"] = time.perf_counter() - t0
        self._step_t0 = t0
        return ddp.mean_metrics(metrics)

    def reuse_update_logprobs(self, batch: TrainBatch) -> bool:
        """Whether π_old is exactly the policy of the update's own forward, so the scoring pass would
        compute nothing new (TRL's rule for ``num_iterations=1``): ``algo.old_logprob_pass=auto``, one
        PPO epoch of one mini-batch, no KL reference, no engine log-probs to correct (vLLM) or bypass,
        a method that needs no rollout statistic before the update, and no dropout in train mode
        (train and eval forwards then agree)."""
        needs = self.method.needs
        n_mini = Actor.n_minibatches(batch, self.algo.mini_batch_size)
        return (self.algo.old_logprob_pass == "auto" and self.algo.ppo_epochs == 1 and n_mini == 1
                and not self.actor.has_reference and "rollout_logprobs" not in batch.token and not self.bypass
                and not needs.rollout and not needs.minibatch and not self.method.reads_rollout_stats
                and not has_dropout(self.model))

    def _sample_round(self) -> tuple[Rollouts, list, torch.Tensor]:
        """One round: the same global batch of prompts on every rank, each rank takes its own (whole
        groups); G samples per prompt; each response graded by the verifier."""
        prompts = self.sampler.next_batch(self.rollout_cfg.prompts_per_step)[self.rank :: self.world]
        t0, synced = time.perf_counter(), getattr(self.rollout, "sync_s_total", 0.0)
        with self.timer.stage("gen"), self.stopper.generating():
            _inject_signal(self.step + 1, self.rank)
            rollouts = self.rollout.generate(prompts, self.algo.group_size, self.spec)
        self.timer.add("gen", 0.0, tokens=float(rollouts.response_mask.sum()))
        self.gen_s += time.perf_counter() - t0
        # a rollout engine with weights of its own pushes them inside its first generate after an update
        self.timer.move("gen", "weight_sync", getattr(self.rollout, "sync_s_total", 0.0) - synced)
        rows_of = rollouts.group_ids.tolist()
        answers = [prompts[g].answer for g in rows_of]
        with self.timer.stage("reward"):
            grades = self.grader.grade(rollouts.texts, answers)
            fields = {"prompts": [prompts[g].text for g in rows_of], "problem": [prompts[g].problem for g in rows_of],
                      "id": [prompts[g].id for g in rows_of]}
            inputs = RewardInputs(rollouts.texts, answers, grades, rollouts.response_mask.sum(-1).tolist(), fields)
            total, values = reward_score(self.reward_terms, inputs)
        self.term_values.append(values)
        return rollouts, grades, torch.tensor(total, dtype=torch.float32)  # scores [N]

    def sample_batch(self) -> tuple[Rollouts, list, torch.Tensor, torch.Tensor, int]:
        """(rollouts, grades, scores [N], keep [N] bool, generation rounds).

        ``algo.filter_zero_std_groups`` drops groups whose rewards are all equal from a single round.
        ``algo.filter_groups.enabled`` is DAPO's dynamic sampling with refill: rounds of fresh prompts
        until every rank holds its share of ``prompts_per_step`` groups with reward variance (at most
        ``max_num_gen_batches`` rounds; 0 = no limit), the surplus beyond that share left out. A batch
        still short after the last round trains on what it has (``adv/kept_groups`` says how many).
        ``perf/gen_s`` counts the generation time of every round (``self.gen_s``)."""
        fg = self.algo.filter_groups
        parts = [self._sample_round()]
        if not fg.enabled:
            ro, grades, scores = parts[0]
            keep = ~zero_std_groups(scores, ro.group_ids) if self.algo.filter_zero_std_groups else torch.ones_like(scores, dtype=torch.bool)
            return ro, grades, scores, keep, 1
        target, max_rounds = len(parts[0][0].prompts), fg.max_num_gen_batches

        def with_signal(ro, scores) -> int:
            return int(torch.unique(ro.group_ids[~zero_std_groups(scores, ro.group_ids)]).numel())

        have = with_signal(parts[0][0], parts[0][2])
        while ddp.all_max(max(0, target - have)) > 0 and (max_rounds <= 0 or len(parts) < max_rounds):
            parts.append(self._sample_round())
            have += with_signal(parts[-1][0], parts[-1][2])
        ro = Rollouts.concat([p[0] for p in parts], self.tokenizer.pad_token_id)
        grades, scores = [g for p in parts for g in p[1]], torch.cat([p[2] for p in parts])
        keep = ~zero_std_groups(scores, ro.group_ids)
        kept_groups = torch.unique(ro.group_ids[keep])[:target]  # the first `target` groups with signal
        keep &= torch.isin(ro.group_ids, kept_groups)
        return ro, grades, scores, keep, len(parts)

    def _train_batch(self, rollouts, scores, adv, keep) -> TrainBatch:
        """The kept responses with token-level advantages. A rank whose groups were all filtered keeps
        a dummy row (mask zeroed), so it still takes part in every collective of the update."""
        full = TrainBatch(rollouts, scores, adv[:, None] * rollouts.response_mask)
        if rollouts.rollout_logprobs is not None:
            full.token["rollout_logprobs"] = rollouts.rollout_logprobs
        return rows(full, keep.nonzero(as_tuple=True)[0])

    def _rollout_correction(self, batch: TrainBatch) -> dict[str, float]:
        """Engine vs trainer log-probs of the sampled tokens (vLLM only), and the truncated IS weights
        ``algo.rollout_correction`` asks for (``batch.token["rollout_is_weight"]``, used in the loss)."""
        if "rollout_logprobs" not in batch.token:
            return {}
        mode, cap = self.algo.rollout_correction.mode, self.algo.rollout_correction.cap
        roll_lp, mask = batch.token["rollout_logprobs"], batch.response_mask
        # the trainer's log-probs: π_old, or in bypass mode those of a scoring pass that ran anyway
        train_lp = batch.token.get("trainer_logprobs", None if self.bypass else batch.old_logprobs)
        m = mismatch_metrics(train_lp, roll_lp, mask) if train_lp is not None else {}
        if self.bypass or mode == "off":  # bypass: the PPO ratio π_θ / π_rollout is the correction (clipped)
            return m
        w = importance_weights(train_lp, roll_lp, mask, mode, cap)
        batch.token["rollout_is_weight"] = w
        m.update(weight_metrics(w, train_lp, roll_lp, mask, mode, cap))
        return m

    @property
    def bypass(self) -> bool:
        """``algo.rollout_correction.bypass``: the engine's log-probs are π_old (verl's bypass mode)."""
        return self.algo.rollout_correction.bypass and self.rollout.name != "hf"

    def score(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """Old log-probs + entropy (+ reference log-probs + the method's rollout statistics), no grad.

        In bypass mode the engine's log-probs are the old log-probs, and the pass is skipped when
        nothing else needs it (no method statistic, no KL reference): ``actor/entropy`` then comes
        from the update's own forwards and the entropy-dynamics metrics are not computed."""
        needs = self.method.needs
        ref = {}
        if self.actor.has_reference:
            with self.timer.stage("ref", tokens=float(batch.rollouts.attention_mask.sum())):
                ref = {"ref_logprobs": self.actor.reference(batch)}
        if self.bypass and "rollout_logprobs" in batch.token:
            if not needs.rollout and not self.actor.has_reference:
                return {"old_logprobs": batch.token["rollout_logprobs"].clone()}
            token = self._score_policy(batch, ["logprobs", "entropy", "top1_prob", *needs.rollout])
            token["trainer_logprobs"] = token.pop("logprobs")
            token["old_logprobs"] = batch.token["rollout_logprobs"].clone()
            return {**token, **ref}
        token = self._score_policy(batch, ["logprobs", "entropy", "top1_prob", *needs.rollout])
        token["old_logprobs"] = token.pop("logprobs")
        return {**token, **ref}

    def _score_policy(self, batch: TrainBatch, names: list[str]) -> dict[str, torch.Tensor]:
        with self.timer.stage("old_log_prob", tokens=float(batch.rollouts.attention_mask.sum())):
            return self.actor.score(batch, names, self.method.needs.fns)

    def _ctx(self, step: int) -> StepContext:
        return StepContext(step=step, total_steps=self.trainer_cfg.max_steps, seed=self.cfg.seed,
                           gather=ddp.gather_1d, world_size=self.world, rank=self.rank, clip=self.clip)

    def update(self, batch: TrainBatch, step: int, record: tuple[str, ...] = ()) -> dict[str, float]:
        """PPO epochs x mini-batches x micro-batches of ``_micro_loss`` (the actor runs them); ``record``:
        statistics of the first mini-batch's forwards kept in ``batch.token`` (``Actor.update``)."""
        tokens = float(batch.rollouts.attention_mask.sum()) * self.algo.ppo_epochs
        # the gradient diagnostic's optimizer step: the step's last (epoch, mini-batch), the most off-policy,
        # where a term that needs lp ≠ old binds if it ever does (KL-Cov); the only one with one of each
        self._diagnose_at = None
        if self.diagnose_every and step % self.diagnose_every == 0:
            self._diagnose_at = (self.algo.ppo_epochs - 1, Actor.n_minibatches(batch, self.algo.mini_batch_size) - 1)
        with self.timer.stage("update_actor", tokens=tokens):
            metrics, skipped = self.actor.update(batch, self.algo.mini_batch_size, self.algo.ppo_epochs,
                                                 lambda mb, where, totals: self._micro_loss(mb, step, where, totals, record),
                                                 lambda mini, where: self._prepare_minibatch(mini, step, where), record)
        self.bad_streak = self.bad_streak + 1 if skipped else 0
        for where in self.actor.nonfinite:
            log.warning("step %d: non-finite %s: optimizer step not applied", step, where)
        self.actor.nonfinite.clear()
        metrics.update(self._diagnosis)  # one micro-batch's: not averaged with the per-micro-batch metrics
        self._diagnosis = {}
        return metrics

    def _prepare_minibatch(self, mini: TrainBatch, step: int, where: tuple[int, int]) -> dict[str, float]:
        """The method's mini-batch statistics from the current policy, before this optimizer step. On a
        step's first mini-batch the weights are those the old log-probs were scored with, so those are
        reused; later mini-batches (and epochs) take a no-grad pass at the current weights."""
        names = self.method.needs.minibatch
        if not names:
            return {}
        with self.timer.stage("method"):  # taken out of update_actor's seconds
            if where == (0, 0) and not self.bypass and all(n == "logprobs" or n in mini.token for n in names):
                current = {n: mini.old_logprobs if n == "logprobs" else mini.token[n] for n in names}
            else:
                current = self.actor.score(mini, list(names), self.method.needs.fns)
            out = self.method.prepare_minibatch(mini, current, self._ctx(step), where)
        return {f"method/{self.method.name}/{k}": v for k, v in out.items()}

    def _rollout_metrics(self, rollouts, grades, scores, keep, t_gen) -> dict[str, float]:
        lengths = rollouts.response_mask.sum(-1).float()
        statuses = [g.status for g in grades]
        return {
            "reward/mean": float(scores.mean()),
            "reward/accuracy": sum(g.score for g in grades) / len(grades),
            **{f"reward/{t.name}": _mean([v for r in self.term_values for v in r[t.name]])
               for t in self.reward_terms if t.name != "accuracy"},
            "reward/no_answer_frac": statuses.count("no_answer") / len(statuses),
            "reward/parse_errors": float(statuses.count("parse_error")),
            "reward/timeouts": float(statuses.count("timeout")),
            "rollout/response_len_mean": float(lengths.mean()),
            "rollout/truncated_frac": float(rollouts.truncated.float().mean()),
            "adv/kept_frac": float(keep.float().mean()),
            "perf/gen_s": t_gen,
            "perf/gen_tokens_per_s": float(lengths.sum()) / max(t_gen, 1e-9),
        }

    def _dynamics(self, batch: TrainBatch) -> dict[str, float]:
        if "entropy" not in batch.token:  # bypass mode without a scoring pass
            return {}
        m = entropy_dynamics(batch.old_logprobs, batch.token["entropy"], batch.advantages, batch.response_mask,
                             batch.token.get("top1_prob"))
        if self.prev_entropy is not None and "actor/entropy" in m:
            m["entropy/delta"] = m["actor/entropy"] - self.prev_entropy
        self.prev_entropy = m.get("actor/entropy", self.prev_entropy)
        return m

    # ------------------------------------------------------------------------------------------ loss
    def _micro_loss(self, mb: TrainBatch, step: int, where: tuple[int, int, int], totals: Totals,
                    record: tuple[str, ...] = ()) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch: the shared clipped objective, changed only through MethodOutput.
        ``record``: the statistics ``update`` keeps from the forwards (``top1_prob`` is computed only then)."""
        all_tokens, all_seqs = totals.tokens, totals.seqs
        needs = self.method.needs
        log_entropy = "entropy" not in mb.token and "entropy" not in needs.update  # bypass without scoring
        profile = ["top1_prob"] if "top1_prob" in record else []  # kept for the profile when scoring was skipped
        names = ["logprobs", *needs.update, *(["entropy"] if log_entropy else []), *profile]
        stats = self.actor.forward(mb.rollouts, names, ["logprobs", *needs.update_grad], needs.fns)
        mask = mb.response_mask.to(self.device).float()
        lp = stats.pop("logprobs")
        entropy = stats.pop("entropy") if log_entropy else None
        stats.pop("top1_prob", None)  # recorded for the entropy profile (``_dynamics``), not a method input
        adv = mb.advantages.to(self.device)
        if where[:2] == (0, 0) and not self.bypass:
            # the first mini-batch of a step is on-policy: use the current log-probs themselves (verl's
            # shortcut), so r = 1 exactly and KL-Cov's |lp − old| is 0 rather than rounding noise (and
            # when the scoring pass was skipped there is no other value)
            old = lp.detach()
        else:
            old = mb.old_logprobs.to(self.device)
        pb = PolicyBatch(
            logprobs=lp, old_logprobs=old, advantages=adv, response_mask=mask, token=stats,
            old_token={k: v.to(self.device) for k, v in mb.token.items()},
            method={k: v.to(self.device) for k, v in mb.method.items()},
            step=step, minibatch_tokens=all_tokens, minibatch_seqs=all_seqs, microbatch_index=where, clip=self.clip,
        )
        out = self.method.loss(pb)
        mode, scale = self.algo.loss_agg_mode, self.algo.loss_scale_factor or self.rollout_cfg.max_new_tokens
        m: dict[str, float] = {}
        reference = None  # the KL-reference term, the same with and without the method
        if self.actor.has_reference:
            kl = kl_penalty(lp, pb.old_token["ref_logprobs"], self.algo.kl.type)
            kl_loss = agg_loss(kl, mask, mode, num_tokens=all_tokens, num_seqs=all_seqs, scale_factor=scale)
            reference = self.algo.kl.coef * kl_loss
            m["loss/kl"] = float(kl_loss.detach())
        # the loss of this micro-batch for a MethodOutput and a ClipSpec: with the method (the real one),
        # and on a diagnosed micro-batch without it (MethodOutput(), the algo's clip, no loss mask)
        loss_of = lambda o, clip, loss_mask=None: micro_batch_loss(  # noqa: E731
            lp, old, adv, mask, o, clip, totals, mode, scale, loss_mask=loss_mask,
            is_weight=pb.old_token.get("rollout_is_weight"), reference=reference)
        res = loss_of(out, self.clip, pb.method.get("loss_mask"))
        loss, clip_info = res.total, res.clip_info
        # the diagnostic (every trainer.diagnose_every steps): on the first micro-batch of the step's last
        # optimizer step that has a policy gradient (a non-zero advantage), see update()
        if where[:2] == self._diagnose_at and not self._diagnosis and bool((adv * mask).any()):
            with self.timer.stage("diagnose"):  # two extra backwards of this micro-batch, no .grad written
                self._diagnosis = diagnostics.gradient_diagnostic(
                    loss, loss_of(MethodOutput(), self.algo_clip).total, [p for p in self.model.parameters() if p.requires_grad])
        # ours under ppo/* for every method; verl's names under actor/*, with the method's meaning where
        # the reference gives them another (Clip-Cov's selected fraction, KL-Cov's mean |lp − old|)
        m.update({"loss/pg": float(res.pg.detach()), "ppo/clipfrac": float(masked_mean(clip_info["clipped"].float(), mask)),
                  "ppo/clipfrac_lower": float(masked_mean(clip_info["clipped_lower"].float(), mask)),
                  "ppo/kl": float(masked_mean(clip_info["neg_log_ratio"], mask))})
        m.update({"actor/pg_clipfrac": m["ppo/clipfrac"], "actor/pg_clipfrac_lower": m["ppo/clipfrac_lower"],
                  "actor/ppo_kl": m["ppo/kl"], **out.reference_metrics})
        if res.extra is not None:  # a mean over micro-batches
            m["loss/method_extra"] = float(res.extra.detach())
        m["loss/total"] = float(loss.detach())
        # the share of response tokens the method changes anything on (0 for plain GRPO)
        active = diagnostics.active_tokens(out, mask, pb.method.get("loss_mask"),
                                           diagnostics.clip_changed(lp, old, adv, self.clip, self.algo_clip, res.clipped))
        m["method/active_frac"] = diagnostics.active_fraction(active, mask)
        if entropy is not None:  # a mean over the update's forwards, as verl logs it
            m["actor/entropy"] = float(masked_mean(entropy, mask))
        m.update({f"method/{self.method.name}/{k}": v for k, v in out.metrics.items()})
        return loss, m

    # ------------------------------------------------------------------------------------------ run
    def validate(self) -> dict[str, float]:
        """Sampled accuracy on the held-out split (the same code as ``rlvr eval``); ranks split the
        problems and average."""
        v, t0 = self.cfg.val, time.perf_counter()
        samples = sample_and_grade(None, self.tokenizer, self.test_prompts[self.rank :: self.world], self.grader,
                                   v.n, v.temperature, v.top_p, v.max_new_tokens, self.rollout_cfg.batch_size,
                                   generate=lambda part: (self.rollout.generate(part, v.n, self.val_spec), {}))
        self.rollout.sleep()
        name = self.cfg.data.name
        out = {f"val/{name}/{k}": val for k, val in summarize_samples(samples, v.n, self.grader).items()}
        return ddp.mean_metrics({**out, "perf/val_s": time.perf_counter() - t0})

    def fit(self) -> dict[str, float]:
        """Train to ``trainer.max_steps``; a stop signal ends the run after the step in progress (or,
        with ``trainer.stop_mode=now``, abandons its generation) with a checkpoint of the last
        completed step; ``self.stopped_by`` then holds the signal."""
        total, last = self.trainer_cfg.max_steps, {}
        if self.step >= total:
            ddp.print0(f"[green]already at step {self.step}/{total}: nothing to do (trainer.max_steps to go further)")
            return {}
        self.stopper.install()
        try:
            last = self._fit(total)
        finally:
            self.stopper.uninstall()
            self.tracker.finish(preempted=self.stopped_by is not None)
        return last

    def _fit(self, total: int) -> dict[str, float]:
        last: dict[str, float] = {}
        if self.step == 0 and self.cfg.val.every and self.cfg.val.at_start:
            last = self.validate()
            self.tracker.log(last, 0)
            ddp.print0(" | ".join(f"{k} {v:.3f}" for k, v in last.items() if "avg@" in k or "pass@" in k) + "  (before training)")
        limit = self.trainer_cfg.max_nonfinite_steps
        with StepProgress(total, self.step, enabled=self.rank == 0, live=self.trainer_cfg.progress) as bar:
            while self.step < total:
                start = (ckpt.rng_state(), self.sampler.state_dict()) if self.stopper.abandon_allowed else None
                try:
                    metrics = self.train_step()
                except StepAbandoned:  # stop_mode=now: generation left; nothing of this step was applied
                    ckpt.set_rng_state(start[0])
                    self.sampler.load_state_dict(start[1])
                    self.stopped_by = self.stopper.signum
                    self._save_on_stop()
                    return last
                every = self.cfg.val.every
                if every and (self.step % every == 0 or self.step == total):
                    with self.timer.stage("val"):
                        metrics.update(self.validate())
                nonfinite_stop = self.bad_streak >= limit
                if nonfinite_stop or self.step == total or (self.trainer_cfg.save_every and self.step % self.trainer_cfg.save_every == 0):
                    so_far = ddp.mean_metrics(self.timer.metrics(time.perf_counter() - self._step_t0))
                    with self.timer.stage("checkpoint"):
                        self.save({**metrics, **so_far})
                # the step's stages, validation and checkpoint included, add up to timing_s/step
                metrics.update(ddp.mean_metrics(self.timer.metrics(time.perf_counter() - self._step_t0)))
                self.tracker.log(metrics, self.step)
                bar.update(self.step, metrics)
                last = metrics
                if os.environ.get(FAULT_KILL_ENV) == str(self.step):
                    os.kill(os.getpid(), signal.SIGKILL)
                if nonfinite_stop:
                    ddp.print0(f"[red]stopping: {self.bad_streak} steps in a row had a non-finite loss or gradient "
                               f"(trainer.max_nonfinite_steps={limit}); none was applied; checkpoint saved at step {self.step}")
                    break
                self.stopped_by = self.stopper.agreed() if self.step < total else None  # one all-reduce a step
                if self.stopped_by:
                    self._save_on_stop()
                    break
        return last

    def _save_on_stop(self) -> None:
        """The checkpoint of the last completed step (unless it has one already) and the one line."""
        if self.step > 0 and self.saved_step != self.step:
            with self.timer.stage("checkpoint"):
                self.save()
        where = f"after step {self.step}" if self.step else "before step 1 finished (nothing to save)"
        ddp.print0(f"[yellow]stopped by {signal_name(self.stopped_by)} {where}; resume with the same command")

    @property
    def exit_code(self) -> int:
        """The process status a run should end with: 0, or that of the stop signal (0 for SIGUSR1)."""
        return exit_code(self.stopped_by) if self.stopped_by else 0

    def close(self) -> None:
        self.grader.close()
        self.rollout.close()
        if self.distributed:
            ddp.shutdown()
