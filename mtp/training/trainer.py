"""Head training with accelerate: one loop for 1 CPU process, N GPUs (DDP) or FSDP / DeepSpeed.

Per optimizer step the global batch (batch_size x processes x grad_accum examples, the same indices
whatever the split) is a pure function of (seed, step): resuming needs only the step, and a run on
N processes sees the same examples as one process. Losses are sums divided by the global count of
counted positions, so the gradient does not depend on how the global batch is split.

Run folder (<out_dir>/<name>):
    config.yaml / config.json    the resolved config
    metrics.jsonl                train / eval metrics (also sent to wandb)
    checkpoints/step-0000100/    accelerate state (head or head+target, optimizer, RNG) + scheduler
                                 + trainer_state.json; `checkpoints/latest` names the newest
    best/                        head.save_pretrained of the checkpoint with the highest expected tau
    final/                       head.save_pretrained at the end (joint: final/target too)
"""
from __future__ import annotations

import contextlib
import json
import os
import time

import torch
from torch import nn

from mtp.data.cache import normalize_layer, open_cache
from mtp.data.dataset import Example, collate, global_batches, load_examples, split_examples
from mtp.data.prompts import DataError
from mtp.io import atomic_write_text
from mtp.training.build import TrainModule, build_head_for, check_head_fits, lr_lambda  # noqa: F401
from mtp.training.checkpointing import EVAL_KEYS, CheckpointMixin, ResumeError, metrics_step  # noqa: F401
from mtp.training.config import ConfigError, TrainConfig, save_config
from mtp.training.losses import (TargetDist, acceptance_logs, head_counts, mtp_losses, position_weights,
                                 target_next_token_loss)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing of the diverged weights is saved."""


def _wandb_mode(cfg: TrainConfig) -> str:
    return cfg.log.wandb or os.environ.get("WANDB_MODE", "") or "offline"


class Trainer(CheckpointMixin):
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, head_factory=None, target=None,
                 tokenizer=None, other_eval: bool = False) -> None:
        """other_eval: load the run's latest checkpoint to evaluate it on another held-out set
        (data.eval / eval.* may differ from the saved run's; nothing in the run folder is written)."""
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.run_dir = cfg.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"
        mode = self._setup_accelerator()
        self._prepare_run_dir(resume, allow=EVAL_KEYS if other_eval else ())
        set_seed(cfg.seed)
        self._setup_target(target, tokenizer)
        self._setup_data()
        self._setup_head(head_factory)
        self._setup_cache()
        self._setup_optimisation()
        self.state = {"step": 0, "best_tau": -1.0, "best_step": -1, "epoch": 0, "batch_in_epoch": 0, "tokens": 0}
        self.acc.register_for_checkpointing(self.scheduler)
        if resume:
            self._load_latest()
        if self.acc.is_main_process and not other_eval:
            self._write_run_files(resume)
        self._setup_trackers("disabled" if other_eval else mode)

    # ---- setup ----------------------------------------------------------------------------------
    def _setup_accelerator(self) -> str:
        """The Accelerator (wandb tracking unless disabled); returns the wandb mode."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        mode = _wandb_mode(self.cfg)
        os.environ["WANDB_MODE"] = mode  # before any wandb.init
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            # `accelerate launch --multi_gpu` on a machine without GPUs: DDP over gloo on CPU
            # (otherwise every process would silently train alone).
            os.environ.setdefault("ACCELERATE_USE_CPU", "1")
        self.acc = Accelerator(mixed_precision=self.cfg.mixed_precision,
                               log_with=None if mode == "disabled" else "wandb",
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        return mode

    def _setup_target(self, target, tokenizer) -> None:
        """The target (loaded from model.name unless given), trainable only in joint training."""
        cfg, acc = self.cfg, self.acc
        if target is None:
            from mtp.models import load_model

            target, tokenizer = load_model(cfg.model.name, dtype=cfg.model.dtype, device=acc.device)
        self.target, self.tokenizer = target.to(acc.device), tokenizer
        self.joint = cfg.joint.enabled
        self.target.requires_grad_(self.joint)
        self.target.train(self.joint)

    def _setup_data(self) -> None:
        """Train / eval examples and indices, the global batch, and the response-token counts."""
        cfg, d, tokenizer = self.cfg, self.cfg.data, self.tokenizer
        if not d.train:
            raise ConfigError("data.train is empty: point it at a distillation folder or a JSONL file")
        V = int(self.target.config.vocab_size)
        ctx = int(getattr(self.target.config, "max_position_embeddings", 0) or 0)
        if ctx and d.max_seq_len > ctx:
            raise ConfigError(f"data.max_seq_len={d.max_seq_len} exceeds the target's context of {ctx} tokens")
        examples = load_examples(d.train, tokenizer, max_seq_len=d.max_seq_len, vocab_size=V, max_examples=d.max_examples)
        self.examples = examples
        ids = {id(e): i for i, e in enumerate(examples)}
        if d.eval:
            self.train_idx = [ids[id(e)] for e in split_examples(examples, 0.0, cfg.seed, d.train_fraction)[0]]
            ev = load_examples(d.eval, tokenizer, max_seq_len=d.max_seq_len, vocab_size=V)
            self.eval_examples, self.eval_idx, self.eval_cache = ev, list(range(len(ev))), None
        else:
            tr, he = split_examples(examples, d.eval_fraction, cfg.seed, d.train_fraction)
            self.train_idx = [ids[id(e)] for e in tr]
            self.eval_examples, self.eval_idx = examples, [ids[id(e)] for e in he]
        # held-out greedy and sampled answers: greedy acceptance (eval/a_k, by rank) is measured on the
        # greedy ones, sampled (eval/sampled_a_k) on the sampled ones; with one kind only, on all
        self.eval_sampled = sum(self.eval_examples[i].sampled for i in self.eval_idx)
        self.eval_split_kinds = 0 < self.eval_sampled < len(self.eval_idx)
        self.world = self.acc.num_processes
        self.global_batch = d.batch_size * self.world * cfg.optim.grad_accum
        if len(self.train_idx) < self.global_batch:
            raise DataError(f"{len(self.train_idx)} training examples are fewer than one global batch "
                            f"({d.batch_size} x {self.world} processes x {cfg.optim.grad_accum} accumulation)")
        self.lengths = [len(examples[i].input_ids) for i in self.train_idx]
        counts = torch.zeros(V, dtype=torch.long)  # response-token frequencies (eagle3's reduced vocabulary)
        for i in self.train_idx:
            e = examples[i]
            counts += torch.bincount(torch.tensor([t for t, m in zip(e.input_ids, e.loss_mask) if m], dtype=torch.long),
                                     minlength=V)
        self.token_counts = counts

    def _setup_head(self, head_factory) -> None:
        """The head (built or loaded by head_factory), checked against the target; per-position loss weights."""
        cfg = self.cfg
        head = (head_factory or build_head_for)(cfg, self.target, self.token_counts)
        check_head_fits(head, self.target)
        self.head = head.to(self.acc.device)
        self.K = head.config.num_heads
        self.layers = list(head.config.hidden_layers)
        try:
            self.pos_w = position_weights(cfg.loss.position_weights, self.K, head.loss_weights())
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _setup_cache(self) -> None:
        """The hidden-state cache (data.cache), checked against the target and the examples."""
        cfg = self.cfg
        self.cache = None
        if cfg.data.cache:
            self.cache = open_cache(cfg.data.cache)
            self.cache.check(self.target, self.examples, self.layers, cfg.loss.kl_topk)
            if (cfg.loss.kl_weight > 0 or cfg.loss.tv_weight > 0) and cfg.loss.kl_topk <= 0:
                raise ConfigError("training from a hidden-state cache with loss.kl_weight or loss.tv_weight > 0 needs "
                                  f"loss.kl_topk > 0 (the cache holds the target's top-{self.cache.topk})")
            if self.joint:
                raise ConfigError("joint training updates the target, so its hidden states cannot come from a cache")
        if not cfg.data.eval:
            self.eval_cache = self.cache

    def _setup_optimisation(self) -> None:
        """TrainModule, AdamW (head; joint: target too), the warmup-cosine schedule; accelerate-prepared."""
        cfg, o = self.cfg, self.cfg.optim
        self.module = TrainModule(self.head, self.target, self.joint, cfg.data.feature_noise)
        groups = [{"params": [p for p in self.head.parameters() if p.requires_grad], "lr": o.lr}]
        if self.joint:
            groups.append({"params": list(self.target.parameters()), "lr": cfg.joint.target_lr})
        if not groups[0]["params"]:
            raise ConfigError(f"head {cfg.head.family!r} has no trainable parameters")
        self.optimizer = torch.optim.AdamW(groups, betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(o.warmup_steps, o.max_steps, o.min_lr_ratio))
        self.module, self.optimizer = self.acc.prepare(self.module, self.optimizer)

    def _write_run_files(self, resume: bool) -> None:
        """config.yaml / config.json, and metrics.jsonl cut back to the resumed step (main process)."""
        save_config(self.cfg, self.run_dir)
        mpath = self.run_dir / "metrics.jsonl"
        if mpath.is_file():  # drop what a killed run logged after its last checkpoint (or a stale log)
            keep = [x for x in mpath.read_text().splitlines() if resume and metrics_step(x) <= self.state["step"]]
            atomic_write_text(mpath, "".join(k + "\n" for k in keep))

    def _setup_trackers(self, mode: str) -> None:
        self._trackers = False
        if mode != "disabled":
            self.acc.init_trackers(self.cfg.log.project, config=self.cfg.to_dict(),
                                   init_kwargs={"wandb": {"name": self.cfg.name, "dir": str(self.run_dir)}})
            self._trackers = True

    # ---- run folder / resume --------------------------------------------------------------------
    # ---- one batch ------------------------------------------------------------------------------
    def _forward(self, module, idx: list[int], examples: list[Example], cache, *, train: bool):
        cfg, dev = self.cfg, self.acc.device
        pad = self.tokenizer.pad_token_id if self.tokenizer is not None and self.tokenizer.pad_token_id is not None else 0
        b = collate([examples[i] for i in idx], pad)
        ids, attn, lmask = b["input_ids"].to(dev), b["attention_mask"].to(dev), b["loss_mask"].to(dev)
        hs, tdist = None, None
        if cache is not None:
            cb = cache.batch(idx, ids.shape[1], self.layers, device=dev)
            dt = next(self.head.parameters()).dtype
            hs = {l: h.to(dt) for l, h in cb["hidden_states"].items()}
            tdist = TargetDist(topk_values=cb["topk_values"], topk_indices=cb["topk_indices"])
        with self.acc.autocast():
            logits, aux, metrics, tlogits, vocab = module(ids, attn, hs)
        if tlogits is not None:
            tdist = TargetDist(logits=tlogits).truncated(cfg.loss.kl_topk)
        stats = mtp_losses(logits, ids, lmask, tdist, ce_weight=cfg.loss.ce_weight, kl_weight=cfg.loss.kl_weight,
                           kl_temperature=cfg.loss.kl_temperature, topk=cfg.eval.topk,
                           eval_temperature=0.0 if train else cfg.eval.temperature, labels=cfg.eval.labels,
                           vocab=vocab, vocab_size=int(self.target.config.vocab_size),
                           replay=cfg.loss.replay if train else 0.0, tv_weight=cfg.loss.tv_weight,
                           sampled_temperature=0.0 if train else cfg.eval.sampled_temperature,
                           **({} if train else self._eval_rows(examples, idx)))
        ntl = target_next_token_loss(tlogits, ids, lmask) if tlogits is not None else None
        return stats, aux, metrics, ntl, lmask, int(attn.sum())

    def _eval_rows(self, examples: list[Example], idx: list[int]) -> dict:
        """greedy_rows / sampled_rows for mtp_losses on a held-out batch (see _setup_data)."""
        if not self.eval_sampled:
            return {}
        s = torch.tensor([examples[i].sampled for i in idx], device=self.acc.device)
        return {"sampled_rows": s, "greedy_rows": ~s} if self.eval_split_kinds else {"sampled_rows": s}

    def _global_counts(self, gidx: list[int]) -> tuple[torch.Tensor, float]:
        """[K] counted positions per head and the target next-token count over a global batch."""
        n = torch.zeros(self.K)
        ntl = 0.0
        for i in gidx:
            m = torch.tensor(self.examples[i].loss_mask)
            n += head_counts(m[None], self.K)
            ntl += float(m[1:].sum())
        return n.clamp_min(1.0), max(ntl, 1.0)

    # ---- training loop --------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> dict:
        """Train to optim.max_steps (or stop after `stop_after` steps, as if killed there)."""
        cfg, o = self.cfg, self.cfg.optim
        self.module.train()
        self._epoch_batches: dict[int, list[list[int]]] = {}
        bar = None
        if cfg.log.progress and self.acc.is_local_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=o.max_steps, initial=self.state["step"], desc=f"train {cfg.head.family}", unit="step")
        log_sums: dict[str, torch.Tensor] = {}
        t_log, tok_log = time.perf_counter(), 0
        steps_run = 0
        while self.state["step"] < o.max_steps:
            if stop_after is not None and steps_run >= stop_after:
                break
            tok_log += self._train_step(self._batch_for(self.state["step"]), log_sums)
            steps_run += 1
            step = self.state["step"]
            if bar is not None:
                bar.update(1)
            if step % cfg.log.every == 0 or step == o.max_steps:
                self._log_train(log_sums, time.perf_counter() - t_log, tok_log, step, bar)
                log_sums, t_log, tok_log = {}, time.perf_counter(), 0
            evaluate_now = cfg.eval.every > 0 and step % cfg.eval.every == 0
            if evaluate_now or step == o.max_steps:
                ev = self.evaluate()
                self.log(ev, step)
                tau = ev.get("eval/expected_tau", float("nan"))
                if tau > self.state["best_tau"]:
                    self.state["best_tau"], self.state["best_step"] = tau, step
                    self._save_head("best")
            if (cfg.ckpt.every > 0 and step % cfg.ckpt.every == 0) or step == o.max_steps:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if self.state["step"] >= o.max_steps:
            self._save_head("final")
        return dict(self.state)

    def _batch_for(self, step: int) -> list[int]:
        """The global batch (example indices) of optimizer step `step`, a pure function of (seed, step)."""
        cfg = self.cfg
        per_epoch = len(self.lengths) // self.global_batch  # global_batches drops the incomplete one
        epoch, pos = divmod(step, per_epoch)
        if epoch not in self._epoch_batches:
            self._epoch_batches.clear()
            self._epoch_batches[epoch] = global_batches(self.lengths, self.global_batch, seed=cfg.seed, epoch=epoch,
                                                        bucket=cfg.data.bucket)
        self.state["epoch"], self.state["batch_in_epoch"] = epoch, pos
        return [self.train_idx[i] for i in self._epoch_batches[epoch][pos]]

    def _train_step(self, gidx: list[int], log_sums: dict[str, torch.Tensor]) -> int:
        """One optimizer step over the global batch `gidx` (this process's micro-batches, gradient
        accumulation); adds to log_sums and returns the tokens this process saw."""
        cfg, acc, o, lw = self.cfg, self.acc, self.cfg.optim, self.cfg.loss
        bs, rank, module = cfg.data.batch_size, acc.process_index, self.module
        N, Nntl = self._global_counts(gidx)
        self.state["tokens"] += sum(len(self.examples[i].input_ids) for i in gidx)
        N = N.to(acc.device)
        tokens = 0
        for m in range(o.grad_accum):
            lo = (m * self.world + rank) * bs
            idx = gidx[lo: lo + bs]
            sync = m == o.grad_accum - 1
            ctx = acc.no_sync(module) if not sync else contextlib.nullcontext()
            with ctx:
                stats, aux, metrics, ntl, lmask, ntok = self._forward(module, idx, self.examples, self.cache, train=True)
                mtp = sum(self.pos_w[j] * (lw.ce_weight * s["ce"] + lw.kl_weight * s["kl"]
                                           + lw.tv_weight * s["tv"]) / N[j] for j, s in enumerate(stats))
                frac = head_counts(lmask, self.K)[0] / N[0]  # this micro-batch's share, for mean-valued aux losses
                if aux:
                    mtp = mtp + lw.aux_weight * frac * sum(aux.values())
                loss = mtp
                if self.joint:
                    loss = cfg.joint.mtp_weight * mtp + ntl[0] / Nntl
                if not torch.isfinite(loss.detach()).all():
                    raise NonFiniteLossError(
                        f"the training loss is {float(loss.detach())} at step {self.state['step'] + 1}: stopped, and "
                        "no checkpoint of these weights was saved. Check the settings (loss.kl_temperature, "
                        "optim.lr, mixed_precision) and the data / hidden-state cache for NaN values.")
                acc.backward(loss * self.world)  # DDP averages over processes; the loss is a global mean
            tokens += ntok
            _accum(log_sums, stats, aux, ntl, metrics)
        if o.grad_clip > 0:
            gn = acc.clip_grad_norm_(module.parameters(), o.grad_clip)
            _add(log_sums, "grad_norm", torch.as_tensor(gn, dtype=torch.float32).detach().cpu().reshape(()))
            _add(log_sums, "grad_norm_n", torch.ones(()))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["step"] += 1
        return tokens

    def _log_train(self, log_sums: dict[str, torch.Tensor], dt: float, tokens: int, step: int, bar) -> None:
        logs = self._reduce_logs(log_sums, prefix="train")
        logs["train/tokens_per_s"] = self._sum_scalar(tokens) / max(dt, 1e-9)
        logs["train/lr"] = self.scheduler.get_last_lr()[0]
        self.log(logs, step)
        if bar is not None:
            bar.set_postfix(loss=f"{logs.get('train/loss', float('nan')):.3f}",
                            tau=f"{logs.get('train/expected_tau', float('nan')):.2f}",
                            tok_s=f"{logs['train/tokens_per_s']:.0f}")

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out metrics: per-position loss, top-1 / top-k accuracy, expected tau."""
        cfg, acc = self.cfg, self.acc
        module = acc.unwrap_model(self.module)
        was = module.training
        module.eval()
        idx = sorted(self.eval_idx, key=lambda i: len(self.eval_examples[i].input_ids))
        bs = cfg.data.batch_size
        batches = [idx[s: s + bs] for s in range(0, len(idx), bs)]
        if cfg.eval.max_batches:
            batches = batches[: cfg.eval.max_batches]
        sums: dict[str, torch.Tensor] = {}
        for b in batches[acc.process_index:: acc.num_processes]:
            stats, aux, metrics, ntl, _, _ = self._forward(module, b, self.eval_examples, self.eval_cache, train=False)
            _accum(sums, stats, aux, ntl, metrics)
        module.train(was)
        return self._reduce_logs(sums, prefix="eval")

    def _sum_scalar(self, x: float) -> float:
        t = torch.tensor([float(x)], device=self.acc.device)
        return float(self.acc.reduce(t, "sum").item()) if self.world > 1 else float(x)

    def _reduce_logs(self, sums: dict[str, torch.Tensor], prefix: str) -> dict:
        K = self.K
        ranks = [f"rank{r}_" for r in range(self.cfg.eval.topk)]
        keys = [f"{k}{j}" for j in range(K)
                for k in ("ce", "kl", "tv", "n", "top1", "topk", "accept", "chain", "chain_n", "rank_n", *ranks)]
        sampled = prefix == "eval" and self.cfg.eval.sampled_temperature > 0  # the same keys on every process
        keys += [f"{k}{j}" for j in range(K) for k in ("chain_s", "chain_s_n")] if sampled else []
        self.aux_keys = sorted(set(getattr(self, "aux_keys", [])) | {k for k in sums if k.startswith("aux/")})
        keys += ["ntl", "ntl_n", "grad_norm", "grad_norm_n", "micro_n"] + self.aux_keys
        vec = torch.stack([sums.get(k, torch.zeros(())).float().cpu() for k in keys]).to(self.acc.device)
        if self.world > 1:  # every process sends the same keys (aux keys are known after the first step)
            vec = self.acc.reduce(vec, "sum")
        v = dict(zip(keys, vec.cpu().tolist()))
        lw = self.cfg.loss
        out, total = {}, 0.0
        for j in range(K):
            n = max(v[f"n{j}"], 1.0)
            ce, kl, tv = v[f"ce{j}"] / n, v[f"kl{j}"] / n, v[f"tv{j}"] / n
            out[f"{prefix}/ce_{j}"] = ce
            if lw.kl_weight > 0:
                out[f"{prefix}/kl_{j}"] = kl
            if lw.tv_weight > 0:
                out[f"{prefix}/tv_{j}"] = tv
            out[f"{prefix}/top1_{j}"] = v[f"top1{j}"] / n
            out[f"{prefix}/top{self.cfg.eval.topk}_{j}"] = v[f"topk{j}"] / n
            total += self.pos_w[j] * (lw.ce_weight * ce + lw.kl_weight * kl + lw.tv_weight * tv)
        out[f"{prefix}/loss"] = total
        out.update(acceptance_logs(v, K, prefix, self.cfg.eval.topk, ranks=prefix == "eval",
                                   sampled_temperature=self.cfg.eval.sampled_temperature if sampled else 0.0,
                                   sampled_answers=self.eval_sampled))
        if v["ntl_n"] > 0:
            out[f"{prefix}/target_ntl"] = v["ntl"] / v["ntl_n"]
        if v["grad_norm_n"] > 0:
            out[f"{prefix}/grad_norm"] = v["grad_norm"] / v["grad_norm_n"]
        for k in self.aux_keys:
            out[f"{prefix}/{k}"] = v[k] / max(v["micro_n"], 1.0)
        return out

    def log(self, logs: dict, step: int) -> None:
        if self.acc.is_main_process:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **logs}) + "\n")
        if self._trackers:
            self.acc.log(logs, step=step)

    def close(self) -> None:
        if self._trackers:
            self.acc.end_training()
            self._trackers = False


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _add(sums: dict, key: str, val: torch.Tensor) -> None:
    val = val.detach().float().cpu()
    sums[key] = sums[key] + val if key in sums else val


def _accum(sums: dict, stats: list[dict], aux: dict, ntl, metrics: dict | None = None) -> None:
    for j, s in enumerate(stats):
        for k, x in s.items():
            _add(sums, f"{k}{j}", x)
    for k, x in aux.items():
        _add(sums, f"aux/{k}", x)  # summed over micro-batches (mean-valued per micro-batch), logged as means
    for k, x in (metrics or {}).items():
        _add(sums, f"aux/metric_{k}", torch.as_tensor(float(x)))
    if ntl is not None:
        _add(sums, "ntl", ntl[0])
        _add(sums, "ntl_n", ntl[1])
    _add(sums, "micro_n", torch.ones(()))


def train(cfg: TrainConfig, *, resume: bool = False, stop_after: int | None = None, **kw) -> dict:
    """Build a Trainer, train, close the trackers; returns the final trainer state."""
    t = Trainer(cfg, resume=resume, **kw)
    try:
        return t.train(stop_after=stop_after)
    finally:
        t.close()
