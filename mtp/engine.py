"""One decode loop for plain and speculative decoding.

    prefill -> [propose -> verify (one target forward) -> accept -> commit] until every row stops

Plain decoding is the same loop with no drafter (zero drafts: every forward emits one token).
Greedy output is identical to plain greedy decoding and sampled output has exactly the target's
distribution (see `mtp.sampling.verify_chain`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter, TargetFeedback
from mtp.inputs import GenerationInputError, check_inputs  # noqa: F401  (GenerationInputError: re-exported)
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


@dataclass
class _Options:
    """generate()'s decoding arguments, resolved once; the per-row fallback passes them on as is."""

    max_new_tokens: int
    num_draft_tokens: int | None  # None: each drafter's own default
    sampling: SamplingConfig
    generator: torch.Generator | None
    eos: set[int]
    stopper: _StopChecker | None
    pad_token_id: int


def _draft_len(drafter: Drafter | None, num_draft_tokens: int | None) -> int:
    """Tokens to draft per step (0: plain decoding)."""
    if drafter is None:
        return 0
    k = int(num_draft_tokens if num_draft_tokens is not None else drafter.num_draft_tokens)
    if k < 0:
        raise ValueError(f"num_draft_tokens must be >= 0, got {k}")
    return k


@dataclass
class DecodeState:
    """Per-row progress of one generation."""

    seqs: list[list[int]]  # prompt + committed tokens; the last one is the pending token
    new: list[list[int]]  # committed tokens only (the output)
    done: list[bool]
    reasons: list[str]  # finish reason per row: "eos", "stop" or "length"
    stats: list[SpecStats]
    pending: torch.Tensor | None = None  # [B] the token each row feeds the target next

    @property
    def active(self) -> list[bool]:
        return [not d for d in self.done]


@dataclass
class Verified:
    """What one verify forward accepted, for chains and trees alike."""

    paths: list[list[int]]  # per row, the accepted draft indices in path order (a chain: 0..n-1)
    next_tokens: torch.Tensor  # [B] the target's own token after the path: the new pending token
    num_accepted: torch.Tensor  # [B] len(paths[r])
    valid: torch.Tensor  # [B, 1+K] bool, inputs now in the committed context (pending + path)
    depths: list[int]  # per row, the draft's depth (a chain: its length)


class _Decoder:
    """The decode loop's pieces: prefill, then step() (draft -> verify -> commit) until every row stops."""

    def __init__(self, model: torch.nn.Module, prompts: list[list[int]], drafter: Drafter | None,
                 opts: _Options) -> None:
        self.device = _model_device(model)
        self.drafter = drafter
        self.opts = opts
        self.k = _draft_len(drafter, opts.num_draft_tokens)
        self.hidden_layers = tuple(drafter.hidden_layers) if drafter is not None else ()
        B = len(prompts)
        self.state = DecodeState(seqs=[list(p) for p in prompts], new=[[] for _ in range(B)], done=[False] * B,
                                 reasons=["length"] * B, stats=[SpecStats() for _ in range(B)])
        self.kv = KVState(model, B, self.device)

    def prefill(self, prompts: list[list[int]]) -> None:
        """One forward over the (left-padded) prompts, then the first token of every row."""
        B, cfg, st = len(prompts), self.opts.sampling, self.state
        if self.drafter is not None:
            self.drafter.reset([list(p) for p in prompts])
        ids, mask = _left_pad(prompts, self.opts.pad_token_id, self.device)
        t0 = time.perf_counter()
        out = self.kv.forward(ids, mask, output_hidden_states=bool(self.hidden_layers), logits_to_keep=1)
        no_draft = Draft.empty(B, self.device)
        n0, first = verify_chain(out.logits[:, -1:], no_draft.tokens, no_draft.lengths, cfg,
                                 generator=self.opts.generator)
        first_l = first.tolist()
        dt = self._elapsed(t0)
        for s in st.stats:
            s.prefill_time_s += dt / B
        committed = [self._commit(r, [first_l[r]], 0, 0, prefill=True) for r in range(B)]
        self._observe(out, ids, mask.bool(), n0, committed, prefill=True)
        st.pending = first

    def step(self) -> None:
        """One decode step: draft -> verify (one target forward) -> commit."""
        st = self.state
        active = st.active
        remaining = min(self.opts.max_new_tokens - len(st.new[r]) for r in range(len(active)) if active[r])
        k_step = min(self.k, remaining - 1)  # the last token of a row always comes from the target
        draft, node_depth = self._draft(active, k_step)
        inputs = torch.cat([st.pending[:, None], draft.tokens], dim=1)  # [B, 1+K]
        tok_l, len_l = draft.tokens.tolist(), draft.lengths.tolist()
        t0 = time.perf_counter()
        out, v = self._verify(inputs, draft, node_depth)
        nxt_l = v.next_tokens.tolist()
        rows = [r for r in range(len(active)) if active[r]]
        dt = self._elapsed(t0)
        for r in rows:  # the forward's time, for the cost model's curve measured in the run itself
            st.stats[r].record_forward_time(len_l[r], draft.parents is not None, dt / len(rows))
        committed = [self._commit(r, [tok_l[r][i] for i in v.paths[r]] + [nxt_l[r]], len_l[r], len(v.paths[r]),
                                  v.depths[r]) if active[r] else [] for r in range(len(active))]
        self._observe(out, inputs, v.valid, v.num_accepted, committed, prefill=False)
        st.pending = v.next_tokens

    def _draft(self, active: list[bool], k_step: int) -> tuple[Draft, torch.Tensor | None]:
        """The drafter's proposal (finished rows: none) and, for a tree, its [B, N] node depths."""
        device, B = self.device, len(active)
        if self.drafter is None or k_step <= 0:
            return Draft.empty(B, device), None
        t0 = time.perf_counter()
        draft = self.drafter.propose(DraftContext(sequences=self.state.seqs, max_tokens=k_step,
                                                  sampling=self.opts.sampling, generator=self.opts.generator,
                                                  active=active, device=device))
        self._charge_drafting([r for r in range(B) if active[r]], t0)
        node_depth = None if draft.parents is None else node_depths(draft.parents)
        too_long = draft.max_len > k_step if node_depth is None else (
            draft.max_len > 0 and int(node_depth.max()) > k_step)
        if too_long:
            raise RuntimeError(f"{type(self.drafter).__name__} proposed more than the {k_step} tokens (depth) asked for")
        lengths = torch.where(torch.tensor(active, device=device), draft.lengths.to(device), 0)
        return Draft(draft.tokens.to(device), lengths, draft.probs,
                     None if draft.parents is None else draft.parents.to(device)), node_depth

    def _verify(self, inputs: torch.Tensor, draft: Draft, node_depth: torch.Tensor | None):
        """One target forward over [pending, drafts]; accept a path, roll the cache back to it.
        Returns (the model's output, Verified)."""
        kv, cfg, gen, device = self.kv, self.opts.sampling, self.opts.generator, self.device
        hidden = bool(self.hidden_layers)
        before = kv.lengths
        len_l = draft.lengths.tolist()
        if draft.parents is None:  # chain
            out = kv.forward(inputs, output_hidden_states=hidden)
            n_acc, nxt = verify_chain(out.logits, draft.tokens, draft.lengths, cfg, draft_probs=draft.probs,
                                      generator=gen)
            kv.truncate(before + n_acc + 1)  # keep [pending, accepted drafts]; drop rejected drafts
            paths = [list(range(n)) for n in n_acc.tolist()]
            valid = torch.arange(inputs.shape[1], device=device)[None, :] < (n_acc + 1)[:, None]
            return out, Verified(paths, nxt, n_acc, valid, depths=len_l)
        # tree: one forward with a 4-D mask, then keep only the accepted path
        out = kv.forward_tree(inputs, draft.parents, draft.lengths, depths=node_depth, output_hidden_states=hidden)
        paths, nxt = verify_tree(out.logits, draft.tokens, draft.parents, draft.lengths, cfg,
                                 draft_probs=draft.probs, generator=gen)
        keep = [[0] + [i + 1 for i in path] for path in paths]
        kv.keep(keep)
        valid = torch.zeros(inputs.shape, dtype=torch.bool, device=device)
        for r, k_r in enumerate(keep):
            valid[r, k_r] = True
        depths = [int(node_depth[r, :n].max()) if n else 0 for r, n in enumerate(len_l)]
        return out, Verified(paths, nxt, torch.tensor([len(p) for p in paths], device=device), valid, depths)

    def _commit(self, r: int, tokens: list[int], drafted: int, accepted: int, depth: int | None = None,
                prefill: bool = False) -> list[int]:
        """Append a row's tokens up to max_new_tokens / EOS / stop; record its stats."""
        st, opts = self.state, self.opts
        emitted = []
        for t in tokens:
            emitted.append(t)
            st.new[r].append(t)
            st.seqs[r].append(t)
            if t in opts.eos:
                st.done[r], st.reasons[r] = True, "eos"
            elif opts.stopper is not None and opts.stopper.hit(st.new[r]):
                st.done[r], st.reasons[r] = True, "stop"
            elif len(st.new[r]) >= opts.max_new_tokens:
                st.done[r], st.reasons[r] = True, "length"
            if st.done[r]:
                break
        n_drafts = min(len(emitted), accepted)  # emitted tokens that were accepted drafts
        st.stats[r].record_step(drafted, n_drafts, target_token=len(emitted) > n_drafts, depth=depth, prefill=prefill)
        return emitted

    def _observe(self, out, inputs: torch.Tensor, valid: torch.Tensor, num_accepted: torch.Tensor,
                 committed: list[list[int]], prefill: bool) -> None:
        """Tell the drafter what the target's forward produced; after a decode step, the time it takes
        counts as drafting time (`SpecStats.draft_time_s` holds propose and observe)."""
        if self.drafter is None:
            return
        hs = {layer: out.hidden_states[layer] for layer in self.hidden_layers}
        t0 = time.perf_counter()
        self.drafter.observe(TargetFeedback(
            input_ids=inputs, valid=valid, hidden_states=hs, logits=out.logits, new_tokens=committed,
            num_accepted=num_accepted, is_prefill=prefill,
        ))
        rows = [r for r, c in enumerate(committed) if c]
        if not prefill and rows:  # a head's work on the verified tokens is drafting time too
            self._charge_drafting(rows, t0)

    def _elapsed(self, t0: float) -> float:
        """Seconds since t0, after a device sync (queued work counts)."""
        sync(self.device)
        return time.perf_counter() - t0

    def _charge_drafting(self, rows: list[int], t0: float) -> None:
        """The time since t0 as drafting time, split evenly over `rows`."""
        dt = self._elapsed(t0)
        for r in rows:
            self.state.stats[r].draft_time_s += dt / len(rows)


def _resolve(model, drafter: Drafter | None, *, num_draft_tokens, max_new_tokens, temperature, top_k, top_p, seed,
             generator, eos_token_id, ignore_eos, stop, tokenizer, pad_token_id) -> _Options:
    """generate()'s arguments -> _Options (seeds a generator for sampling; resolves EOS and padding)."""
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    if generator is None and not cfg.greedy:
        generator = torch.Generator(device=_model_device(model))
        generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    eos = [] if ignore_eos else (_default_eos(model) if eos_token_id is None else
                                 [int(e) for e in (eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id])])
    stopper = _StopChecker(stop, tokenizer) if stop else None
    if pad_token_id is None:
        pad_token_id = eos[0] if eos else 0
    _draft_len(drafter, num_draft_tokens)  # fail early on a negative count
    return _Options(max_new_tokens=max_new_tokens, num_draft_tokens=num_draft_tokens, sampling=cfg,
                    generator=generator, eos=set(eos), stopper=stopper, pad_token_id=pad_token_id)


def _decode(model: torch.nn.Module, prompts: list[list[int]], drafter: Drafter | None,
            opts: _Options) -> GenerationOutput:
    """Decode validated, unpadded prompts as one batch: prefill, then step() until every row stops."""
    t_start = time.perf_counter()
    dec = _Decoder(model, prompts, drafter, opts)
    dec.prefill(prompts)
    while not all(dec.state.done):
        dec.step()
    sync(dec.device)
    st, elapsed = dec.state, time.perf_counter() - t_start
    for s in st.stats:
        s.wall_time_s = elapsed / len(prompts)
    return GenerationOutput(tokens=st.new, stats=SpecStats.sum(st.stats), row_stats=st.stats, finish_reasons=st.reasons)


def _decode_row_by_row(model: torch.nn.Module, prompts: list[list[int]], drafter: Drafter,
                       opts: _Options) -> GenerationOutput:
    """`_decode` on each row alone (same outputs, no batching speed-up), results merged."""
    t_start = time.perf_counter()
    outs = [_decode(model, [p], drafter.for_row(r), opts) for r, p in enumerate(prompts)]
    row_stats = [o.row_stats[0] for o in outs]
    elapsed = time.perf_counter() - t_start
    for s in row_stats:
        s.wall_time_s = elapsed / len(prompts)
    return GenerationOutput(tokens=[o.tokens[0] for o in outs], stats=SpecStats.sum(row_stats),
                            row_stats=row_stats, finish_reasons=[o.finish_reasons[0] for o in outs])


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
    prompts = check_inputs(model, input_ids, attention_mask, max_new_tokens, temperature, eos_token_id)
    opts = _resolve(model, drafter, num_draft_tokens=num_draft_tokens, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, generator=generator,
                    eos_token_id=eos_token_id, ignore_eos=ignore_eos, stop=stop, tokenizer=tokenizer,
                    pad_token_id=pad_token_id)
    if drafter is not None and len(prompts) > 1 and _has_sliding_window(model):
        # Rolled-back rows leave masked holes in a shared cache, and a sliding window counts slots,
        # not tokens: it would see fewer real tokens than it should. Such models decode their rows
        # one after another.
        return _decode_row_by_row(model, prompts, drafter, opts)
    return _decode(model, prompts, drafter, opts)
