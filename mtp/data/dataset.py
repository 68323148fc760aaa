"""Tokenized training examples with response-only loss masks, length-bucketed batches, collate.

An example is (input_ids, loss_mask): loss_mask[t] = 1 when token t is a response token, i.e. a
token the target produced and the heads learn to draft. Prompt and template tokens are context only.
Accepted records (JSONL / distillation shards):
  {"prompt_ids": [...], "response_ids": [...]}       (train.distill output)
  {"input_ids": [...], "loss_mask": [...]}            (pre-tokenized)
  {"prompt": "...", "response": "..."}                (text; chat template applied to the prompt)
"""
from __future__ import annotations

import hashlib
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from mtp.chat import encode_chat
from mtp.data.distill import load_distilled
from mtp.data.prompts import DataError


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[int]
    group: str = ""  # prompt id: the train / eval split keeps turns of one prompt together
    sampled: bool = False  # the response was sampled (its record's "temperature" > 0), not greedy


def _int_list(x) -> bool:
    return isinstance(x, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)


def _first_bad(x):
    return x if not isinstance(x, list) else next(t for t in x if not isinstance(t, int) or isinstance(t, bool))


def example_from_record(rec: dict, tokenizer=None, where: str = "") -> Example:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    ex = _example(rec, tokenizer, where)
    t = rec.get("temperature") or 0
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        raise DataError(f"{where}: temperature must be a number (what the response was decoded at), got {t!r}")
    ex.sampled = t > 0
    return ex


def _example(rec: dict, tokenizer, where: str) -> Example:
    group = str(rec.get("group") or rec.get("prompt_id", rec.get("id", "")))
    if "prompt_ids" in rec and "response_ids" in rec:
        p, r = rec["prompt_ids"], rec["response_ids"]
        if not _int_list(p) or not _int_list(r):
            raise DataError(f"{where}: prompt_ids / response_ids must be lists of ints (token ids), got "
                            f"{_first_bad(p) if not _int_list(p) else _first_bad(r)!r}")
        return Example(list(p) + list(r), [0] * len(p) + [1] * len(r), group)
    if "input_ids" in rec:
        ids, mask = rec["input_ids"], rec.get("loss_mask", [1] * len(rec["input_ids"]) if isinstance(rec["input_ids"], list) else [])
        if not _int_list(ids):
            raise DataError(f"{where}: input_ids must be a list of ints (token ids), got {_first_bad(ids)!r}")
        if not isinstance(mask, list) or not all(isinstance(m, (int, float)) for m in mask):
            raise DataError(f"{where}: loss_mask must be a list of 0/1")
        if len(ids) != len(mask):
            raise DataError(f"{where}: input_ids ({len(ids)}) and loss_mask ({len(mask)}) differ in length")
        return Example(list(ids), [int(bool(m)) for m in mask], group)
    if "prompt" in rec and "response" in rec:
        if tokenizer is None:
            raise DataError(f"{where}: text records need a tokenizer")
        p = encode_chat(tokenizer, [{"role": "user", "content": rec["prompt"]}])
        r = list(tokenizer(rec["response"], add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            r.append(tokenizer.eos_token_id)
        return Example(p + r, [0] * len(p) + [1] * len(r), group)
    raise DataError(f"{where}: unknown record format (keys {sorted(rec)}); expected prompt_ids+response_ids, "
                    "input_ids(+loss_mask) or prompt+response")


def load_examples(path: str | Path, tokenizer=None, *, max_seq_len: int = 512, vocab_size: int | None = None,
                  max_examples: int = 0) -> list[Example]:
    """Examples from a distillation folder or JSONL file, truncated to max_seq_len. Examples with
    no response token left after truncation are dropped; none left at all is an error."""
    recs = load_distilled(path)
    out = []
    for i, rec in enumerate(recs):
        ex = example_from_record(rec, tokenizer, f"{path} record {i}")
        if vocab_size is not None and ex.input_ids and (max(ex.input_ids) >= vocab_size or min(ex.input_ids) < 0):
            raise DataError(f"{path} record {i}: token id {max(ex.input_ids)} is outside the target's vocabulary "
                            f"({vocab_size}); was the data made with another tokenizer?")
        ex.input_ids, ex.loss_mask = ex.input_ids[:max_seq_len], ex.loss_mask[:max_seq_len]
        if sum(ex.loss_mask[2:]) > 0:  # heads predict t+2.. : need a response token from position 2 on
            out.append(ex)
        if max_examples and len(out) >= max_examples:
            break
    if not out:
        raise DataError(f"{path}: no usable examples (every record is empty or its response lies beyond "
                        f"max_seq_len={max_seq_len})")
    return out


def split_examples(examples: list[Example], eval_fraction: float, seed: int = 0,
                   train_fraction: float = 1.0) -> tuple[list[Example], list[Example]]:
    """Held-out split by group (hashed): a record's "group", else its prompt id. Turns of one
    conversation stay on one side, and so do passage tasks and the answer they were built from
    (split apart they leak: in the kit's passage data, half of the held-out responses' 8-grams were
    in training responses, against under 1% for the suite's). train_fraction < 1 keeps that share
    of the training groups, by the same hash: the held-out side does not change (data-scaling
    curves), and a smaller share is a subset of a larger one."""
    def bucket(g: str) -> float:
        return zlib.crc32(f"{seed}:{g}".encode()) / 2**32
    if eval_fraction <= 0:
        train, held = examples, []
    else:
        train = [e for e in examples if bucket(e.group) >= eval_fraction]
        held = [e for e in examples if bucket(e.group) < eval_fraction]
        if not held or not train:  # tiny data: fall back to a plain split
            n = max(1, int(round(len(examples) * eval_fraction)))
            if len(examples) < 2:
                raise DataError("need at least 2 examples to hold one out for evaluation (or set data.eval_fraction=0)")
            train, held = examples[n:], examples[:n]
    if train_fraction < 1:
        keep = eval_fraction + train_fraction * (1 - eval_fraction)
        train = [e for e in train if bucket(e.group) < keep]
        if not train:
            raise DataError(f"data.train_fraction={train_fraction} keeps none of the training examples; raise it")
    return train, held


def examples_digest(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(torch.tensor(e.input_ids, dtype=torch.int64).numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def global_batches(lengths: list[int], global_batch: int, *, seed: int, epoch: int, bucket: bool = True,
                   bucket_chunks: int = 16) -> list[list[int]]:
    """Example indices of every global batch of one epoch (deterministic in seed and epoch).

    With bucketing, a shuffled window of `bucket_chunks` global batches is sorted by length and cut,
    then the batch order is shuffled: batches hold similar lengths, epochs still differ. The last
    incomplete batch is dropped so every process gets the same number of micro-batches.
    """
    rng = random.Random(seed * 100_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if bucket:
        win = global_batch * bucket_chunks
        idx = [i for s in range(0, len(idx), win) for i in sorted(idx[s: s + win], key=lambda i: lengths[i])]
    batches = [idx[s: s + global_batch] for s in range(0, len(idx) - global_batch + 1, global_batch)]
    if bucket:
        rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int = 0, indices: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids / attention_mask / loss_mask [B, T] (+ index [B])."""
    T = max(len(e.input_ids) for e in examples)
    B = len(examples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    lm = torch.zeros((B, T), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        attn[i, :n] = 1
        lm[i, :n] = torch.tensor(e.loss_mask)
    out = {"input_ids": ids, "attention_mask": attn, "loss_mask": lm}
    if indices is not None:
        out["index"] = torch.tensor(indices, dtype=torch.long)
    return out
