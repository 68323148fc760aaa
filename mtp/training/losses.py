"""MTP losses and acceptance metrics (the index shift lives here, once).

Head j at position t predicts token t+2+j (mtp.heads.base); the target's logits at position t+1+j
predict that same token. So for head j:
    draft logits   q = logits[j][:, : T-2-j]
    data labels    y = input_ids[:, 2+j :]        (CE; counted where loss_mask[:, 2+j:] == 1)
    target logits  p = target_logits[:, 1+j : T-1] (KL(p || q); acceptance labels argmax p)
Losses are returned as sums over counted positions; the trainer divides by the global count so
any split of a global batch over processes and micro-steps gives the same gradient.
Expected tau (chain of K drafts) = 1 + sum_k a_k with a_k = mean over positions t of
prod_{j<k} acc_j(t) (per-position products, `chain_acceptance`; the one estimator of the kit, also
used by eval.acceptance), acc_j(t) the greedy top-1 agreement of head j with the target (T=0) or
sum_x min(p_j(x), q_j(x)) (T>0), over the positions where every head has a counted target.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TargetDist:
    """The target's next-token distribution at every position: full logits [B, T, V] or its top-k
    (values [B, T, k] logits, indices [B, T, k])."""

    logits: torch.Tensor | None = None
    topk_values: torch.Tensor | None = None
    topk_indices: torch.Tensor | None = None

    def slice(self, a: int, b: int) -> "TargetDist":
        f = lambda x: None if x is None else x[:, a:b]  # noqa: E731
        return TargetDist(f(self.logits), f(self.topk_values), f(self.topk_indices))

    def truncated(self, k: int) -> "TargetDist":
        """Top-k view of full logits (k=0 or no full logits: unchanged)."""
        if k <= 0 or self.logits is None:
            return self
        v, i = self.logits.float().topk(k, dim=-1)
        return TargetDist(None, v, i)

    def argmax(self) -> torch.Tensor:
        if self.logits is not None:
            return self.logits.argmax(-1)
        return self.topk_indices[..., 0]

    def restricted(self, d2t: torch.Tensor, t2d_index: torch.Tensor) -> "TargetDist":
        """The distribution over a draft vocabulary (renormalised there): full logits gathered at
        d2t, or top-k entries outside it dropped (their logits set to -inf; indices mapped)."""
        if self.logits is not None:
            return TargetDist(logits=self.logits.float().index_select(-1, d2t))
        idx = t2d_index[self.topk_indices]
        vals = self.topk_values.float().masked_fill(idx < 0, float("-inf"))
        return TargetDist(topk_values=vals, topk_indices=idx.clamp_min(0))


def draft_index(d2t: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[V] target id -> draft-vocabulary index (-1 outside the draft vocabulary)."""
    idx = torch.full((vocab_size,), -1, dtype=torch.long, device=d2t.device)
    idx[d2t] = torch.arange(d2t.numel(), device=d2t.device)
    return idx


def position_weights(spec, num_heads: int, family_weights: list[float]) -> list[float]:
    """'family' | [w_0..w_{K-1}] | 'decay:r' (r**j) | 'uniform'."""
    if spec in (None, "family"):
        w = list(family_weights)
    elif spec == "uniform":
        w = [1.0] * num_heads
    elif isinstance(spec, str) and spec.startswith("decay:"):
        r = float(spec.split(":", 1)[1])
        w = [r ** j for j in range(num_heads)]
    elif isinstance(spec, (list, tuple)):
        w = [float(x) for x in spec]
    else:
        raise ValueError(f"loss.position_weights: {spec!r} is not 'family', 'uniform', 'decay:<r>' or a list")
    if len(w) != num_heads:
        raise ValueError(f"loss.position_weights has {len(w)} entries; the head drafts {num_heads} positions")
    return w


def head_counts(loss_mask: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[K] positions counted for each head in a batch (response tokens t+2+j)."""
    return torch.stack([loss_mask[:, 2 + j:].sum() for j in range(num_heads)]).float()


def kl_sum(q_logits: torch.Tensor, p: TargetDist, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """sum over masked positions of KL(p || q) at temperature (top-k p is renormalised over its k)."""
    logq = F.log_softmax(q_logits.float() / temperature, dim=-1)
    if p.logits is not None:
        logp = F.log_softmax(p.logits.float() / temperature, dim=-1)
        kl = (logp.exp() * (logp - logq)).sum(-1)
    else:
        # top-k p renormalised over its k; entries dropped from a draft vocabulary (-inf) have p = 0 and
        # contribute nothing, and a position with none left has p = 0 everywhere (no loss, no NaN gradient)
        pk = torch.nan_to_num(F.softmax(p.topk_values.float() / temperature, dim=-1), nan=0.0)
        kl = (torch.special.xlogy(pk, pk) - pk * logq.gather(-1, p.topk_indices)).sum(-1)
    return (kl * mask).sum()


def overlap(q_logits: torch.Tensor, p: TargetDist, temperature: float, vocab: torch.Tensor | None = None,
            t2d: torch.Tensor | None = None) -> torch.Tensor:
    """sum_x min(p(x), q(x)) per position at temperature: the expected acceptance of a draft sampled
    from q. p over the target's full vocabulary (top-k p: renormalised over its k); q over the same
    vocabulary, or over a reduced draft vocabulary (vocab: d2t [Vd], t2d: `draft_index`), where it is
    0 on every other token: mass p puts outside the draft vocabulary is never accepted."""
    q = F.softmax(q_logits.float() / temperature, dim=-1)
    if p.logits is not None:
        pf = F.softmax(p.logits.float() / temperature, dim=-1)
        return torch.minimum(pf if vocab is None else pf.index_select(-1, vocab), q).sum(-1)
    pk = torch.nan_to_num(F.softmax(p.topk_values.float() / temperature, dim=-1), nan=0.0)
    idx = p.topk_indices if t2d is None else t2d[p.topk_indices]
    inside = (idx >= 0).to(pk.dtype)
    return (torch.minimum(pk, q.gather(-1, idx.clamp_min(0))) * inside).sum(-1)


def tv_sum(q_logits: torch.Tensor, p: TargetDist, mask: torch.Tensor, temperature: float,
           vocab: torch.Tensor | None = None, t2d: torch.Tensor | None = None) -> torch.Tensor:
    """sum over masked positions of the total variation 1 - `overlap` at temperature: one minus the
    expected acceptance of a draft sampled from q (DistillSpec's TVD), the quantity sampled
    speculative decoding pays for. p is not renormalised over a reduced draft vocabulary (vocab, t2d):
    mass the draft cannot propose stays lost."""
    return ((1.0 - overlap(q_logits, p, temperature, vocab, t2d)) * mask).sum()


def _hits(q: torch.Tensor, p: TargetDist | None, y: torch.Tensor, topk: int, vocab: torch.Tensor | None) -> torch.Tensor:
    """[B, n, k]: whether a head's rank-r candidate is the label: the target's greedy token (given p),
    else the data token y. vocab: d2t when q is over a reduced draft vocabulary."""
    label = p.argmax() if p is not None else y
    top = q.topk(min(topk, q.shape[-1]), dim=-1).indices
    if vocab is not None:
        top = vocab[top]  # draft index -> target id
    return (top == label[..., None]).float()


def _acceptance(q: torch.Tensor, p: TargetDist | None, hit1: torch.Tensor, eval_temperature: float,
                vocab: torch.Tensor | None, t2d: torch.Tensor | None) -> torch.Tensor:
    """Per-position expected acceptance of a head's logits q: `overlap` at eval_temperature > 0 (q is
    0 outside a reduced draft vocabulary), else its top-1 agreement hit1."""
    if eval_temperature <= 0 or p is None:
        return hit1
    return overlap(q, p, eval_temperature, vocab, t2d)


def _head_losses(q: torch.Tensor, y: torch.Tensor, m: torch.Tensor, w: torch.Tensor, p: TargetDist | None,
                 vocab: torch.Tensor | None, t2d: torch.Tensor | None, ce_weight: float, kl_weight: float,
                 tv_weight: float, kl_temperature: float) -> dict[str, torch.Tensor]:
    """One head's {"ce", "kl", "tv"} sums (0 where the weight is 0 or the target is unknown), each
    position weighted m * w; labels outside a draft vocabulary get no CE, and the KL is to the target
    restricted to it (see `mtp_losses`)."""
    zero = q.sum() * 0.0
    out = {"ce": zero, "kl": zero, "tv": zero}
    if ce_weight > 0:
        y_ce, m_ce = y, m
        if t2d is not None:
            y_ce = t2d[y]
            m_ce = m * (y_ce >= 0).float()
            y_ce = y_ce.clamp_min(0)
        ce = F.cross_entropy(q.float().reshape(-1, q.shape[-1]), y_ce.reshape(-1), reduction="none")
        out["ce"] = (ce.view_as(m) * m_ce * w).sum()
    if p is not None and kl_weight > 0:
        out["kl"] = kl_sum(q, p.restricted(vocab, t2d) if t2d is not None else p, m * w, kl_temperature)
    if p is not None and tv_weight > 0:
        out["tv"] = tv_sum(q, p, m * w, kl_temperature, vocab, t2d)
    return out


def mtp_losses(logits: list[torch.Tensor], input_ids: torch.Tensor, loss_mask: torch.Tensor,
               target: TargetDist | None, *, ce_weight: float, kl_weight: float, kl_temperature: float = 1.0,
               topk: int = 5, eval_temperature: float = 0.0, labels: str = "target",
               vocab: torch.Tensor | None = None, vocab_size: int | None = None,
               replay: float = 0.0, tv_weight: float = 0.0,
               sampled_temperature: float = 0.0,
               greedy_rows: torch.Tensor | None = None,
               sampled_rows: torch.Tensor | None = None) -> list[dict[str, torch.Tensor]]:
    """Per head j: {"ce", "kl", "tv", "n", "top1", "topk", "accept"} sums over counted positions, plus
    "chain" / "chain_n" (`chain_acceptance`) and "rank<r>_" / "rank_n" (`rank_acceptance`).

    top1 / topk: agreement of the head's argmax / top-k with the label: the target's own greedy
    token (labels="target", when the target distribution is known), else the data token. "accept": the expected
    acceptance sum (top-1 agreement at eval_temperature 0, else sum_x min(p, q)).
    vocab: d2t [Vd] when the logits are over a reduced draft vocabulary (vocab_size: the target's V).
    Labels outside it get no CE and count as misses; the target distribution is restricted to it
    for the KL (what a drafter over that vocabulary can match); acceptance is computed honestly
    (a token the draft cannot propose is never accepted).
    replay: extra loss weight on rejected drafts (Draft-OPD's replay of rejected positions, in the
    training forward itself): head j's CE and KL at anchor t count 1 + replay times where heads
    0..j-1's top-1 were all right there and head j's is wrong, the position where a greedy chain
    drafted from t is rejected. At T = 0 on the target's own greedy answers these are the positions
    decoding rejects (teacher-forced inputs are what the accepted path feeds). 0: off.
    tv_weight > 0: "tv" holds `tv_sum` at kl_temperature (else 0): a loss on the acceptance itself.
    sampled_temperature > 0 (target known): "chain_s" / "chain_s_n", the chain's acceptance at that
    temperature (`overlap`) beside "chain", so one evaluation gives greedy and sampled a_k.
    greedy_rows / sampled_rows: [B] bool, the rows that "chain" and "rank" / "chain_s" count (the
    greedy / the sampled answers, each the contexts its decoding visits; None: all rows).
    """
    T = input_ids.shape[1]
    t2d = None
    if vocab is not None:
        if vocab_size is None:
            raise ValueError("mtp_losses: a draft vocabulary needs vocab_size (the target's)")
        vocab = vocab.to(input_ids.device)
        t2d = draft_index(vocab, vocab_size)
    out = []
    per_position: list[torch.Tensor] = []  # acceptance of head j at each position t [B, T-2-j]
    sampled = sampled_temperature > 0 and target is not None
    per_position_s: list[torch.Tensor] = []  # the same at sampled_temperature
    rank_hits: list[torch.Tensor] = []  # [B, T-2-j, k]: head j's rank-r candidate is the label
    for j, lg in enumerate(logits):
        n = T - 2 - j
        if n <= 0:
            z = lg.sum() * 0.0
            out.append({k: z for k in ("ce", "kl", "tv", "n", "top1", "topk", "accept")})
            per_position.append(torch.zeros(input_ids.shape[0], 0, device=input_ids.device))
            per_position_s.append(per_position[-1])
            rank_hits.append(torch.zeros(input_ids.shape[0], 0, min(topk, lg.shape[-1]), device=input_ids.device))
            continue
        q = lg[:, :n]
        y = input_ids[:, 2 + j:]
        m = loss_mask[:, 2 + j:].float()
        p = target.slice(1 + j, T - 1) if target is not None else None
        with torch.no_grad():
            hits = _hits(q, p if labels == "target" else None, y, topk, vocab)
            rank_hits.append(hits)
            hit1 = hits[..., 0]
            w = torch.ones_like(m)
            if replay > 0:  # a greedy chain from anchor t reaches head j (reached) and is rejected there
                reached = reach[:, :n] if j else torch.ones_like(hit1)
                w = 1 + replay * reached * (1 - hit1)
                reach = reached * hit1
        d = {"n": m.sum(), **_head_losses(q, y, m, w, p, vocab, t2d, ce_weight, kl_weight, tv_weight, kl_temperature)}
        with torch.no_grad():
            d["top1"] = (hit1 * m).sum()
            d["topk"] = (hits.any(-1).float() * m).sum()
            acc = _acceptance(q, p, hit1, eval_temperature, vocab, t2d)
            d["accept"] = (acc * m).sum()
            per_position.append(acc.detach())
            if sampled:
                per_position_s.append(_acceptance(q, p, hit1, sampled_temperature, vocab, t2d).detach())
        out.append(d)
    last = loss_mask[:, 2 + len(logits) - 1:].float()  # the positions the last head counts
    _add_chain_stats(out, last, per_position, rank_hits, greedy_rows, per_position_s if sampled else None, sampled_rows)
    return out


def _add_chain_stats(out: list[dict], last: torch.Tensor, per_position: list[torch.Tensor],
                     rank_hits: list[torch.Tensor], greedy_rows: torch.Tensor | None,
                     per_position_s: list[torch.Tensor] | None, sampled_rows: torch.Tensor | None) -> None:
    """mtp_losses' "chain" / "chain_n", "rank<r>_" / "rank_n" (over greedy_rows) and "chain_s" /
    "chain_s_n" (over sampled_rows; per_position_s None: not measured) into each head's dict."""
    def rows(keep: torch.Tensor | None) -> torch.Tensor:
        return last if keep is None else last * keep.to(last.device, last.dtype)[:, None]

    sums, count = chain_acceptance(per_position, rows(greedy_rows))
    ranks, rank_n = rank_acceptance(rank_hits, rows(greedy_rows))
    sums_s, count_s = (None, None) if per_position_s is None else chain_acceptance(per_position_s, rows(sampled_rows))
    for j, d in enumerate(out):
        d["chain"], d["chain_n"] = sums[j], count
        if sums_s is not None:
            d["chain_s"], d["chain_s_n"] = sums_s[j], count_s
        d["rank_n"] = rank_n[j]
        for r in range(ranks.shape[1]):
            d[f"rank{r}_"] = ranks[j, r]


def rank_acceptance(rank_hits: list[torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A tree's acceptance by depth and rank, as sums: (hits [K, k], count [K]) with hits[j, r] the
    positions t where heads 0..j-1's top candidates were all right and head j's rank-r candidate is
    right, count[j] the positions where heads 0..j-1's were right (over the positions the last head
    counts, as `chain_acceptance`). hits[j, r] / count[j] is P(rank r right at depth j+1 | the
    greedy path to it right): `mtp.tree.best_static_tree`'s acc[j][r], keeping the correlation
    between depths that treating heads as independent would lose (rank 0's products reproduce the
    chain's a_k). rank_hits[j]: [B, n_j, k] with n_j >= n_{K-1}."""
    n = mask.shape[1]
    K = len(rank_hits)
    k = rank_hits[0].shape[-1] if K else 0
    hits = torch.zeros(K, k, dtype=torch.float64, device=mask.device)
    count = torch.zeros(K, dtype=torch.float64, device=mask.device)
    if n <= 0 or K == 0:
        return hits, count
    prod = mask.double()  # greedy path right so far (at counted positions)
    for j, h in enumerate(rank_hits):
        h = h[:, :n].double()
        count[j] = prod.sum()
        hits[j, : h.shape[-1]] = (h * prod[..., None]).sum((0, 1))
        prod = prod * h[..., 0]
    return hits, count


def chain_acceptance(per_position: list[torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sums [K], count): sums[k] = sum over positions t of prod_{j<=k} acc_j(t), over the positions
    where the last head has a counted target (mask [B, n_{K-1}]); acc_j [B, n_j] with n_j >= n_{K-1}.
    a_k = sums[k] / count is the chain's per-position acceptance; `expected_tau(a)` = 1 + sum a_k."""
    n = mask.shape[1]
    K = len(per_position)
    sums = torch.zeros(K, dtype=torch.float64, device=mask.device)
    if n <= 0 or K == 0:
        return sums, mask.sum().double() * 0
    prod = torch.ones_like(mask, dtype=torch.float64)
    for j, acc in enumerate(per_position):
        prod = prod * acc[:, :n].double()
        sums[j] = (prod * mask.double()).sum()
    return sums, mask.sum().double()


def acceptance_logs(v: dict[str, float], K: int, prefix: str, topk: int, *, ranks: bool,
                    sampled_temperature: float = 0.0, sampled_answers: int = 0) -> dict[str, float]:
    """Logged acceptance from mtp_losses' summed stats `v` (keys "chain<j>", "chain_n<j>", ...):
    "<prefix>/a_<k>" and "expected_tau" (the chain's, at greedy decoding); with ranks, a tree's
    acceptance by depth and rank "rank<r>_<j>" (mtp.shape); with sampled_temperature > 0 and
    "chain_s" counted, the chain's acceptance of sampled decoding "sampled_a_<k>" (what
    `heads:<dir>:auto` reads at T > 0), "sampled_expected_tau", the temperature, and
    "sampled_answers" (how many sampled answers it was measured on; 0: greedy ones)."""
    out: dict[str, float] = {}
    rates = [v[f"chain{j}"] / max(v[f"chain_n{j}"], 1.0) for j in range(K)]
    out[f"{prefix}/expected_tau"] = expected_tau(rates)  # per-position products (chain_acceptance)
    out.update({f"{prefix}/a_{j + 1}": a for j, a in enumerate(rates)})
    for j in range(K):
        if ranks and v[f"rank_n{j}"] > 0:
            out.update({f"{prefix}/rank{r}_{j}": v[f"rank{r}_{j}"] / v[f"rank_n{j}"] for r in range(topk)})
    if sampled_temperature > 0 and v.get("chain_s_n0", 0) > 0:
        rates = [v[f"chain_s{j}"] / v[f"chain_s_n{j}"] for j in range(K)]
        out[f"{prefix}/sampled_temperature"] = sampled_temperature
        out[f"{prefix}/sampled_answers"] = sampled_answers
        out[f"{prefix}/sampled_expected_tau"] = expected_tau(rates)
        out.update({f"{prefix}/sampled_a_{j + 1}": a for j, a in enumerate(rates)})
    return out


def expected_tau(per_position_acceptance: list[float]) -> float:
    """1 + sum_k a_k for a chain with per-position acceptance a_k = P(>= k drafts accepted) (the
    `chain_acceptance` estimator); tau = 1 + sum_k a_k as REFERENCES.md defines it."""
    return 1.0 + float(sum(per_position_acceptance))


def target_next_token_loss(target_logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor):
    """(sum of the target's own CE on response tokens, count): logits at t predict token t+1."""
    m = loss_mask[:, 1:].float()
    ce = F.cross_entropy(target_logits[:, :-1].float().reshape(-1, target_logits.shape[-1]),
                         input_ids[:, 1:].reshape(-1), reduction="none").view_as(m)
    return (ce * m).sum(), m.sum()
