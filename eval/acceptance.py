"""Offline (teacher-forced) acceptance of a heads checkpoint, without speculative generation.

    python -m eval.acceptance --model smollm2-135m --heads runs/medusa --data spec --num-prompts 24 \
        --temperatures 0,1 --bench results/smollm2-heads-t0 --out results/acc

Sequences: for a suite (or a JSONL of {"turns": [...]}) the prompt followed by the target's own
greedy continuation (what the heads must predict at decode time); for a JSONL of {"text": ...} the
text itself. One target forward per sequence gives the hidden states and the target's
distributions; `head.forward_train` gives every head's draft distribution at every position.

At position t (the last committed token; t+1 is the pending token) head j drafts token t+2+j:
- top-k accuracy of head j: token t+2+j of the sequence is in head j's top k;
- greedy: head j is accepted when its argmax equals the target's argmax at t+1+j;
- temperature T: alpha_j(t) = sum_x min(p_T(x), q_T(x)) (Leviathan et al.);
- a_k = mean over t of prod_{j<k} (acceptance of head j) and expected tau = 1 + sum_k a_k.
Teacher forcing conditions every head on the true prefix, so this is an upper-bound-like estimate
of the chain tau measured by eval.bench (which conditions later drafts on earlier drafts).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from mtp.heads.layers import expand_draft_logits
from mtp.io import atomic_write_json, atomic_write_text, jsonable, read_jsonl
from mtp.report import fmt
from mtp.cli import cli_main
from mtp.sampling import SamplingConfig, logits_to_probs
from mtp.training.losses import chain_acceptance


class AcceptanceAccumulator:
    """Sums over positions for K heads; see the module docstring for the definitions."""

    def __init__(self, num_heads: int, temperatures: list[float], topk: list[int]) -> None:
        self.K, self.temperatures, self.topk = num_heads, temperatures, topk
        self.n_head = [0] * num_heads  # positions evaluated per head
        self.hits = {k: [0] * num_heads for k in topk}
        self.n_chain = 0
        self.chain = {T: [0.0] * num_heads for T in temperatures}  # sum over t of prod_{j<k} acc_j

    @torch.no_grad()
    def add(self, target_logits: torch.Tensor, head_logits: list[torch.Tensor], ids: torch.Tensor,
            eval_mask: torch.Tensor) -> None:
        """target_logits [T, V] (position i predicts i+1); head_logits K x [T, V] (head j at t
        predicts t+2+j); ids [T]; eval_mask [T] bool: tokens the heads are scored on (t+1 must be
        one: the pending token is generated text)."""
        T = ids.shape[0]
        K = min(self.K, len(head_logits))
        starts = torch.nonzero(eval_mask[1:], as_tuple=False).flatten()  # t with mask[t+1]
        for j in range(K):
            t = starts[starts + 2 + j <= T - 1]
            if not len(t):
                continue
            self.n_head[j] += len(t)
            tgt = ids[t + 2 + j]
            for k in self.topk:
                top = head_logits[j][t].topk(k, dim=-1).indices
                self.hits[k][j] += int((top == tgt[:, None]).any(-1).sum())
        t = starts[starts + 1 + K <= T - 1]  # positions where every head has a target
        if not len(t):
            return
        self.n_chain += len(t)
        for temp in self.temperatures:
            cfg = SamplingConfig(temperature=temp)
            acc = []
            for j in range(K):
                if cfg.greedy:
                    acc.append((head_logits[j][t].argmax(-1) == target_logits[t + 1 + j].argmax(-1)).double())
                else:
                    p = logits_to_probs(target_logits[t + 1 + j], cfg)
                    q = logits_to_probs(head_logits[j][t], cfg)
                    acc.append(torch.minimum(p, q).sum(-1).double())
            sums, _ = chain_acceptance([a.cpu()[None] for a in acc], torch.ones(1, len(t)))  # the kit's estimator
            for j in range(K):
                self.chain[temp][j] += float(sums[j])

    def result(self) -> dict:
        out = {"positions": self.n_chain, "positions_per_head": self.n_head,
               "topk_accuracy": {str(k): [h / n if n else float("nan") for h, n in zip(self.hits[k], self.n_head)]
                                 for k in self.topk}}
        for temp in self.temperatures:
            a = [s / self.n_chain if self.n_chain else float("nan") for s in self.chain[temp]]
            out[f"T={temp:g}"] = {"accept_rate_per_position": a, "expected_tau": 1.0 + sum(a)}
        return out


def build_sequences(model, tok, data: str, num_prompts: int | None, max_new_tokens: int,
                    batch_size: int = 8) -> list[tuple[list[int], list[bool]]]:
    """(ids, eval_mask) per sequence: prompt + the target's greedy continuation (mask on the
    continuation), or a {"text"} line as is (mask everywhere)."""
    from mtp.engine import generate
    from mtp.suites import encode_turn, load_suite

    p = Path(data)
    if p.is_file():
        lines = read_jsonl(p)
        if lines and "text" in lines[0]:
            seqs = []
            for d in lines[:num_prompts]:
                ids = tok(d["text"], add_special_tokens=True).input_ids
                seqs.append((ids, [True] * len(ids)))
            return seqs
    items = load_suite(data, num_prompts)
    prompts = [encode_turn(tok, it, 0) for it in items]
    seqs = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        try:
            outs = generate(model, chunk, max_new_tokens=max_new_tokens).tokens
        except NotImplementedError:
            outs = [generate(model, c, max_new_tokens=max_new_tokens).tokens[0] for c in chunk]
        for pr, o in zip(chunk, outs):
            seqs.append((pr + o, [False] * len(pr) + [True] * len(o)))
    return seqs


def draft_logits(head, hidden_states: dict, input_ids: torch.Tensor, vocab_size: int) -> list[torch.Tensor]:
    """Teacher-forced logits of every head over the target's vocabulary (K x [B, T, V] float), as
    drafting sees them: a head with a reduced draft vocabulary has its [.., Vd] training logits
    placed at their target ids (the rest at the minimum float)."""
    ho = head.forward_train(hidden_states=hidden_states, input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    logits = [lg.float() for lg in ho.logits]
    if ho.vocab is not None:
        logits = [expand_draft_logits(lg, ho.vocab, vocab_size) for lg in logits]
    return logits


@torch.no_grad()
def evaluate(model, head, sequences, temperatures: list[float], topk: list[int]) -> dict:
    """Run the target and the head over each sequence (batch 1) and accumulate acceptance."""
    device = next(model.parameters()).device
    layers = tuple(head.config.hidden_layers)
    acc = AcceptanceAccumulator(head.config.num_heads, temperatures, topk)
    for ids, mask in sequences:
        x = torch.tensor([ids], device=device)
        out = model(input_ids=x, output_hidden_states=True)
        hs = {l: out.hidden_states[l] for l in layers}
        logits = [lg[0] for lg in draft_logits(head, hs, x, out.logits.shape[-1])]
        acc.add(out.logits[0].float(), logits, x[0], torch.tensor(mask, device=device))
    return acc.result()


def bench_tau(bench_dir: str | Path, heads_dir: str) -> dict | None:
    """tau and a_k of the bench method that ran this heads checkpoint, if any."""
    bench_dir = Path(bench_dir)
    cfg = json.loads((bench_dir / "meta.json").read_text())["config"]
    summary = json.loads((bench_dir / "summary.json").read_text())
    hd = str(Path(heads_dir).resolve())
    for name, spec in cfg.get("methods", {}).items():
        if spec.startswith(("pld+", "union+", "adapt+")) or re.search(r":tree\d+$", spec):
            continue  # lookup-first or a tree: its tau is not these heads' chain
        base = re.sub(r":(\d+|auto)$", "", spec.removeprefix("heads:"))  # drop :K or :auto
        if Path(base).exists() and str(Path(base).resolve()) == hd and name in summary["methods"]:
            o = summary["methods"][name]["overall"]
            return {"method": name, "temperature": cfg.get("temperature"), "tau": o["tau"],
                    "accept_rate_per_position": o["accept_rate_per_position"]}
    return None


@cli_main
def main(argv=None) -> int:
    from eval._common import add_model_args, load_target
    from mtp.runinfo import collect_meta

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p)
    p.add_argument("--heads", required=True, help="heads checkpoint folder (mtp.heads.load_heads)")
    p.add_argument("--data", default="spec", help="suite name, suite JSONL, or JSONL of {'text': ...}")
    p.add_argument("--num-prompts", type=int, default=24)
    p.add_argument("--max-new-tokens", type=int, default=128, help="length of the target's continuations")
    p.add_argument("--temperatures", default="0,1")
    p.add_argument("--topk", default="1,5")
    p.add_argument("--bench", default=None, help="an eval.bench folder that ran these heads, to compare tau")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        temps = [float(t) for t in args.temperatures.split(",")]
        topk = [int(k) for k in args.topk.split(",")]
    except ValueError:
        p.error("--temperatures and --topk must be comma-separated numbers")
    if not all(t >= 0 for t in temps) or min(topk) < 1 or args.num_prompts < 1 or args.max_new_tokens < 1:
        p.error("need --temperatures >= 0, --topk >= 1, --num-prompts >= 1 and --max-new-tokens >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from mtp.heads import load_heads

    model, tok = load_target(args)
    head = load_heads(args.heads, model)
    head.eval()
    seqs = build_sequences(model, tok, args.data, args.num_prompts, args.max_new_tokens)
    res = evaluate(model, head, seqs, temps, topk)
    res["sequences"] = len(seqs)
    if args.bench:
        res["bench"] = bench_tau(args.bench, args.heads)
    res["meta"] = collect_meta(vars(args), model)
    atomic_write_json(out / "meta.json", res["meta"])
    atomic_write_json(out / "acceptance.json", res)
    lines = [f"# Offline acceptance: {args.heads} on {args.model} ({len(seqs)} sequences, {res['positions']} "
             "positions)", "", "| head | " + " | ".join(f"top-{k}" for k in res["topk_accuracy"]) + " |",
             "|---|" + "---|" * len(res["topk_accuracy"])]
    for j in range(head.config.num_heads):
        lines.append(f"| {j + 1} | " + " | ".join(fmt(v[j]) for v in res["topk_accuracy"].values()) + " |")
    lines += ["", "| setting | expected tau | a_k |", "|---|---|---|"]
    for t in temps:
        r = res[f"T={t:g}"]
        lines.append(f"| teacher-forced T={t:g} | {fmt(r['expected_tau'])} | {fmt(r['accept_rate_per_position'])} |")
    if res.get("bench"):
        b = res["bench"]
        lines.append(f"| eval.bench {b['method']} (T={b['temperature']}) | {fmt(b['tau'])} | "
                     f"{fmt(b['accept_rate_per_position'])} |")
    atomic_write_text(out / "acceptance.md", "\n".join(lines) + "\n")
    print(json.dumps(jsonable({k: v for k, v in res.items() if k != "meta"})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
