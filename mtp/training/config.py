"""Typed training configuration: a YAML recipe, then `key=value` overrides, resolved and saved.

    cfg = load_config("train/configs/medusa.yaml", ["optim.lr=3e-4", "head.num_heads=3"])
Unknown keys and ill-typed values are errors naming the key.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad recipe, override or head configuration; the message names the key."""


@dataclass
class ModelConfig:
    name: str = "tiny-llama"  # mtp.load_model name or path of the target
    dtype: str = "fp32"  # target weights dtype


@dataclass
class HeadSection:
    family: str = "medusa"
    # Passed to mtp.heads.build_head(family, target, **args) (num_heads, hidden_layers, ...).
    args: dict = field(default_factory=dict)
    # A heads checkpoint (a trainer's best/ or final/) to start from: its weights, config and draft
    # vocabulary are kept and `args` is ignored (fine-tuning on more data; a fresh optimizer).
    init: str = ""


@dataclass
class DataConfig:
    train: str = ""  # distillation folder (shard-*.jsonl) or a JSONL file of records
    eval: str = ""  # held-out data; empty: split eval_fraction of train by prompt id
    eval_fraction: float = 0.05
    max_seq_len: int = 512
    batch_size: int = 8  # per device, per micro-step
    bucket: bool = True  # length bucketing (batches of similar length)
    max_examples: int = 0  # 0: all
    # the share of the training groups kept (by the split's own hash, so the held-out examples stay the
    # same): data-scaling curves on one held-out set
    train_fraction: float = 1.0
    cache: str = ""  # hidden-state cache folder (train.cache); empty: online (run the target)
    # Gaussian noise on the target's hidden states the head reads, in training only (EAGLE's feature
    # noise): h + feature_noise * rms(h) * N(0, 1) per position; 0: off
    feature_noise: float = 0.0


@dataclass
class LossConfig:
    ce_weight: float = 1.0  # cross-entropy to the data tokens
    kl_weight: float = 0.0  # KL(target || head) at each future position (self-distillation)
    kl_temperature: float = 1.0
    kl_topk: int = 0  # 0: full vocabulary (online only); k: target top-k renormalised (cache-compatible)
    # total variation to the target at kl_temperature, 1 - sum_x min(p, q): one minus the expected
    # acceptance of a sampled draft (DistillSpec's TVD; mtp.training.losses.tv_sum); needs the target's
    # distribution (online, or a cache with kl_topk > 0)
    tv_weight: float = 0.0
    # Per-position weights: "family" (the head's own suggestion), a list of K floats, or "decay:0.8"
    # (geometric, 0.8**j).
    position_weights: Any = "family"
    aux_weight: float = 1.0  # multiplies the family's own aux losses (e.g. EAGLE's feature loss)
    # Draft-OPD's replay of rejected positions: head j's loss at a position counts 1 + replay times
    # where a greedy chain drafted there reaches head j and is rejected (mtp.training.losses.mtp_losses)
    replay: float = 0.0


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # 0: off
    grad_accum: int = 1
    max_steps: int = 100


@dataclass
class JointConfig:
    enabled: bool = False  # also train the target (MTP loss at weight `mtp_weight` + its own next-token loss)
    mtp_weight: float = 0.3
    target_lr: float = 1e-5


@dataclass
class EvalConfig:
    every: int = 50  # optimizer steps between evaluations (0: only at the end)
    max_batches: int = 0  # 0: the whole held-out split
    topk: int = 5  # top-k accuracy
    temperature: float = 0.0  # 0: expected tau from greedy accuracy; >0: from sum_x min(p, q)
    # also the chain's acceptance at this temperature (eval/sampled_a_k, sum_x min(p, q), with the
    # target's distribution known): what `heads:<dir>:auto` sets the draft length from when decoding at
    # T > 0 (mtp.shape.heldout_acceptance); 0: off. Measured on the held-out answers that were sampled
    # (records decoded at a temperature > 0, as distillation folders record) where there are any, else
    # on all of them (greedy answers overstate it; eval/sampled_answers says how many were sampled)
    sampled_temperature: float = 1.0
    # Accuracy labels: "target" = the target's own greedy token (what greedy verification accepts;
    # equals the data on greedy self-distilled data), "data" = the data tokens.
    labels: str = "target"


@dataclass
class CheckpointConfig:
    every: int = 50  # optimizer steps between checkpoints (0: only at the end)
    keep: int = 2  # newest checkpoints kept


@dataclass
class LogConfig:
    wandb: str = ""  # offline | online | disabled; empty: $WANDB_MODE, else offline
    project: str = "mtp"
    every: int = 10
    progress: bool = True


@dataclass
class TrainConfig:
    name: str = "run"
    out_dir: str = "runs"  # the run folder is out_dir/name
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 | fp16
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadSection = field(default_factory=HeadSection)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ckpt: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


# Keys a resumed run may change (they do not affect the weights).
RESUME_MUTABLE = ("log.", "ckpt.", "eval.every", "data.cache")


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} does not match {tp}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, key + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({list(value)})")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is str and isinstance(value, (int, float)):
        return str(value)
    raise ConfigError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _from_dict(cls, d: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + u for u in unknown]}; known under "
                          f"{prefix or 'top level'}: {sorted(names)}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in d.items()})


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
    cur[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Recipe YAML (optional) + `a.b=value` overrides (values parsed as YAML) -> TrainConfig."""
    raw: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"no such config file: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: malformed YAML ({e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} is not of the form key=value")
        k, v = ov.split("=", 1)
        _set_dotted(raw, k.strip(), yaml.safe_load(v) if v.strip() else "")
    cfg = _from_dict(TrainConfig, raw)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    o = cfg.optim
    if o.max_steps < 1 or o.grad_accum < 1 or cfg.data.batch_size < 1:
        raise ConfigError("optim.max_steps, optim.grad_accum and data.batch_size must be >= 1")
    if cfg.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"mixed_precision: {cfg.mixed_precision!r} is not one of no, bf16, fp16")
    if cfg.loss.ce_weight <= 0 and cfg.loss.kl_weight <= 0 and cfg.loss.tv_weight <= 0:
        raise ConfigError("loss: at least one of ce_weight, kl_weight and tv_weight must be > 0")
    if cfg.log.wandb not in ("", "offline", "online", "disabled"):
        raise ConfigError(f"log.wandb: {cfg.log.wandb!r} is not one of offline, online, disabled")
    if cfg.eval.labels not in ("target", "data"):
        raise ConfigError(f"eval.labels: {cfg.eval.labels!r} is not 'target' or 'data'")
    if not 0 <= cfg.data.eval_fraction < 1:
        raise ConfigError("data.eval_fraction must be in [0, 1)")
    if not 0 < cfg.data.train_fraction <= 1:
        raise ConfigError(f"data.train_fraction must be in (0, 1] (the share of training groups kept), "
                          f"got {cfg.data.train_fraction}")
    if cfg.data.max_seq_len < 4:
        raise ConfigError("data.max_seq_len must be >= 4")
    import math

    if not (cfg.data.feature_noise >= 0 and math.isfinite(cfg.data.feature_noise)):
        raise ConfigError(f"data.feature_noise must be a finite number >= 0 (a multiple of the hidden "
                          f"states' RMS), got {cfg.data.feature_noise}")
    if not (o.lr > 0 and math.isfinite(o.lr)):
        raise ConfigError(f"optim.lr must be a finite number > 0, got {o.lr}")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"optim.betas must be exactly two numbers in [0, 1), got {list(o.betas)}")
    if o.warmup_steps < 0 or o.weight_decay < 0 or o.grad_clip < 0 or not 0 <= o.min_lr_ratio <= 1:
        raise ConfigError("optim.warmup_steps, optim.weight_decay and optim.grad_clip must be >= 0 and "
                          "optim.min_lr_ratio in [0, 1]")
    if not (cfg.loss.kl_temperature > 0 and math.isfinite(cfg.loss.kl_temperature)):
        raise ConfigError(f"loss.kl_temperature must be > 0, got {cfg.loss.kl_temperature}")
    lw = cfg.loss
    e = cfg.eval
    if min(e.temperature, e.sampled_temperature, lw.ce_weight, lw.kl_weight, lw.tv_weight, lw.kl_topk) < 0:
        raise ConfigError("eval.temperature, eval.sampled_temperature, loss.ce_weight, loss.kl_weight, "
                          "loss.tv_weight and loss.kl_topk must be >= 0")
    if not (cfg.loss.replay >= 0 and math.isfinite(cfg.loss.replay)):
        raise ConfigError(f"loss.replay must be a finite number >= 0 (0: off), got {cfg.loss.replay}")


def with_defaults(saved: dict) -> dict:
    """A saved run config with the keys added to the kit since it was written filled in at their
    defaults (new options default to the old behaviour), so resuming or re-evaluating an older run
    is not refused for them. `head.args` is taken as saved."""
    def merge(default, old, path: str):
        if not isinstance(default, dict) or not isinstance(old, dict) or path == "head.args":
            return old
        out = dict(default)
        for k, v in old.items():
            out[k] = merge(default[k], v, f"{path}.{k}" if path else k) if k in default else v
        return out
    return merge(TrainConfig().to_dict(), saved, "")


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (ignoring RESUME_MUTABLE keys)."""
    out = []
    for k in sorted(set(old) | set(new)):
        key = prefix + k
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and key != "head.args":
            out += config_diff(a, b, key + ".")
        elif a != b and not any(key.startswith(m) for m in RESUME_MUTABLE):
            out.append(key)
    return out


def save_config(cfg: TrainConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    d = cfg.to_dict()
    for name, text in (("config.yaml", yaml.safe_dump(d, sort_keys=False)), ("config.json", json.dumps(d, indent=2))):
        tmp = run_dir / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(run_dir / name)
