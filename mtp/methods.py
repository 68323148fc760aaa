"""Ways of generating behind one interface, and their spec strings.

- `Method.run`: one timed generation at batch 1 (device-synchronised) -> `RunRecord`, whose
  `as_sample` is the one line format of a results folder's samples.jsonl: `HFMethod` (HF
  `generate`, optionally with its prompt lookup) and `KitMethod` (mtp.engine with any drafter);
- `make_method`: a method from its spec string (hf, vanilla, pld, draft:<model>, heads:<dir>,
  pld+heads:<dir>, with :K / :auto / :tree<N>).
mtp.bench runs them over suites; mtp.sweep and mtp.costmodel use their drafters.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass, field

import torch

from mtp.engine import generate, sync


@dataclass
class RunRecord:
    """One generation (batch 1). accept_lengths/draft_lengths: one entry per speculative step.
    Metrics (tau, tokens/s) come from mtp.results over its samples, never from here."""

    method: str
    output_ids: list[int]
    new_tokens: int
    wall_time_s: float
    target_forwards: int
    accept_lengths: list[int] = field(default_factory=list)
    draft_lengths: list[int] = field(default_factory=list)
    draft_depths: list[int] = field(default_factory=list)
    draft_time_s: float = 0.0  # time spent drafting (kit methods)
    prefill_time_s: float = 0.0  # the prefill forward's time (kit methods)
    step_costs: list[list] | None = None  # [drafted, tree, seconds] per decode forward (kit methods; None: not timed)
    # steps per proposal a choosing drafter verified (AdaptiveUnionDrafter.mode_steps: union / lookup /
    # heads / plain); None for drafters that do not choose
    choices: dict[str, int] | None = None

    def as_sample(self, prompt_id, repeat: int, turn: int = 0, category: str = "", **extra) -> dict:
        """This record as one line of a results folder's samples.jsonl (the one sample schema, see
        mtp.results); `extra`: method_key, length, prompt_tokens, max_new_tokens."""
        return {"method": self.method, "prompt_id": str(prompt_id), "category": category, "turn": turn,
                "repeat": repeat, "output_ids": self.output_ids, "new_tokens": self.new_tokens,
                "wall_time_s": self.wall_time_s, "target_forwards": self.target_forwards,
                "accept_lengths": self.accept_lengths, "draft_lengths": self.draft_lengths,
                "draft_depths": self.draft_depths, "draft_time_s": self.draft_time_s,
                "prefill_time_s": self.prefill_time_s, "step_costs": self.step_costs,
                **({"choices": self.choices} if self.choices is not None else {}), **extra}


def device_of(model) -> torch.device:
    return next(model.parameters()).device


class _ForwardCounter:
    """Counts a model's forward calls and the cache length each one started from (HF methods)."""

    def __init__(self, model) -> None:
        self.model = model
        self.starts: list[int] = []
        self.inputs: list[int] = []

    def __enter__(self):
        def pre_hook(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            self.starts.append(int(cache.get_seq_length()) if cache is not None else 0)
            self.inputs.append(int(ids.shape[1]) if ids is not None else 0)

        self._h = self.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self._h.remove()


class Method:
    """A named way to generate one prompt. Subclasses implement `_run`."""

    name: str = ""

    def __init__(self, name: str, model, tokenizer) -> None:
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.key = name  # what runs: make_method sets the spec (+ heads fingerprint)
        self.auto_k: int | None = None  # the draft length ":auto" chose (make_method)
        self.device = device_of(model)

    def run(self, prompt_ids: list[int], *, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
            top_p: float | None = None, seed: int | None = None, ignore_eos: bool = False) -> RunRecord:
        """Generate for one prompt and time it (synchronised on CUDA). ignore_eos: always run
        max_new_tokens (for fixed output lengths)."""
        sync(self.device)
        t0 = time.perf_counter()
        rec = self._run(prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, ignore_eos=ignore_eos)
        sync(self.device)
        rec.wall_time_s = time.perf_counter() - t0
        return rec

    def _run(self, prompt_ids, **kw) -> RunRecord:  # pragma: no cover - abstract
        raise NotImplementedError


class HFMethod(Method):
    """transformers `generate` (plain, or prompt lookup with prompt_lookup_num_tokens)."""

    def __init__(self, name, model, tokenizer, prompt_lookup_num_tokens: int | None = None,
                 max_matching_ngram_size: int = 2) -> None:
        super().__init__(name, model, tokenizer)
        self.pld = prompt_lookup_num_tokens
        self.ngram = max_matching_ngram_size

    @torch.no_grad()
    def _run(self, prompt_ids, *, max_new_tokens, temperature, top_k, top_p, seed, ignore_eos) -> RunRecord:
        ids = torch.tensor([prompt_ids], device=self.device)
        kw = dict(max_new_tokens=max_new_tokens, attention_mask=torch.ones_like(ids))
        if temperature > 0:
            if seed is not None:
                torch.manual_seed(seed)
            kw.update(do_sample=True, temperature=temperature, top_k=top_k or 0, top_p=top_p or 1.0)
        else:
            kw.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        if self.pld:
            kw.update(prompt_lookup_num_tokens=self.pld, max_matching_ngram_size=self.ngram)
        gc = copy.deepcopy(self.model.generation_config)
        if gc.pad_token_id is None:
            gc.pad_token_id = gc.eos_token_id if not isinstance(gc.eos_token_id, list) else gc.eos_token_id[0]
        if ignore_eos:
            gc.eos_token_id = None
        for key, value in kw.items():
            if key != "attention_mask":
                setattr(gc, key, value)
        with _ForwardCounter(self.model) as counter:
            out = self.model.generate(ids, attention_mask=kw["attention_mask"], generation_config=gc)
        new = out[0, ids.shape[1]:].tolist()
        # HF does not report per-step acceptance; its forwards are counted (tau), its steps are not
        # reconstructed (a guess from cache lengths was wrong in 11 of 12 prompts).
        return RunRecord(self.name, new, len(new), 0.0, len(counter.starts))


class KitMethod(Method):
    """The kit's engine, with or without a drafter."""

    def __init__(self, name, model, tokenizer, drafter=None, num_draft_tokens: int | None = None) -> None:
        super().__init__(name, model, tokenizer)
        self.drafter = drafter
        self.k = num_draft_tokens

    def _run(self, prompt_ids, *, max_new_tokens, temperature, top_k, top_p, seed, ignore_eos) -> RunRecord:
        out = generate(self.model, prompt_ids, drafter=self.drafter, num_draft_tokens=self.k,
                       max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                       ignore_eos=ignore_eos)
        s = out.stats
        choices = getattr(self.drafter, "mode_steps", None)  # counted per generation
        return RunRecord(self.name, out.tokens[0], s.new_tokens, 0.0, s.target_forwards, list(s.accept_lengths),
                         list(s.draft_lengths), list(s.draft_depths), s.draft_time_s, s.prefill_time_s,
                         list(s.step_costs), dict(choices) if choices is not None else None)


class MethodSpecError(ValueError):
    """A method spec that does not parse; the message lists the valid forms."""


METHOD_FORMS = ("hf, vanilla, hf-pld[:K], pld[:K], draft:<model>[:K], heads:<checkpoint dir>[:K|:auto][:tree<N>|:stree<N>|:autotree][:dt<t>], "
                "pld+heads:<checkpoint dir>[:K|:auto][:tree<N>], union+heads:<checkpoint dir>[:K|:auto][:tree<N>], "
                "adapt+heads:<checkpoint dir>[:K|:auto][:tree<N>|:stree<N>][:chain<N>[:dt<t>]]")


def _k(spec: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise MethodSpecError(f"method {spec!r}: the draft length must be a whole number >= 1, got {text!r}")
    return int(text)


def _split_k(spec: str, body: str, default: int) -> tuple[str, int]:
    """"name:K" -> (name, K); a trailing ":<not a number>" on a path is part of the path."""
    head, sep, tail = body.rpartition(":")
    if sep and tail.isdigit():
        return head, _k(spec, tail)
    return body, default


def heads_fingerprint(path) -> str:
    """Short content hash of a heads checkpoint (config.json + weights): a retrained head in the
    same folder gets a new fingerprint, so benchmark resumes do not reuse its old cells."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        f = Path(path) / name
        if f.is_file():
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def make_method(spec: str, model, tokenizer, *, batch_size: int = 1, temperature: float = 0.0) -> Method:
    """Build a method from its spec string (parsed strictly; MethodSpecError names the problem).

    hf | vanilla | hf-pld[:K] | pld[:K] | draft:<model>[:K] | heads:<checkpoint dir>[:K][:tree<N>] | heads:<dir>:autotree | <checkpoint dir>
    | pld+heads:<checkpoint dir>[:K][:tree<N>] | union+heads:<checkpoint dir>[:K][:tree<N>]
    | adapt+heads:<checkpoint dir>[:K][:tree<N>][:chain<N>]
    K defaults: 10 for prompt lookup (HF's default), 4 for draft models, the head's own for heads.
    ":tree<N>": the heads draft EAGLE-2 dynamic trees of N nodes and depth K; each depth keeps its
    tree_width(N, K) best nodes (at least 4, and enough that K depths hold N nodes).
    "pld+heads:...": prompt lookup (10 tokens, 2-3-gram match) where the context repeats, the heads
    elsewhere (mtp.drafters.combined.LookupFirstDrafter).
    "union+heads:...": the heads draft every step and prompt lookup's chain, where there is one, is
    grafted into their draft as one more tree branch; one verify checks both
    (mtp.drafters.combined.LookupUnionDrafter).
    "adapt+heads:...": per row and step, the union, lookup's chain alone, the heads' draft alone, the
    heads' chain of N with :chain<N> after the tree (off by default; greedy at T = 0, sampled from
    their q at T > 0, their argmax with a final :dt0) or none,
    whichever the acceptance seen on earlier steps and this machine's verify-cost curve (timed when
    the method is built, a few seconds) predict to be fastest (mtp.drafters.adaptive.AdaptiveUnionDrafter).
    ":auto": the chain length the cost model predicts fastest at `batch_size` on this machine, from
    the acceptance the trainer measured on held-out data (mtp.shape.auto_draft_length): at
    `temperature` 0 the greedy chain's, at T > 0 the sampled chain's (eval/sampled_a_k; a run
    that did not record it falls back to the greedy a_k, which overstates acceptance at T > 0).
    ":dt<t>" (last; chains, or adapt+'s :chain<N>): how the heads' chain drafts at T > 0: ":dt0" drafts their argmax
    (a point mass, accepted with the target's probability of it), ":dt0.5" samples their
    distribution at temperature 0.5; by default it is sampled at the target's temperature.
    ":stree<N>": at T > 0 a static tree of N nodes and depth K whose nodes are sampled from the
    heads' distribution (i.i.d. siblings, verified by recursive rejection sampling), shaped by
    `best_static_tree` over their held-out acceptance by depth and rank; top-k nodes at T = 0.
    ":autotree" (in place of :K / :tree<N>): a static tree, `best_static_tree` over the held-out
    acceptance by depth and rank, of the size the cost model predicts fastest from this machine's
    verify-cost curve and the drafter's cost for each candidate (mtp.shape.auto_tree).
    `method.key` identifies what runs (the spec, plus a weights fingerprint for heads).
    """
    from mtp.drafters import DraftModelDrafter, PromptLookupDrafter

    spec = spec.strip()
    m: Method
    if spec in ("hf", "vanilla"):
        m = HFMethod(spec, model, tokenizer) if spec == "hf" else KitMethod(spec, model, tokenizer)
    elif spec == "hf-pld" or spec.startswith("hf-pld:"):
        k = _k(spec, spec.split(":", 1)[1]) if ":" in spec else 10
        m = HFMethod(spec, model, tokenizer, prompt_lookup_num_tokens=k)
    elif spec == "pld" or spec.startswith("pld:"):
        k = _k(spec, spec.split(":", 1)[1]) if ":" in spec else 10
        m = KitMethod(spec, model, tokenizer, PromptLookupDrafter(num_draft_tokens=k), k)
    elif spec.startswith("draft:"):
        from mtp.models import load_model

        name, k = _split_k(spec, spec[len("draft:"):], 4)
        if not name:
            raise MethodSpecError(f"method {spec!r}: name the draft model (draft:<model>[:K])")
        dm, _ = load_model(name, dtype=next(model.parameters()).dtype, device=device_of(model))
        m = KitMethod(spec, model, tokenizer, DraftModelDrafter(dm, k, vocab_size=model.config.vocab_size), k)
    else:
        return _heads_method(spec, model, tokenizer, batch_size, temperature)
    m.key = spec
    return m


def _pop_draft_temperature(spec: str, body: str) -> tuple[str, float | None]:
    """"...:dt<t>" -> ("...", t); no :dt suffix -> (body, None)."""
    head_part, sep, tail = body.rpartition(":")
    if not (sep and tail.startswith("dt")):
        return body, None
    try:
        t = float(tail[2:])
    except ValueError:
        t = -1.0
    if not t >= 0:
        raise MethodSpecError(f"method {spec!r}: :dt<t> takes a draft temperature >= 0 (:dt0 drafts the "
                              f"heads' argmax at any temperature), got {tail!r}")
    return head_part, t


def _pop_tree(spec: str, body: str) -> tuple[str, str | None, int]:
    """Strip the tree suffix: (body, kind, N) with kind "tree" for ":tree<N>" (an EAGLE-2 dynamic
    tree of N nodes, depth K), "stree" for ":stree<N>" (sampled nodes, static shape), "autotree",
    or None for no tree (N 0 where it has none)."""
    head_part, sep, tail = body.rpartition(":")
    if sep and tail == "autotree":  # a static tree from held-out acceptance and this machine's costs
        _, sep2, tail2 = head_part.rpartition(":")
        if sep2 and (tail2 == "auto" or tail2.isdigit() or tail2.startswith(("tree", "stree"))):
            raise MethodSpecError(f"method {spec!r}: :autotree chooses the tree's size and depth itself; "
                                  "drop the :K / :auto / :tree<N> before it")
        return head_part, "autotree", 0
    if sep and tail.startswith(("tree", "stree")):
        kind = "stree" if tail.startswith("s") else "tree"
        return head_part, kind, _k(spec, tail[len(kind):])
    return body, None, 0


def _heads_method(spec: str, model, tokenizer, batch_size: int, temperature: float = 0.0) -> "KitMethod":
    """heads:<dir>... | pld+heads:<dir>... | union+heads:<dir>... | adapt+heads:<dir>... | <dir> (see make_method)."""
    combine = next((c for c in ("pld+", "union+", "adapt+") if spec.startswith(c + "heads:")), None)
    explicit = combine is not None or spec.startswith("heads:")
    body = spec.split("heads:", 1)[1] if explicit else spec
    chain_tokens = 0  # adapt+: the heads' chain choice (0: none)
    body, draft_t = _pop_draft_temperature(spec, body)  # :dt<t>: how the heads' chain drafts at T > 0
    head_part, sep, tail = body.rpartition(":")
    if sep and tail.startswith("chain") and tail[len("chain"):].isdigit():
        if combine != "adapt+":
            raise MethodSpecError(f"method {spec!r}: :chain<N> is an option of adapt+heads:... only (the adaptive "
                                  "union's chain choice); drop it, or write adapt+heads:<dir>:K:tree<N>:chain<N>")
        body, chain_tokens = head_part, int(tail[len("chain"):])
    body, tree_kind, nodes = _pop_tree(spec, body)
    autotree = tree_kind == "autotree"
    if draft_t is not None and tree_kind is not None and not chain_tokens:
        raise MethodSpecError(f"method {spec!r}: :dt<t> sets how the heads' chain drafts at T > 0, not "
                              "a tree's nodes (:stree<N> samples those): drop :dt or the tree, or give "
                              "adapt+heads:... a chain choice (:chain<N>) for it to set")
    if chain_tokens and tree_kind is None:
        raise MethodSpecError(f"method {spec!r}: :chain<N> is the heads' chain beside their tree; "
                              "give a tree (:tree<N>) or drop :chain<N>")
    auto = body.endswith(":auto")
    if auto:
        body = body[: -len(":auto")]
    base, k = _split_k(spec, body, 0)
    if not os.path.isdir(base):
        if explicit:
            raise MethodSpecError(f"method {spec!r}: heads folder {base!r} not found (train heads with "
                                  "`python -m train.heads`, then pass their best/ or final/ folder)")
        raise MethodSpecError(f"unknown method {spec!r}: use {METHOD_FORMS}, or an existing heads checkpoint "
                              "folder")
    from mtp.heads import load_heads

    heads = load_heads(base, model)
    if auto:
        if tree_kind is not None:
            raise MethodSpecError(f"method {spec!r}: :auto chooses a chain length; give trees an explicit depth")
        k = _auto_k(spec, base, heads, model, batch_size, temperature)
    chosen = None
    if autotree:
        chosen = _auto_tree(spec, base, heads, model, batch_size)
    if chosen is not None:
        drafter = heads.as_drafter(tree=chosen, draft_temperature=draft_t)
    elif autotree:  # no tree predicted to beat plain decoding: the cheapest, one draft token
        drafter = heads.as_drafter(1)
    elif tree_kind == "stree":
        from mtp.tree import best_static_tree

        acc = _heldout_ranks(spec, base, ":stree<N>")[: k or heads.config.num_heads]
        drafter = heads.as_drafter(tree=best_static_tree(acc, nodes), sample_tree=True, draft_temperature=draft_t)
    elif tree_kind == "tree":
        from mtp.tree import DynamicTreeConfig

        depth = k or heads.config.num_heads
        drafter = heads.as_drafter(tree=DynamicTreeConfig(total_tokens=nodes, depth=depth, top_k=tree_width(nodes, depth)),
                                   draft_temperature=draft_t)
    else:
        drafter = heads.as_drafter(k or None, draft_temperature=draft_t)
    if combine is not None:
        from mtp.drafters import AdaptiveUnionDrafter, LookupFirstDrafter, LookupUnionDrafter

        if combine == "adapt+":
            from mtp.costmodel import machine_verify_cost

            drafter = AdaptiveUnionDrafter(drafter, machine_verify_cost(model, batch_size), chain_tokens=chain_tokens)
        else:
            drafter = (LookupFirstDrafter if combine == "pld+" else LookupUnionDrafter)(drafter)
    m = KitMethod(spec, model, tokenizer, drafter, None if (combine is not None or autotree) else k or None)
    m.key = f"{spec}#{heads_fingerprint(base)}"
    if combine == "adapt+":  # its lookup rule (round 15: 1-3-grams, the best-agreeing occurrence)
        m.key += f"#lookup{drafter.min_ngram}-{drafter.max_ngram}{drafter.prefer}"
    m.key += f"#k{k}" if auto else ""
    if autotree:  # what ran: the chosen tree's nodes
        m.key += "#tree" + ("-".join("".join(map(str, c)) for c in chosen.choices) if chosen is not None else "k1")
    m.auto_k = k if auto else None
    return m


def tree_width(nodes: int, depth: int) -> int:
    """Nodes an EAGLE-2 tree keeps per depth (its top_k) for `nodes` in all over `depth` depths: at
    least 4 (EAGLE-2's trees are top-4 or wider), and enough that the depths hold `nodes`. Before
    this, the width was 4 whatever N, so `:tree<N>` held at most 4 * K nodes (tree16 at depth 3: 12)."""
    return min(nodes, max(4, -(-nodes // max(depth, 1))))


def _heldout_ranks(spec: str, base: str, form: str) -> list[list[float]]:
    """The head's held-out acceptance by depth and rank (mtp.shape.heldout_rank_acceptance), which
    `form` takes its tree's shape from; MethodSpecError with the fix when none was recorded."""
    from mtp.shape import heldout_rank_acceptance

    acc = heldout_rank_acceptance(base)
    if not acc:
        raise MethodSpecError(f"method {spec!r}: {form} takes its shape from the held-out acceptance by depth "
                              f"and rank recorded next to {base} (eval/rank<r>_<d> in metrics.jsonl: runs trained "
                              "since it was logged have it), and there is none; re-evaluate with `python -m "
                              "train.heads --config <its config> --eval-only`, or give the tree instead "
                              "(heads:<dir>:K:tree<N>)")
    return acc


def _auto_tree(spec: str, base: str, heads, model, batch_size: int):
    from mtp.shape import auto_tree

    acc = _heldout_ranks(spec, base, ":autotree")
    tree, table = auto_tree(model, heads, acc, batch_size=batch_size)
    print(f"[bench] {spec}: held-out acceptance by depth (rank 0..): "
          + "; ".join(" ".join(f"{x:.2f}" for x in row) for row in acc)
          + f"; predicted speedup by tree size at batch {batch_size}: "
          + ", ".join(f"{n}: {v['speedup']:.2f} (tau {v['tau']:.2f}, depth {v['depth']})" for n, v in table.items())
          + (f" -> {tree.size} nodes, depth {tree.depth}" if tree is not None else " -> no tree pays: one draft token"),
          file=sys.stderr)
    return tree


def _auto_k(spec: str, base: str, heads, model, batch_size: int, temperature: float = 0.0) -> int:
    from mtp.shape import auto_draft_length, heldout_acceptance, heldout_sampled_answers, heldout_sampled_temperature

    a = heldout_acceptance(base, temperature) if temperature > 0 else None
    if a:
        n = heldout_sampled_answers(base)  # None: an older run, which does not say
        on = {None: "", 0: " on greedy answers, which overstate it, so K may be too long"}.get(n, f" on {n} sampled answers")
        source = f"sampled at T={heldout_sampled_temperature(base):g}{on}"
    else:  # greedy decoding, or a run that recorded no sampled acceptance
        a, source = heldout_acceptance(base), "greedy"
        if temperature > 0:
            source += ": the run recorded no sampled acceptance (eval.sampled_temperature), so K may be too long"
    if not a:
        raise MethodSpecError(f"method {spec!r}: no held-out acceptance recorded next to {base} (metrics.jsonl and "
                              f"{os.path.basename(base)}.json of a train.heads run); give the draft length instead")
    k, table = auto_draft_length(model, heads.as_drafter(), a, batch_size=batch_size)
    print(f"[bench] {spec}: held-out a_k ({source}) {[round(x, 3) for x in a]}, predicted speedup by K at batch "
          f"{batch_size}: " + ", ".join(f"{j}: {v:.2f}" for j, v in table.items()) + f" -> K={max(k, 1)}",
          file=sys.stderr)
    return max(k, 1)  # K=0 (do not draft) is reported; the method still drafts one token
