"""generate()'s inputs, checked: prompt ids as unpadded rows, or a GenerationInputError that says
what to pass instead."""
from __future__ import annotations

import numbers

import torch


def as_rows(input_ids, attention_mask) -> list[list[int]]:
    """Unpadded prompt ids per row from a tensor (with optional mask) or lists."""
    if isinstance(input_ids, torch.Tensor):
        ids = input_ids.detach().cpu()
        if ids.dim() == 1:
            ids = ids[None]
        if attention_mask is None:
            return [row.tolist() for row in ids]
        mask = attention_mask.detach().cpu().bool()
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {tuple(mask.shape)} != input_ids shape {tuple(ids.shape)}")
        return [row[m].tolist() for row, m in zip(ids, mask)]
    if len(input_ids) and isinstance(input_ids[0], int):
        return [list(input_ids)]
    return [list(r) for r in input_ids]


class GenerationInputError(ValueError):
    """Bad arguments to `generate` (prompt type or ids, length against the context, temperature, eos)."""


def check_inputs(model, input_ids, attention_mask, max_new_tokens, temperature, eos_token_id) -> list[list[int]]:
    """Validate generate()'s inputs; return the unpadded prompt ids per row."""
    if isinstance(input_ids, (str, bytes)):
        raise GenerationInputError("input_ids is a string: tokenize it first, e.g. tokenizer(text).input_ids")
    if type(input_ids).__module__ == "numpy":
        if input_ids.dtype.kind not in "iu":
            raise GenerationInputError(f"input_ids is a numpy array of {input_ids.dtype}: token ids must be integers")
        input_ids = torch.from_numpy(input_ids.astype("int64"))
    if isinstance(input_ids, torch.Tensor) and (input_ids.is_floating_point() or input_ids.is_complex()):
        raise GenerationInputError(f"input_ids is a {input_ids.dtype} tensor: token ids must be integers (torch.long)")
    if max_new_tokens < 1:
        raise GenerationInputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature is None or not temperature == temperature or temperature < 0 or temperature == float("inf"):
        raise GenerationInputError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature}")
    if isinstance(input_ids, (list, tuple)) and input_ids and isinstance(input_ids[0], numbers.Number):
        input_ids = [input_ids]  # one row given as a flat list
    try:
        prompts = [[as_id(t) for t in p] for p in as_rows(input_ids, attention_mask)]
    except TypeError:
        raise GenerationInputError("input_ids must be a [B, T] integer tensor, a list of ints or a list of "
                                   f"lists of ints; got {type(input_ids).__name__}") from None
    if not prompts or any(len(p) == 0 for p in prompts):
        raise GenerationInputError("every row of input_ids needs at least one token")
    cfg = model.config
    vocab = getattr(cfg, "vocab_size", None)
    if vocab:
        bad = [t for p in prompts for t in p if not 0 <= t < vocab]
        if bad:
            raise GenerationInputError(f"token id {bad[0]} in input_ids is outside the model's vocabulary "
                                       f"(size {vocab}, ids 0..{vocab - 1})")
        eos = [] if eos_token_id is None else list(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
        for e in eos:
            try:
                ok = 0 <= as_id(e) < vocab
            except GenerationInputError:
                ok = False
            if not ok:
                raise GenerationInputError(f"eos_token_id {e!r} is outside the model's vocabulary (size {vocab})")
    ctx = getattr(cfg, "max_position_embeddings", None)
    longest = max(len(p) for p in prompts)
    if ctx and longest + max_new_tokens > ctx:
        raise GenerationInputError(f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} = "
                                   f"{longest + max_new_tokens} exceeds the model's context of {ctx} tokens")
    return prompts


def as_id(t) -> int:
    if isinstance(t, numbers.Integral) and not isinstance(t, bool):  # int, numpy integers
        return int(t)
    if isinstance(t, torch.Tensor) and t.dim() == 0 and not (t.is_floating_point() or t.is_complex()):
        return int(t)
    raise GenerationInputError(f"input_ids holds {t!r} ({type(t).__name__}): token ids must be integers")
