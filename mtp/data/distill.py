"""Self-distillation: the target regenerates the responses it will later be drafted for.

Output folder layout (resumable, no duplicates):
    meta.json            model, fingerprint and generation settings (a resume must match them)
    shard-00000.jsonl    one record per (prompt, turn): {"id", "prompt_id", "turn", "category",
    shard-00001.jsonl     "prompt_ids", "response_ids", "finish_reason"}; the loss mask of a
    ...                   record covers its response_ids only.
Every batch is written with one atomic replace of a shard file (write tmp, then os.replace), so a
killed run keeps every finished batch and loses at most the batch in flight. On restart the shards
are read back and the prompts already present are skipped.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mtp.chat import encode_turn
from mtp.data.prompts import DataError, Prompt
from mtp.io import read_jsonl

SHARD_FMT = "shard-{:05d}.jsonl"
# Settings that change what is generated: a resume with other values is refused.
_META_KEYS = ("model", "fingerprint", "temperature", "top_p", "max_new_tokens", "chat_template", "seed", "batch_size")


@dataclass
class DistillConfig:
    max_new_tokens: int = 256
    batch_size: int = 8
    temperature: float = 0.0  # 0: greedy
    top_p: float | None = None
    seed: int = 0
    shard_size: int = 256  # records per shard (a batch is never split across shards)
    backend: str = "hf"  # "hf": transformers batched generate; "engine": mtp.generate
    on_long_prompt: str = "error"  # "error" or "skip" prompts that do not fit the context


def check_config(cfg: DistillConfig, context: int | None = None) -> None:
    """DataError naming the first setting out of range (before anything is written)."""
    for name in ("batch_size", "shard_size", "max_new_tokens"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DataError(f"{name} must be an integer >= 1, got {v!r}")
    t = cfg.temperature
    if not isinstance(t, (int, float)) or not 0 <= t < float("inf"):  # also NaN
        raise DataError(f"temperature must be a finite number >= 0 (0: greedy), got {t!r}")
    if cfg.top_p is not None and not 0 < cfg.top_p <= 1:
        raise DataError(f"top_p must be in (0, 1], got {cfg.top_p!r}")
    if context and cfg.max_new_tokens >= context:
        raise DataError(f"max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt in the model's "
                        f"context of {context} tokens")


def context_length(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "max_position_embeddings", None) or 2048)


class ShardWriter:
    """Append-only sharded JSONL with atomic batch writes; knows which prompts are done."""

    def __init__(self, out_dir: str | Path, shard_size: int) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        for tmp in self.dir.glob("*.tmp"):  # a write interrupted before its os.replace
            tmp.unlink()
        self.shards = sorted(self.dir.glob("shard-*.jsonl"))
        self.done: set[str] = set()
        self.num_records = 0
        self.current: list[str] = []  # lines of the last shard
        for i, path in enumerate(self.shards):
            numbered = [(n, ln) for n, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if ln.strip()]
            lines = [ln for _, ln in numbered]
            for n, ln in numbered:
                try:
                    self.done.add(json.loads(ln)["prompt_id"])
                except (json.JSONDecodeError, KeyError) as e:
                    raise DataError(f"{path}:{n}: malformed distillation record ({e}); delete the shard to "
                                    "regenerate it") from None
            self.num_records += len(lines)
            if i == len(self.shards) - 1:
                self.current = lines
        self.index = len(self.shards) - 1 if self.shards else 0

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        if self.current and len(self.current) + len(records) > self.shard_size:
            self.index += 1
            self.current = []
        self.current = self.current + [json.dumps(r, ensure_ascii=False) for r in records]
        path = self.dir / SHARD_FMT.format(self.index)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(self.current) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.done.update(r["prompt_id"] for r in records)
        self.num_records += len(records)


def _check_meta(out_dir: Path, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "meta.json"
    if path.is_file() and any(out_dir.glob("shard-*.jsonl")):  # settings matter once something was written
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno}); delete it if the "
                            "shards were made with the settings of this run") from None
        keys = [k for k in _META_KEYS if k != "batch_size" or k in old]  # older runs did not record it
        diff = [k for k in keys if old.get(k) != meta.get(k)]
        if diff:
            raise DataError(
                f"{out_dir} holds a distillation run with different settings ("
                + ", ".join(f"{k}: {old.get(k)!r} there vs {meta.get(k)!r} now" for k in diff)
                + "); resume with the same settings or write to a new --out folder")
    tmp = path.with_name("meta.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)


def generate_hf(model, tokenizer, rows: list[list[int]], cfg: DistillConfig, seed: int) -> list[list[int]]:
    """Left-padded batched transformers generate; each row cut after its first EOS."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = torch.tensor(r)
        mask[i, T - len(r):] = 1
    kwargs = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=pad, do_sample=cfg.temperature > 0)
    if cfg.temperature > 0:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p or 1.0, top_k=0)
        torch.manual_seed(seed)
    out = model.generate(ids.to(device), attention_mask=mask.to(device), **kwargs)[:, T:].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    res = []
    for row in out:
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        res.append(row[:cut])
    return res


def _generate_engine(model, tokenizer, rows, cfg: DistillConfig, seed: int) -> list[list[int]]:
    from mtp.engine import generate

    out = generate(model, rows, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                   top_p=cfg.top_p, seed=seed, pad_token_id=tokenizer.pad_token_id)
    return out.tokens


@torch.no_grad()
def distill(model, tokenizer, prompts: list[Prompt], out_dir: str | Path, cfg: DistillConfig,
            *, model_name: str = "", progress: bool = True) -> dict:
    """Generate responses for every prompt not yet in `out_dir`; returns throughput stats.

    Multi-turn prompts are answered turn by turn (turn i sees the model's own earlier replies),
    one record per turn. Prompts that do not fit the context (prompt + max_new_tokens tokens)
    raise DataError, or are skipped with on_long_prompt="skip".
    """
    from mtp.models import model_fingerprint

    out_dir = Path(out_dir)
    if cfg.backend not in ("hf", "engine"):
        raise ValueError(f"unknown backend {cfg.backend!r}: use 'hf' or 'engine'")
    if cfg.on_long_prompt not in ("error", "skip"):
        raise ValueError(f"on_long_prompt must be 'error' or 'skip', got {cfg.on_long_prompt!r}")
    check_config(cfg, context_length(model))
    meta = {"model": model_name or model.config.name_or_path, "fingerprint": model_fingerprint(model),
            "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
            "chat_template": bool(getattr(tokenizer, "chat_template", None)), "seed": cfg.seed,
            # sampled batches depend on how prompts are grouped; greedy ones do not
            "batch_size": cfg.batch_size if cfg.temperature > 0 else None, "format": "mtp-distill-v1"}
    _check_meta(out_dir, meta)
    writer = ShardWriter(out_dir, cfg.shard_size)
    todo = [p for p in prompts if p.id not in writer.done]
    ctx = context_length(model)
    gen = generate_hf if cfg.backend == "hf" else _generate_engine
    model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="distill", unit="prompt")
    new_tokens, skipped, t0 = 0, [], time.perf_counter()
    # Batches are fixed chunks of the full prompt list, seeded by the chunk's index: a resumed run
    # forms (and samples) exactly the batches an uninterrupted run would have. A batch is written
    # all at once, so a chunk is either done or redone whole.
    for b in range(0, len(prompts), cfg.batch_size):
        batch = [p for p in prompts[b: b + cfg.batch_size] if p.id not in writer.done]
        if not batch:
            continue
        answers: dict[str, list[str]] = {p.id: [] for p in batch}  # the model's own replies so far
        records: list[dict] = []
        alive = list(batch)
        for turn in range(max(len(p.turns) for p in batch)):
            rows, owners = [], []
            for p in alive:
                if turn >= len(p.turns):
                    continue
                ids = encode_turn(tokenizer, p, turn, answers[p.id])
                if len(ids) + cfg.max_new_tokens > ctx:
                    msg = (f"prompt {p.id!r} (turn {turn}) has {len(ids)} tokens; with max_new_tokens="
                           f"{cfg.max_new_tokens} it exceeds the model's context of {ctx} tokens")
                    if cfg.on_long_prompt == "error":
                        raise DataError(msg + " (pass --on-long-prompt skip to drop such prompts)")
                    skipped.append(p.id)
                    continue
                rows.append(ids)
                owners.append(p)
            if not rows:
                break
            outs = gen(model, tokenizer, rows, cfg, cfg.seed * 1_000_003 + (b // cfg.batch_size) * 101 + turn)
            for p, ids, resp in zip(owners, rows, outs):
                new_tokens += len(resp)
                reason = "eos" if len(resp) < cfg.max_new_tokens or resp[-1:] == [tokenizer.eos_token_id] else "length"
                records.append({"id": f"{p.id}#{turn}", "prompt_id": p.id, "turn": turn, "category": p.category,
                                "prompt_ids": ids, "response_ids": resp, "finish_reason": reason,
                                **({"group": p.group} if p.group else {})})
                answers[p.id].append(tokenizer.decode(resp, skip_special_tokens=True))
            alive = [p for p in owners]
        writer.write(records)  # one atomic write per batch: a prompt is all in, or not at all
        if bar is not None:
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{new_tokens / (time.perf_counter() - t0):.0f}")
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    return {"prompts_done": len(writer.done), "prompts_new": len(todo) - len(skipped), "skipped": skipped,
            "records": writer.num_records, "new_tokens": new_tokens, "seconds": elapsed,
            "tokens_per_s": new_tokens / elapsed if elapsed > 0 else float("nan"), "backend": cfg.backend,
            "config": asdict(cfg)}


def load_distilled(path: str | Path) -> list[dict]:
    """Records of a distillation folder (all shards, in order) or of one JSONL file; several of
    these joined by commas are concatenated in order. A folder's records carry the temperature its
    meta.json says they were decoded at ("temperature", where a record does not say): the trainer
    measures sampled acceptance on the sampled answers (`Example.sampled`)."""
    if "," in str(path) and not Path(path).exists():
        return [r for part in str(path).split(",") if part.strip() for r in load_distilled(part.strip())]
    path = Path(path)
    files = sorted(path.glob("shard-*.jsonl")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise DataError(f"{path} holds no shard-*.jsonl files (run `python -m train.distill` first)")
    recs = [r for f in files for r in read_jsonl(f)]
    if not recs:
        raise DataError(f"no records in {path}: the data file(s) are empty")
    t = _folder_temperature(path)
    if t is not None:  # how the folder's answers were decoded, on each record that does not say
        for r in recs:
            if isinstance(r, dict):
                r.setdefault("temperature", t)
    return recs


def _folder_temperature(path: Path) -> float | None:
    """The decoding temperature a distillation folder's meta.json records (None: not a folder, or
    not recorded)."""
    meta = path / "meta.json" if path.is_dir() else None
    if meta is None or not meta.is_file():
        return None
    try:
        t = json.loads(meta.read_text()).get("temperature")
    except (OSError, ValueError, AttributeError):
        return None
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None
