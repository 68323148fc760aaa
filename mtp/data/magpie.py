"""Self-written prompts (Magpie, Xu et al. 2024): an instruct model writes the user turns itself.

The model is given its chat template up to the start of a user message and samples what a user
would say; the sample ends at the template's end-of-turn token. Samples are cleaned, filtered and
deduplicated, so the result is a prompt set the model was never shown, with no hub needed.

    prompts = self_written_prompts(model, tokenizer, 2000, seed=0)   # list[Prompt]
    write_prompts(prompts, "runs/data/prompts-smollm2.jsonl")

With `openers` (MagpieConfig.openers, `train.prompts --openers default`) batch b starts the user
turn with openers[b % len(openers)] ("Explain", "Compare", "Write", ...) and the model writes the
rest: an instruct model left alone drifts to a few stock openings ("Can you provide ...", "I'm
planning ..."), and heads trained on the answers to those learn little that transfers.

Deterministic for a fixed seed, model and batch size (batch b is sampled with seed*1_000_003+b).
Output file: one {"id", "category": "self", "turns": [text]} per line, written atomically; a rerun
with the same settings reads it back instead of sampling again (see `train.prompts`).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mtp.data.prompts import DataError, Prompt

_SENTINEL = "\u2063MTPUSERTURN\u2063"

#: generic first words of user requests (task verbs and question words), one per batch with --openers default
DEFAULT_OPENERS = (
    "Explain", "Write", "Describe", "Summarize", "List", "Compare", "How", "Why", "What", "Give", "Create",
    "Translate", "Tell me", "Help me", "Suggest", "Rewrite", "Solve", "Calculate", "Define", "Outline", "Draft",
    "Plan", "Design", "Analyze", "Imagine", "Generate", "Recommend", "Is it", "Which", "Who", "When", "Where",
    "Please", "I need", "My", "Discuss", "Evaluate", "Convert", "Classify", "Find",
)


@dataclass
class MagpieConfig:
    max_new_tokens: int = 48  # a user turn longer than this is dropped (truncated sample)
    batch_size: int = 32
    temperature: float = 1.0
    top_p: float = 0.95
    min_chars: int = 16
    min_letter_ratio: float = 0.5  # share of letters in a kept turn (drops code dumps and noise)
    max_attempt_factor: int = 4  # sample at most factor * n rows before giving up
    openers: tuple[str, ...] = ()  # batch b's user turns start with openers[b % len] (empty: free)


def _template_parts(tokenizer) -> tuple[str, str]:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("self-written prompts need a chat template (an instruct model): this tokenizer has none; "
                        "use --prompts builtin or a prompt file instead")
    text = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False,
                                         add_generation_prompt=False)
    cut = text.find(_SENTINEL)
    if cut < 0:
        raise DataError("the chat template does not place the user message verbatim; cannot find its prefix")
    return text[:cut], text[cut + len(_SENTINEL):]


def user_prefix_ids(tokenizer) -> list[int]:
    """Token ids of the chat template up to where a user message's text begins."""
    return list(tokenizer(_template_parts(tokenizer)[0], add_special_tokens=False)["input_ids"])


def user_turn_end(tokenizer) -> str:
    """The text that ends a user message in the template ("<|im_end|>" for ChatML; "\n" when the
    template marks the end with a line break only)."""
    suffix = _template_parts(tokenizer)[1]
    return suffix.strip() or suffix[:1] or "\n"


def _normalize(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def clean_turn(text: str, cfg: MagpieConfig) -> str | None:
    """The cleaned user turn, or None when the sample is unusable (too short, not text, a role
    marker leaked in)."""
    t = text.strip()
    if len(t) < cfg.min_chars or len(_normalize(t)) < cfg.min_chars // 2:
        return None
    if "<|" in t or "|>" in t or _SENTINEL in t:
        return None
    letters = sum(c.isalpha() for c in t)
    if letters < cfg.min_letter_ratio * len(t):
        return None
    return t


class Deduplicator:
    """Drops exact duplicates (after normalisation) and near duplicates sharing their first eight
    words, the usual failure of sampled user turns ("Can you help me with ..." repeated)."""

    def __init__(self) -> None:
        self.full: set[str] = set()
        self.heads: set[str] = set()

    def add(self, text: str) -> bool:
        norm = _normalize(text)
        head = " ".join(norm.split()[:8])
        if norm in self.full or head in self.heads:
            return False
        self.full.add(norm)
        self.heads.add(head)
        return True


@torch.no_grad()
def self_written_prompts(model, tokenizer, num_prompts: int, *, seed: int = 0, cfg: MagpieConfig | None = None,
                         progress: bool = True, id_prefix: str = "self") -> list[Prompt]:
    """Sample `num_prompts` distinct user turns from the model itself (fewer, with a warning
    printed, if max_attempt_factor * num_prompts samples do not give enough distinct ones)."""
    cfg = cfg or MagpieConfig()
    if num_prompts < 1:
        raise DataError(f"num_prompts must be >= 1, got {num_prompts}")
    if cfg.batch_size < 1 or cfg.max_new_tokens < 1:
        raise DataError("batch_size and max_new_tokens must be >= 1")
    if not cfg.temperature > 0:
        raise DataError(f"self-written prompts are sampled: temperature must be > 0, got {cfg.temperature}")
    prefix = user_prefix_ids(tokenizer)
    end_text = user_turn_end(tokenizer)
    device = next(model.parameters()).device
    eos = model.generation_config.eos_token_id
    end_ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    end_tok = tokenizer(end_text, add_special_tokens=False)["input_ids"]
    if len(end_tok) == 1:  # stop sampling a row early at the end-of-turn token
        end_ids.add(end_tok[0])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dedup = Deduplicator()
    out: list[Prompt] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_prompts, desc="self-written prompts", unit="prompt")
    sampled, batch, t0, new_tokens = 0, 0, time.perf_counter(), 0
    openers = [o.strip() for o in cfg.openers if o.strip()]
    while len(out) < num_prompts and sampled < cfg.max_attempt_factor * num_prompts:
        opener = openers[batch % len(openers)] if openers else ""
        start = prefix + (tokenizer(opener, add_special_tokens=False)["input_ids"] if opener else [])
        ids = torch.tensor([start], dtype=torch.long, device=device)
        torch.manual_seed(seed * 1_000_003 + batch)
        gen = model.generate(ids.expand(cfg.batch_size, -1), attention_mask=torch.ones_like(ids).expand(cfg.batch_size, -1),
                             do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0,
                             max_new_tokens=cfg.max_new_tokens, eos_token_id=sorted(end_ids), pad_token_id=pad)
        for row in gen[:, len(start):].tolist():
            stop = next((i for i, t in enumerate(row) if t in end_ids), len(row))
            new_tokens += min(stop + 1, len(row))
            raw = opener + tokenizer.decode(row[: stop + 1], skip_special_tokens=False)
            cut = raw.find(end_text)
            if cut < 0:  # no end of turn: a truncated sample
                continue
            text = clean_turn(raw[:cut], cfg)
            if text is None or not dedup.add(text):
                continue
            out.append(Prompt(id=f"{id_prefix}-{seed}-{len(out):06d}", turns=[text], category="self"))
            if bar is not None:
                bar.update(1)
            if len(out) >= num_prompts:
                break
        sampled += cfg.batch_size
        batch += 1
        if bar is not None:
            bar.set_postfix(kept=f"{len(out)}/{sampled}", tok_s=f"{new_tokens / (time.perf_counter() - t0):.0f}")
    if bar is not None:
        bar.close()
    if len(out) < num_prompts:
        print(f"[prompts] only {len(out)} distinct usable prompts from {sampled} samples (asked for {num_prompts})")
    return out


def write_prompts(prompts: list[Prompt], path: str | Path, meta: dict | None = None) -> None:
    """JSONL of prompts (plus `<path>.meta.json` when meta is given), each written atomically."""
    from mtp.io import atomic_write_text

    path = Path(path)
    lines = [json.dumps({"id": p.id, "category": p.category, "turns": p.turns, **({"group": p.group} if p.group else {})},
                        ensure_ascii=False) for p in prompts]
    atomic_write_text(path, "\n".join(lines) + "\n")
    if meta is not None:
        atomic_write_text(path.with_name(path.name + ".meta.json"), json.dumps(meta, indent=2) + "\n")
