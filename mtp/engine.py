"""One decode loop for plain and speculative decoding.

    prefill -> [propose -> verify (one target forward) -> accept -> commit] until every row stops

Plain decoding is the same loop with no drafter (zero drafts: every forward emits one token).
Greedy output is identical to plain greedy decoding and sampled output has exactly the target's
distribution (see `mtp.sampling.verify_chain`).
"""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter, TargetFeedback
from mtp.kv import KVState
from mtp.sampling import SamplingConfig, verify_chain
from mtp.stats import SpecStats
from mtp.tree import node_depths, verify_tree


@dataclass
class GenerationOutput:
    """tokens: new tokens per row (prompt excluded; EOS / stop text included; nothing after).
    finish_reasons: per row, "eos", "stop" or "length"."""

    tokens: list[list[int]]
    stats: SpecStats
    row_stats: list[SpecStats] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)

    def padded(self, pad_token_id: int = 0) -> torch.Tensor:
        """[B, max_len] tensor of the new tokens, right-padded."""
        L = max((len(t) for t in self.tokens), default=0)
        out = torch.full((len(self.tokens), L), pad_token_id, dtype=torch.long)
        for r, t in enumerate(self.tokens):
            out[r, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        return out


def _as_rows(input_ids, attention_mask) -> list[list[int]]:
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


def _check_inputs(model, input_ids, attention_mask, max_new_tokens, temperature, eos_token_id) -> list[list[int]]:
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
        prompts = [[_as_id(t) for t in p] for p in _as_rows(input_ids, attention_mask)]
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
                ok = 0 <= _as_id(e) < vocab
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


def _as_id(t) -> int:
    if isinstance(t, numbers.Integral) and not isinstance(t, bool):  # int, numpy integers
        return int(t)
    if isinstance(t, torch.Tensor) and t.dim() == 0 and not (t.is_floating_point() or t.is_complex()):
        return int(t)
    raise GenerationInputError(f"input_ids holds {t!r} ({type(t).__name__}): token ids must be integers")


def _left_pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = torch.as_tensor(r, dtype=torch.long)
        mask[i, T - len(r):] = 1
    return ids.to(device), mask.to(device)


class _StopChecker:
    """Finds the first emitted token that completes a stop string (decodes a short tail only)."""

    def __init__(self, stop: Sequence[str], tokenizer) -> None:
        if tokenizer is None:
            raise ValueError("stop strings need a tokenizer: pass tokenizer=... to generate()")
        self.stop = [s for s in stop if s]
        self.tokenizer = tokenizer
        self.window = max(len(s) for s in self.stop) + 2  # tokens; each decodes to >= 1 char (almost always)

    def hit(self, tokens: list[int]) -> bool:
        text = self.tokenizer.decode(tokens[-self.window:], skip_special_tokens=False)
        return any(s in text for s in self.stop)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _default_eos(model) -> list[int]:
    cfg = getattr(model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    if eos is None:  # as HF generate: the generation config decides
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def _has_sliding_window(model) -> bool:
    cfg = model.config
    return bool(getattr(cfg, "sliding_window", None)) and (
        "sliding_attention" in (getattr(cfg, "layer_types", None) or []) or getattr(cfg, "use_sliding_window", True))


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA) so that a wall-clock timer measures it; no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    input_ids,
    *,
    attention_mask: torch.Tensor | None = None,
    drafter: Drafter | None = None,
    num_draft_tokens: int | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    ignore_eos: bool = False,
    stop: Sequence[str] | None = None,
    tokenizer=None,
    pad_token_id: int | None = None,
) -> GenerationOutput:
    """Decode up to max_new_tokens tokens per row, speculatively when a drafter is given.

    Args:
        model: a transformers causal LM (its KV cache, masks and positions are used as is).
        input_ids: [B, T] tensor (left padding allowed with attention_mask), one list of ids, or a
            list of lists (rows may differ in length).
        drafter: proposes draft tokens; None gives plain decoding.
        num_draft_tokens: tokens to draft per step (default: drafter.num_draft_tokens).
        temperature, top_k, top_p: shape the target distribution (and the drafter's);
            temperature 0 is greedy.
        seed / generator: explicit RNG for sampling (generator wins).
        eos_token_id: default the model's generation_config; ignore_eos=True disables it.
        stop: stop strings (needs tokenizer); the token that completes one is the last emitted.
            They are matched in the generated text only: a stop string that begins in the prompt
            and ends in the output does not stop (HF `generate` matches across the prompt's end
            and would stop at once; the prompt is the user's, not something the model wrote).
    Returns:
        GenerationOutput with the new tokens per row and SpecStats (merged and per row).
    """
    prompts = _check_inputs(model, input_ids, attention_mask, max_new_tokens, temperature, eos_token_id)
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    device = _model_device(model)
    B = len(prompts)
    if generator is None and not cfg.greedy:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    eos = [] if ignore_eos else (_default_eos(model) if eos_token_id is None else
                                 [int(e) for e in (eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id])])
    eos_set = set(eos)
    stopper = _StopChecker(stop, tokenizer) if stop else None
    if pad_token_id is None:
        pad_token_id = eos[0] if eos else 0
    k = 0
    if drafter is not None:
        k = int(num_draft_tokens if num_draft_tokens is not None else drafter.num_draft_tokens)
        if k < 0:
            raise ValueError(f"num_draft_tokens must be >= 0, got {k}")
    hidden_layers = tuple(drafter.hidden_layers) if drafter is not None else ()
    if drafter is not None and B > 1 and _has_sliding_window(model):
        # Rolled-back rows leave masked holes in a shared cache, and a sliding window counts slots,
        # not tokens: it would see fewer real tokens than it should. Such models decode their rows
        # one after another here (same outputs, no batching speed-up).
        t_start = time.perf_counter()
        outs = [generate(model, [p], drafter=drafter.for_row(r), num_draft_tokens=num_draft_tokens,
                         max_new_tokens=max_new_tokens,
                         temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
                         eos_token_id=eos_token_id, ignore_eos=ignore_eos, stop=stop, tokenizer=tokenizer,
                         pad_token_id=pad_token_id) for r, p in enumerate(prompts)]
        row_stats = [o.row_stats[0] for o in outs]
        elapsed = time.perf_counter() - t_start
        for s in row_stats:
            s.wall_time_s = elapsed / B
        return GenerationOutput(tokens=[o.tokens[0] for o in outs], stats=SpecStats.sum(row_stats),
                                row_stats=row_stats, finish_reasons=[o.finish_reasons[0] for o in outs])

    t_start = time.perf_counter()
    seqs = [list(p) for p in prompts]
    new = [[] for _ in range(B)]
    done = [False] * B
    reasons = ["length"] * B
    stats = [SpecStats() for _ in range(B)]
    kv = KVState(model, B, device)

    def commit(r: int, tokens: list[int], drafted: int, accepted: int, depth: int | None = None,
               prefill: bool = False) -> list[int]:
        """Append a row's tokens up to max_new_tokens / EOS / stop; record its stats."""
        emitted = []
        for t in tokens:
            emitted.append(t)
            new[r].append(t)
            seqs[r].append(t)
            if t in eos_set:
                done[r], reasons[r] = True, "eos"
            elif stopper is not None and stopper.hit(new[r]):
                done[r], reasons[r] = True, "stop"
            elif len(new[r]) >= max_new_tokens:
                done[r], reasons[r] = True, "length"
            if done[r]:
                break
        n_drafts = min(len(emitted), accepted)  # emitted tokens that were accepted drafts
        stats[r].record_step(drafted, n_drafts, target_token=len(emitted) > n_drafts, depth=depth, prefill=prefill)
        return emitted

    def feedback(out, inputs, valid, positions, n_acc, committed, prefill) -> None:
        if drafter is None:
            return
        hs = {}
        if hidden_layers:
            all_hs = out.hidden_states
            hs = {layer: all_hs[layer] for layer in hidden_layers}
        drafter.observe(TargetFeedback(
            input_ids=inputs, valid=valid, position_ids=positions, hidden_states=hs,
            logits=out.logits, new_tokens=committed, num_accepted=n_acc, is_prefill=prefill,
        ))

    # ---- prefill: one forward over the prompts, then the first token -------------------------
    if drafter is not None:
        drafter.reset([list(p) for p in prompts])
    ids, mask = _left_pad(prompts, pad_token_id, device)
    out = kv.forward(ids, mask, output_hidden_states=bool(hidden_layers), logits_to_keep=1)
    positions = kv.slot_pos[:, -ids.shape[1]:].clone()
    no_draft = Draft.empty(B, device)
    n0, first = verify_chain(out.logits[:, -1:], no_draft.tokens, no_draft.lengths, cfg, generator=generator)
    first_l = first.tolist()
    committed = [commit(r, [first_l[r]], 0, 0, prefill=True) for r in range(B)]
    feedback(out, ids, mask.bool(), positions, n0, committed, True)
    pending = first  # [B] token each row feeds next

    # ---- decode loop -----------------------------------------------------------------------
    while not all(done):
        active = [not d for d in done]
        remaining = min(max_new_tokens - len(new[r]) for r in range(B) if active[r])
        k_step = min(k, remaining - 1)  # the last token of a row always comes from the target
        if drafter is not None and k_step > 0:
            t0 = time.perf_counter()
            draft = drafter.propose(DraftContext(sequences=seqs, max_tokens=k_step, sampling=cfg,
                                                 generator=generator, active=active, device=device))
            sync(device)
            dt = time.perf_counter() - t0
            for r in range(B):
                if active[r]:
                    stats[r].draft_time_s += dt / sum(active)
            tree_depths = None if draft.parents is None else node_depths(draft.parents)
            too_long = draft.max_len > k_step if tree_depths is None else (
                draft.max_len > 0 and int(tree_depths.max()) > k_step)
            if too_long:
                raise RuntimeError(f"{type(drafter).__name__} proposed more than the {k_step} tokens (depth) asked for")
            lengths = torch.where(torch.tensor(active, device=device), draft.lengths.to(device), 0)
            draft = Draft(draft.tokens.to(device), lengths, draft.probs,
                          None if draft.parents is None else draft.parents.to(device))
        else:
            draft, tree_depths = Draft.empty(B, device), None
        inputs = torch.cat([pending[:, None], draft.tokens], dim=1)  # [B, 1+K]
        before = kv.lengths
        tok_l, len_l = draft.tokens.tolist(), draft.lengths.tolist()
        if draft.parents is None:  # chain
            out = kv.forward(inputs, output_hidden_states=bool(hidden_layers))
            positions = kv.slot_pos[:, -inputs.shape[1]:].clone()
            n_acc, nxt = verify_chain(out.logits, draft.tokens, draft.lengths, cfg, draft_probs=draft.probs,
                                      generator=generator)
            kv.truncate(before + n_acc + 1)  # keep [pending, accepted drafts]; drop rejected drafts
            paths = [list(range(n)) for n in n_acc.tolist()]
            depths = len_l
            valid = torch.arange(inputs.shape[1], device=device)[None, :] < (n_acc + 1)[:, None]
        else:  # tree: one forward with a 4-D mask, then keep only the accepted path
            out = kv.forward_tree(inputs, draft.parents, draft.lengths, output_hidden_states=bool(hidden_layers))
            positions = kv.slot_pos[:, -inputs.shape[1]:].clone()
            paths, nxt = verify_tree(out.logits, draft.tokens, draft.parents, draft.lengths, cfg,
                                     draft_probs=draft.probs, generator=generator)
            keep = [[0] + [i + 1 for i in path] for path in paths]
            kv.keep(keep)
            n_acc = torch.tensor([len(p) for p in paths], device=device)
            depths = [int(tree_depths[r, : len_l[r]].max()) if len_l[r] else 0 for r in range(B)]
            valid = torch.zeros(inputs.shape, dtype=torch.bool, device=device)
            for r, k_r in enumerate(keep):
                valid[r, k_r] = True
        nxt_l = nxt.tolist()
        committed = [[] for _ in range(B)]
        for r in range(B):
            if active[r]:
                committed[r] = commit(r, [tok_l[r][i] for i in paths[r]] + [nxt_l[r]], len_l[r], len(paths[r]),
                                      depths[r])
        feedback(out, inputs, valid, positions, n_acc, committed, False)
        pending = nxt

    sync(device)
    elapsed = time.perf_counter() - t_start
    for s in stats:
        s.wall_time_s = elapsed / B
    return GenerationOutput(tokens=new, stats=SpecStats.sum(stats), row_stats=stats, finish_reasons=reasons)
