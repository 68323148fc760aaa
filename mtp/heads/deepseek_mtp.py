"""DeepSeek-V3 multi-token prediction (tech report 2024, section 2.2): D sequential modules.

Module m (0-based) at position i: h^(m+1)_i = Block_m(W_m [RMSNorm(h^(m)_i); RMSNorm(Emb(x_{i+1+m}))])
with h^(0) the target's hidden state, then logits = LMHead(Norm_m(h^(m+1)_i)) predicting x_{i+2+m}.
Block_m is one decoder layer of the target's class (causal attention over the module's own
states); Emb and LMHead are the target's, frozen and shared; each module has its own output norm
(a copy of the target's final norm), like DeepSeek's per-module `shared_head.norm`.
Training is teacher-forced with the true tokens.

Reduced vocabulary (FR-Spec): with `draft_vocab_size` the modules' logits come from the shared LM
head's rows for the most frequent target tokens, still frozen (`SharedUnembedding`).

Drafting (recursive, one module per draft token, so at most D tokens per step): every module has
its own KV cache (mtp.kv.KVState). Module m holds the true entries it can compute from committed
tokens, positions 0 .. t-m (t = last committed position; x_{t+1} = pending token is known). To
draft token m+1 it first adds speculative entries for positions t-m+1 .. t, whose inputs are the
previous module's outputs there and the drafts d_1..d_m, reads its output at t, and then drops
them again (truncate). So at decode every module sees exactly what it saw in training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtp.heads.base import HeadConfig, HeadTrainOutput, MTPHead, TargetParts
from mtp.heads.layers import (FeatureKV, SharedUnembedding, causal_allowed, copied_norm, fresh_norm, make_decoder_layers,
                              positions_from_mask, run_layer, shift_ids)


@dataclass
class DeepSeekMTPConfig(HeadConfig):
    family: str = "deepseek"


class MTPModule(nn.Module):
    """One DeepSeek MTP module: norms, 2H -> H projection, one decoder layer, output norm."""

    def __init__(self, target: TargetParts, block: nn.Module) -> None:
        super().__init__()
        H = target.config.hidden_size
        self.hnorm = fresh_norm(target)
        self.enorm = fresh_norm(target)
        self.proj = nn.Linear(2 * H, H, bias=False)
        with torch.no_grad():  # start by passing the hidden state through
            self.proj.weight.zero_()
            self.proj.weight[:, :H].copy_(torch.eye(H))
        self.block = block
        self.norm = copied_norm(target)

    def inputs(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([self.hnorm(h), self.enorm(e.to(h.dtype))], dim=-1))


class DeepSeekMTPHead(SharedUnembedding, MTPHead):
    family = "deepseek"
    config_class = DeepSeekMTPConfig
    # False: draft_observe feeds module 0 only, and each other module gets its new committed
    # positions in the forward that drafts with it; True: every module at every step, in forwards of
    # their own (the same drafts, more work; tests compare the two)
    feed_all_modules = False

    def __init__(self, config: DeepSeekMTPConfig, target: nn.Module, token_counts=None) -> None:
        super().__init__(config, target)
        self.layer_config, blocks = make_decoder_layers(self.target, config.num_heads)
        self.mods = nn.ModuleList([MTPModule(self.target, b) for b in blocks])
        self.init_draft_vocabulary(token_counts)

    def _logits(self, m: int, h: torch.Tensor) -> torch.Tensor:
        """Module m's logits: over the draft vocabulary when there is one, else over V."""
        return self.unembed(self.mods[m].norm(h))

    def forward_train(self, hidden_states, input_ids, attention_mask=None) -> HeadTrainOutput:
        h = hidden_states[self.config.hidden_layers[-1]]
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        allowed, pos = causal_allowed(attention_mask), positions_from_mask(attention_mask)
        logits = []
        for m, mod in enumerate(self.mods):
            x = mod.inputs(h, self.target.embed(shift_ids(input_ids, m + 1)))
            h = run_layer(mod.block, self.target, x, allowed, pos)
            logits.append(self._logits(m, h))
        return HeadTrainOutput(logits=logits, vocab=self.d2t)

    # ---- drafting -------------------------------------------------------------------------
    def draft_state(self, batch_size, device):
        D, H = len(self.mods), self.config.hidden_size
        dtype = next(self.parameters()).dtype
        return {
            "kv": [FeatureKV(self.layer_config, batch_size, device) for _ in range(D)],
            # hist[m][r]: h^(m) at row r's positions 0.. (m=0: the target's hidden states)
            "hist": [[torch.zeros(0, H, device=device, dtype=dtype) for _ in range(batch_size)] for _ in range(D + 1)],
            "count": [[0] * batch_size for _ in range(D)],  # true entries in module m's cache
        }

    def _feed(self, state, m: int, h_rows: list[torch.Tensor], tok_rows: list[list[int]]) -> list[torch.Tensor]:
        """Append inputs to module m's cache (rows may differ in length); outputs per row."""
        mod, kv = self.mods[m], state["kv"][m]
        B, n = len(h_rows), max(len(t) for t in tok_rows)
        dev = kv.mask.device
        h = torch.zeros(B, n, self.config.hidden_size, device=dev, dtype=h_rows[0].dtype)
        ids = torch.zeros(B, n, dtype=torch.long, device=dev)
        mask = torch.zeros(B, n, dtype=torch.long, device=dev)
        for r, (hr, tr) in enumerate(zip(h_rows, tok_rows)):
            h[r, : len(tr)] = hr
            ids[r, : len(tr)] = torch.as_tensor(tr, dtype=torch.long, device=dev)
            mask[r, : len(tr)] = 1
        out = kv.step(mod.inputs(h, self.target.embed(ids)), mask,
                      lambda x, allowed, pos, cache: run_layer(mod.block, self.target, x, allowed, pos, cache))
        return [out[r, : len(t)] for r, t in enumerate(tok_rows)]

    def draft_observe(self, state, hidden_states, counts, sequences):
        x = hidden_states[self.config.hidden_layers[-1]]
        hist = state["hist"]
        for r, c in enumerate(counts.tolist()):
            hist[0][r] = torch.cat([hist[0][r], x[r, :c]])
        # modules 1.. get their new committed positions in the same forward as their drafts
        # (draft_chain, tree_expander): only module 0, whose output drafts the first token, is fed here
        self._catch_up(state, sequences, len(self.mods) if self.feed_all_modules else 1)

    @staticmethod
    def _unseen(state, sequences, m: int, r: int) -> tuple[torch.Tensor, list[int]]:
        """Row r's committed positions module m has not been fed (module m holds positions
        0 .. t-m): their inputs, h^(m) [n, H] and the tokens x_{p+1+m}."""
        s = state["count"][m][r]
        e = max(s, len(sequences[r]) - 1 - m)
        return state["hist"][m][r][s:e], sequences[r][s + 1 + m: e + 1 + m]

    @staticmethod
    def _keep(state, m: int, r: int, out: torch.Tensor) -> None:
        """Module m's outputs [n, H] at row r's newly fed committed positions: module m+1's inputs."""
        if len(out):
            state["hist"][m + 1][r] = torch.cat([state["hist"][m + 1][r], out])
            state["count"][m][r] += len(out)

    def _catch_up(self, state, sequences, upto: int) -> None:
        """Feed modules 0..upto-1 the committed positions they have not seen, each in a forward of
        its own."""
        for m in range(upto):
            unseen = [self._unseen(state, sequences, m, r) for r in range(len(sequences))]
            if not any(ids for _, ids in unseen):
                continue
            outs = self._feed(state, m, [h for h, _ in unseen], [ids for _, ids in unseen])
            for r, o in enumerate(outs):
                self._keep(state, m, r, o)
            state["kv"][m].truncate(state["kv"][m].lengths)

    tree_expander_rows = True  # tree_expander(..., row=r) expands one row of a batch

    def _row_caches(self, state, sequences, row: int):
        """(batched, views, kv_of) for row `row`'s tree: kv_of(d) is module d's cache, its own at
        batch 1. In a batch every module first takes every row's unseen committed positions in one
        batched forward each (_catch_up); kv_of(d) is then a batch-1 copy of the row's slots
        (FeatureKV.row), which the tree's close() just drops."""
        batched = len(sequences) > 1
        if batched:
            self._catch_up(state, sequences, len(self.mods))
        views: dict[int, FeatureKV] = {}

        def kv_of(d: int) -> FeatureKV:
            if d not in views:
                views[d] = state["kv"][d].row(row) if batched else state["kv"][d]
            return views[d]

        return batched, views, kv_of

    def tree_expander(self, state, sequences, row: int = 0):
        """next_logits(paths) -> [len(paths), Vd] draft logits after each token path, one
        decoder-layer forward per path length over the whole frontier (EAGLE-2's batched expansion),
        instead of re-running the modules' chain once per node. A path p of length d is read from
        module d at the last committed position t; its speculative inputs are positions t-d+1 .. t
        with tokens p and, as hidden states, module d-1's true output at t-d+1 followed by its
        outputs for p's prefixes. Module d's input at position t-d+1+j depends on p[:j+1] only, so
        module d keeps one slot per distinct prefix (a trie over every path it has expanded in this
        tree: siblings share their parent's slots), each attending to the committed slots and to
        its own prefixes' slots. Prefixes no call expanded are expanded first. Module d's committed
        positions it has not seen yet go into the same forward as its first tree slots: one
        decoder-layer call per module and step. Call the returned `close()` after the tree. In a
        batch, row `row`'s tree is built on copies of its caches (_row_caches)."""
        seq = sequences[row]
        t = len(seq) - 2  # last committed position (seq ends with the pending token x_{t+1})
        hist, count = state["hist"], state["count"]
        batched, views, kv_of = self._row_caches(state, sequences, row)
        slot: dict[int, dict[tuple, int]] = {}  # module d: prefix -> its slot in module d's cache
        out: dict[int, dict[tuple, torch.Tensor]] = {}  # module d: prefix -> module d's output at that slot
        dev = state["kv"][0].mask.device

        def expand(d: int, new: list[tuple]) -> None:
            # modules before d are up to date: module 0 since draft_observe, the others since their
            # own expand in this tree (a path's prefixes are expanded before it)
            kv, mod = kv_of(d), self.mods[d]
            if d in slot:
                lag_h, lag_ids = hist[d][row][:0], []
            else:  # module d's first forward in this tree also takes its unseen committed positions
                kv.begin_tree()
                lag_h, lag_ids = self._unseen(state, sequences, d, row)  # none in a batch: caught up
            smap, omap = slot.setdefault(d, {}), out.setdefault(d, {})
            need: list[tuple] = []
            for p in new:
                need += [u for u in (p[:j] for j in range(1, d + 1)) if u not in smap and u not in need]
            need.sort(key=len)  # a prefix's own prefixes come first (stable sort)
            S0 = kv.num_slots
            h0 = hist[d][row][t - d + 1]  # module d-1's true output at t-d+1
            c = len(lag_ids)
            for i, u in enumerate(need):
                smap[u] = S0 + c + i
            h = torch.cat([lag_h, torch.stack([h0 if len(u) == 1 else out[d - 1][u[:-1]] for u in need])])[None]
            ids = torch.tensor([lag_ids + [u[-1] for u in need]], dtype=torch.long, device=dev)
            anc = [[smap[u[:k]] for k in range(1, len(u))] for u in need]
            y, _ = kv.step_tree(mod.inputs(h, self.target.embed(ids)), anc, [len(u) for u in need],
                                lambda x, allowed, pos, cache: run_layer(mod.block, self.target, x, allowed, pos, cache),
                                num_committed=c)
            self._keep(state, d, row, y[0, :c])
            for i, u in enumerate(need):
                omap[u] = y[0, c + i]

        def next_logits(paths):
            paths = [tuple(p) for p in paths]
            by_len: dict[int, list[tuple]] = {}
            for p in paths:  # a path's prefixes are expanded first when no earlier call did
                for q in (p[:k] for k in range(1, len(p) + 1)):
                    if q not in out.get(len(q), {}) and q not in by_len.get(len(q), ()):
                        by_len.setdefault(len(q), []).append(q)
            for d in sorted(by_len):
                if d > len(self.mods) - 1:
                    raise ValueError(f"a path of {d} tokens needs module {d}; this head has {len(self.mods)}")
                expand(d, by_len[d])
            by_mod: dict[int, list[int]] = {}
            for i, p in enumerate(paths):
                by_mod.setdefault(len(p), []).append(i)
            rows: list = [None] * len(paths)
            for d, idx in by_mod.items():  # one LM-head call per module over its paths
                z = self._logits(d, torch.stack([out[d][paths[i]] if d else hist[1][row][t] for i in idx]))
                for j, i in enumerate(idx):
                    rows[i] = z[j]
            return torch.stack(rows)

        def close():  # keep each module's committed positions (count), drop the tree's slots
            if not batched:  # (a row's copies are just dropped)
                for d in slot:
                    views[d].truncate(torch.tensor(count[d], device=dev))

        next_logits.close = close
        return next_logits

    def draft_chain(self, state, sequences, num_tokens, pick):
        """Module m > 0 gets, in one forward, the committed positions it has not seen (kept) and
        its m speculative positions t-m+1 .. t (dropped afterwards). Module 0 is up to date
        (draft_observe)."""
        hist, count = state["hist"], state["count"]
        B = len(sequences)
        n_h = [len(s) - 1 for s in sequences]
        drafts = [[] for _ in range(B)]
        spec = [hist[1][r][n_h[r]:] for r in range(B)]  # module 0 outputs past its true range: none
        out_t = torch.stack([hist[1][r][n_h[r] - 1] for r in range(B)])  # h^(1) at t
        for m in range(num_tokens):
            if m > 0:
                h_rows = [torch.cat([hist[m][r][count[m][r]: count[m - 1][r]], spec[r]]) for r in range(B)]
                toks = [(sequences[r] + drafts[r])[count[m][r] + 1 + m: n_h[r] + 1 + m] for r in range(B)]
                outs = self._feed(state, m, h_rows, toks)
                kept = [max(0, n_h[r] - m - count[m][r]) for r in range(B)]  # committed inputs fed
                for r in range(B):
                    self._keep(state, m, r, outs[r][: kept[r]])
                spec = [o[k:] for o, k in zip(outs, kept)]
                out_t = torch.stack([s[-1] for s in spec])
            t = pick(self._logits(m, out_t))
            for r, tok in enumerate(t.tolist()):
                drafts[r].append(tok)
        dev = state["kv"][0].mask.device
        for m in range(1, num_tokens):
            state["kv"][m].truncate(torch.tensor(count[m], device=dev))
