"""Depth-1 acceptance at T=1 of a head's first draft on held-out distilled answers (round 19).

Compares what the kit's trees do at T>0 (deterministic top-k children: a child is accepted with the
target's probability of it, so k children accept sum_{x in top-k(q)} p(x)) with children *sampled*
i.i.d. from the head's q (the engine's recursive rejection sampling: accept x with min(1, p/q), else
p <- norm(max(0, p - q)); Monte Carlo), and with q sharpened by a draft temperature. The engine
already verifies both kinds losslessly; this measures which one accepts more, before building it.

    python docs/results/t1-19/sim_depth1.py HEAD_DIR HELDOUT.jsonl [max_examples] [sampled]
Prints a table and a final JSON line. Teacher-forced: position t's p is the target's T=1
distribution there, q the head's first draft after the true token. Several sampled children
are simulated on 16 random positions per answer (16 draws each); the rest are exact sums. The held-out answers are the
target's greedy ones; `sampled` replaces each by an answer the target samples at T=1 (128 tokens,
seed 0), the trajectories decoding at T=1 actually follows.
"""
from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from mtp.data.dataset import load_examples
from mtp.heads import load_heads
from mtp.models.load import load_model

KS = (1, 2, 3, 4)
TAUS = (1.0, 0.7, 0.5)
MC = 16
RRS_POSITIONS = 16  # Monte Carlo on this many random positions per answer (the rest: exact sums)


def rrs_accept(p: torch.Tensor, q: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """[N] Monte Carlo probability that one of k i.i.d. draws from q is accepted (recursive rejection)."""
    acc = torch.zeros(p.shape[0])
    for _ in range(MC):
        pr, done = p.clone(), torch.zeros(p.shape[0], dtype=torch.bool)
        for _ in range(k):
            x = torch.multinomial(q, 1, generator=gen).squeeze(1)
            px, qx = pr.gather(1, x[:, None]).squeeze(1), q.gather(1, x[:, None]).squeeze(1)
            ok = (torch.rand(p.shape[0], generator=gen) * qx < px) & ~done
            done |= ok
            pr = (pr - q).clamp_min(0)
            pr = pr / pr.sum(1, keepdim=True).clamp_min(1e-12)
        acc += done.float()
    return acc / MC


@torch.no_grad()
def main() -> None:
    head_dir, data = sys.argv[1], sys.argv[2]
    max_ex = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    sampled = len(sys.argv) > 4 and sys.argv[4] == "sampled"
    model, tok = load_model("smollm2-135m", dtype="fp32", device="cpu")
    head = load_heads(head_dir, model).float().eval()
    examples = load_examples(data, tok, max_examples=max_ex)
    d2t = head.draft_vocab
    V = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    n = 0
    torch.manual_seed(0)
    for ex in examples:
        ids = torch.tensor([ex.input_ids])
        if sampled:
            n_prompt = ex.loss_mask.index(1)
            ids = model.generate(ids[:, :n_prompt], do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=128, pad_token_id=tok.pad_token_id or tok.eos_token_id)
            ex.loss_mask = [0] * n_prompt + [1] * (ids.shape[1] - n_prompt)
        T = ids.shape[1]
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        hs = {l: out.hidden_states[l] for l in head.config.hidden_layers}
        res = head.forward_train(hs, ids, torch.ones_like(ids))
        m = torch.tensor(ex.loss_mask[2:], dtype=torch.bool)
        if not m.any():
            continue
        p = F.softmax(out.logits[0, 1:T - 1].float(), -1)[m]  # target's T=1 distribution for token t+2
        lq = res.logits[0][0, : T - 2].float()[m]
        if d2t is not None:
            lq = lq.new_full((lq.shape[0], V), float("-inf")).index_copy(1, d2t, lq)
        q = F.softmax(lq, -1)
        top = q.topk(max(KS), -1).indices
        ptop = p.gather(1, top).cumsum(1)
        rows = {f"det{k}": ptop[:, k - 1] for k in KS}
        porc = p.topk(max(KS), -1).values.cumsum(1)  # the best any deterministic drafter can do
        rows.update({f"oracle{k}": porc[:, k - 1] for k in KS})
        for tau in TAUS:
            qt = F.softmax(lq / tau, -1)
            rows[f"ov{tau}"] = torch.minimum(p, qt).sum(1)
            pick = torch.randperm(p.shape[0], generator=gen)[:RRS_POSITIONS]
            for k in KS[1:]:
                rows[f"rrs{k}@{tau}"] = rrs_accept(p[pick], qt[pick], k, gen)
        for key, v in rows.items():
            sums[key] = sums.get(key, 0.0) + float(v.sum())
            counts[key] = counts.get(key, 0) + v.numel()
        n += int(m.sum())
        print(f"[sim] {n} positions; first draft, one child: top-1 {sums['det1'] / n:.3f}, "
              f"sampled {sums['ov1.0'] / n:.3f}", file=sys.stderr, flush=True)
    mean = {k: v / counts[k] for k, v in sums.items()}
    print(f"{len(examples)} answers, {n} positions; first draft's acceptance at T=1")
    print("children | head's top-k (now) | " + " | ".join(f"sampled from q at T={t}" for t in TAUS)
          + " | target's own top-k (bound)")
    for k in KS:
        cells = [f"{mean[f'ov{t}'] if k == 1 else mean[f'rrs{k}@{t}']:.3f}" for t in TAUS]
        print(f"{k} | {mean[f'det{k}']:.3f} | " + " | ".join(cells) + f" | {mean[f'oracle{k}']:.3f}")
    print(json.dumps({"head": head_dir, "data": data, "answers": "sampled" if sampled else "greedy", "positions": n, **{k: round(v, 4) for k, v in mean.items()}}))


if __name__ == "__main__":
    main()
