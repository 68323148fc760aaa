"""Trainer: index shift and metrics, loss falls, exact resume, 2-process DDP, cache == online, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtp.data import DataError
from mtp.heads.base import HeadConfig, HeadTrainOutput, MTPHead
from mtp.training import ConfigError, ResumeError, Trainer, expected_tau, load_config, train
from mtp.training.losses import TargetDist, mtp_losses

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "train" / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def cyc_data(tmp_path_factory):
    """A learnable task: every sequence counts up through a cycle of 20 tokens from a random start,
    so token t+2+j follows from token t. Loss on everything after a 3-token 'prompt'."""
    d = tmp_path_factory.mktemp("cyc")
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(72):
        start, n = int(torch.randint(0, 20, (1,), generator=g)), int(torch.randint(14, 26, (1,), generator=g))
        ids = [10 + (start + k) % 20 for k in range(n)]
        rows.append({"id": f"s{i}", "input_ids": ids, "loss_mask": [0, 0, 0] + [1] * (n - 3)})
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "train.jsonl"


def cfg_for(tmp_path, data, *overrides):
    return load_config(RECIPE, [f"data.train={data}", f"out_dir={tmp_path}", *overrides])


def head_weights(run_dir: Path, which: str = "final") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / which / "model.safetensors"))


# ------------------------------------------------------------------------------------ losses / metrics
class OracleHead(MTPHead):
    """Test head that 'knows' the future: logits[j][:, t] peaks on input_ids[:, t+2+j]."""

    family = "oracle"

    def __init__(self, target, K=3):
        super().__init__(HeadConfig(family="oracle", num_heads=K, vocab_size=target.config.vocab_size), target)
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward_train(self, hidden_states, input_ids, attention_mask=None):
        V, out = self.config.vocab_size, []
        for j in range(self.config.num_heads):
            fut = torch.cat([input_ids[:, 2 + j:], input_ids.new_zeros(input_ids.shape[0], 2 + j)], 1)
            out.append(self.scale * torch.nn.functional.one_hot(fut, V).float())
        return HeadTrainOutput(logits=out)

    def as_drafter(self, num_draft_tokens=None):
        raise NotImplementedError


def test_replay_weights_the_rejected_drafts_of_greedy_chains():
    """loss.replay: head j's CE and KL count 1 + replay times at anchors where heads 0..j-1's top-1
    were right and head j's is wrong (where a chain drafted there is rejected), once elsewhere."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    B, T, V, K, r = 2, 9, 7, 3, 2.5
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a prompt part
    logits = [torch.randn(B, T, V, generator=g) for _ in range(K)]
    for j in range(K):  # right about half the time, so chains reach deeper heads
        logits[j][:, : T - 2 - j] += 1.5 * F.one_hot(ids[:, 2 + j:], V)
    deep = False
    tl = torch.randn(B, T, V, generator=g)
    base = mtp_losses(logits, ids, mask, TargetDist(logits=tl), ce_weight=1.0, kl_weight=1.0, labels="data")
    rep = mtp_losses(logits, ids, mask, TargetDist(logits=tl), ce_weight=1.0, kl_weight=1.0, labels="data", replay=r)
    reached = torch.ones(B, T - 2)
    for j in range(K):
        n = T - 2 - j
        q, y, m = logits[j][:, :n], ids[:, 2 + j:], mask[:, 2 + j:].float()
        hit = (q.argmax(-1) == y).float()
        w = 1 + r * reached[:, :n] * (1 - hit)
        deep |= j > 0 and bool(((w > 1) & (m > 0)).any())
        reached = reached[:, :n] * hit
        ce = F.cross_entropy(q.reshape(-1, V), y.reshape(-1), reduction="none").view(B, n)
        assert torch.allclose(rep[j]["ce"], (ce * m * w).sum(), rtol=1e-5)
        assert torch.allclose(base[j]["ce"], (ce * m).sum(), rtol=1e-5)
        assert rep[j]["kl"] > base[j]["kl"] if bool(((w > 1) & (m > 0)).any()) else rep[j]["kl"] == base[j]["kl"]
        for key in ("n", "top1", "accept", "chain"):  # what is measured does not change
            assert torch.equal(rep[j][key], base[j][key])
    assert deep  # a chain rejected past its first head is exercised


def test_index_shift_and_expected_tau(tiny_llama):
    model, _ = tiny_llama
    head = OracleHead(model)
    ids = torch.randint(4, 128, (2, 12))
    mask = torch.ones_like(ids)
    out = head.forward_train({}, ids, mask)
    st = mtp_losses(out.logits, ids, mask, None, ce_weight=1.0, kl_weight=0.0)
    for j, s in enumerate(st):
        assert s["n"] == 2 * (12 - 2 - j)
        assert s["top1"] == s["n"] and s["ce"] / s["n"] < 1e-6
    # Against the target's own distribution: the label is the target's argmax at t+1+j.
    tl = torch.nn.functional.one_hot(torch.roll(ids, -1, 1), 128).float() * 30  # target at t predicts t+1
    st = mtp_losses(out.logits, ids, mask, TargetDist(logits=tl), ce_weight=1.0, kl_weight=1.0, eval_temperature=1.0)
    for s in st:
        assert s["top1"] == s["n"] and s["kl"] / s["n"] < 1e-3 and s["accept"] / s["n"] > 0.999
    for s in st:  # the oracle's chain is accepted at every position
        assert s["chain"] == pytest.approx(float(s["chain_n"]), rel=1e-3) and s["chain_n"] > 0
    assert expected_tau([1.0, 1.0, 1.0]) == 4.0 and expected_tau([0.5, 0.25]) == 1.75


def test_expected_tau_is_the_mean_of_per_position_products():
    """a_k = mean_t prod_{j<k} acc_j(t), not the product of per-head means (they differ when
    acceptances are correlated, as they are)."""
    from mtp.training.losses import chain_acceptance

    acc = [torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0, 1.0]]),
           torch.tensor([[1.0, 0.0, 0.0]])]
    sums, n = chain_acceptance(acc, torch.ones(1, 3))
    assert n == 3 and sums.tolist() == [2.0, 2.0, 1.0]  # t=0: 1,1,1; t=1: 1,1,0; t=2: 0
    assert expected_tau((sums / n).tolist()) == pytest.approx(1 + 5 / 3)
    sums, n = chain_acceptance(acc, torch.tensor([[1.0, 0.0, 1.0]]))  # masked position t=1
    assert n == 2 and sums.tolist() == [1.0, 1.0, 1.0]


def test_reduced_vocabulary_losses_match_the_masked_full_vocabulary():
    """Losses over a draft vocabulary equal the full-vocabulary ones with every other token's logit at
    -inf and labels outside it dropped from the CE; acceptance counts those labels as misses."""
    torch.manual_seed(0)
    V, Vd, B, T = 40, 12, 2, 9
    d2t = torch.randperm(V)[:Vd].sort().values
    ids = torch.randint(0, V, (B, T))
    ids[0, 3:] = d2t[torch.randint(0, Vd, (T - 3,))]  # mostly in-vocabulary labels, a few outside
    mask = torch.ones_like(ids)
    qd = [torch.randn(B, T, Vd) for _ in range(2)]
    full = [torch.full((B, T, V), -1e9).index_copy(-1, d2t, q) for q in qd]
    tl = torch.randn(B, T, V) * 3
    inside = torch.zeros(V, dtype=torch.bool)
    inside[d2t] = True
    for dist in (TargetDist(logits=tl), TargetDist(logits=tl).truncated(8)):
        red = mtp_losses(qd, ids, mask, dist, ce_weight=1.0, kl_weight=1.0, eval_temperature=1.0, vocab=d2t,
                         vocab_size=V)
        ref = mtp_losses(full, ids, mask, dist, ce_weight=0.0, kl_weight=0.0, eval_temperature=1.0)
        for j, (r, f) in enumerate(zip(red, ref)):
            y = ids[:, 2 + j:]
            ce = torch.nn.functional.cross_entropy(full[j][:, : T - 2 - j].reshape(-1, V), y.reshape(-1),
                                                   reduction="none")
            assert torch.allclose(r["ce"], ce[inside[y.reshape(-1)]].sum(), rtol=1e-5)
            for k in ("n", "top1", "topk"):
                assert torch.equal(r[k], f[k]), k
            assert torch.allclose(r["accept"], f["accept"], atol=1e-5)
            assert torch.isfinite(r["kl"]) and r["kl"] >= 0
    # KL to the target restricted to the draft vocabulary is 0 when q equals it there (head 0 at t
    # faces the target's logits at t+1)
    q0 = torch.cat([tl[:, 1:], tl[:, :1]], 1).index_select(-1, d2t)
    st = mtp_losses([q0], ids, mask, TargetDist(logits=tl), ce_weight=0.0, kl_weight=1.0, vocab=d2t, vocab_size=V)
    assert st[0]["kl"] < 1e-4 * st[0]["n"]
    st = mtp_losses([q0 + torch.randn_like(q0)], ids, mask, TargetDist(logits=tl), ce_weight=0.0, kl_weight=1.0,
                    vocab=d2t, vocab_size=V)
    assert st[0]["kl"] > 0.05 * st[0]["n"]


def test_tv_loss_is_one_minus_the_honest_acceptance_and_training_on_it_raises_acceptance():
    """loss.tv_weight: "tv" sums 1 - sum_x min(p, q) at kl_temperature, with p over the target's full
    vocabulary (not renormalised over a draft vocabulary), so it is n - "accept" at eval_temperature 1,
    the acceptance computed with q put back into the full vocabulary; gradient steps on it alone raise
    the acceptance of the draft's distribution."""
    torch.manual_seed(1)
    V, Vd, B, T = 40, 12, 2, 9
    d2t = torch.randperm(V)[:Vd].sort().values
    ids = torch.randint(0, V, (B, T))
    mask = torch.ones_like(ids)
    tl = torch.randn(B, T, V) * 3
    qd = [torch.randn(B, T, Vd) for _ in range(2)]
    for dist in (TargetDist(logits=tl), TargetDist(logits=tl).truncated(8)):
        for vocab, q in ((d2t, qd), (None, [torch.randn(B, T, V)])):
            st = mtp_losses(q, ids, mask, dist, ce_weight=1.0, kl_weight=0.0, tv_weight=1.0, eval_temperature=1.0,
                            vocab=vocab, vocab_size=V)
            for s in st:
                assert s["tv"] > 0.1 * s["n"]
                assert torch.allclose(s["tv"], s["n"] - s["accept"], atol=1e-4)
    off = mtp_losses(qd, ids, mask, TargetDist(logits=tl), ce_weight=1.0, kl_weight=0.0, vocab=d2t, vocab_size=V)
    assert all(s["tv"] == 0 for s in off)  # tv_weight 0: not computed
    q = qd[0].clone().requires_grad_(True)
    opt = torch.optim.Adam([q], lr=0.3)
    accept = []
    for _ in range(30):
        s = mtp_losses([q], ids, mask, TargetDist(logits=tl), ce_weight=0.0, kl_weight=0.0, tv_weight=1.0,
                       eval_temperature=1.0, vocab=d2t, vocab_size=V)[0]
        accept.append(float(s["accept"] / s["n"]))
        opt.zero_grad()
        (s["tv"] / s["n"]).backward()
        opt.step()
    # the most a draft over 12 of the 40 tokens can reach: the target's mass on those 12
    p = torch.softmax(tl[:, 1:T - 1], -1)[..., d2t].sum(-1).mean()
    assert accept[-1] > accept[0] + 0.1 and accept[-1] <= float(p) + 1e-4


def test_sampled_chain_acceptance_beside_the_greedy_one_equals_an_evaluation_at_that_temperature():
    """eval.sampled_temperature: "chain_s" (computed beside the greedy "chain" in one evaluation) is
    the "chain" an evaluation at eval_temperature 1 computes, and differs from the greedy one."""
    torch.manual_seed(2)
    V, Vd, B, T = 40, 12, 2, 10
    d2t = torch.randperm(V)[:Vd].sort().values
    ids = torch.randint(0, V, (B, T))
    mask = torch.ones_like(ids)
    dist_logits = torch.randn(B, T, V) * 2
    dist = TargetDist(logits=dist_logits).truncated(8)
    q = [torch.randn(B, T, Vd) * 2 for _ in range(3)]
    both = mtp_losses(q, ids, mask, dist, ce_weight=1.0, kl_weight=0.0, vocab=d2t, vocab_size=V, sampled_temperature=1.0)
    t1 = mtp_losses(q, ids, mask, dist, ce_weight=1.0, kl_weight=0.0, vocab=d2t, vocab_size=V, eval_temperature=1.0)
    greedy = mtp_losses(q, ids, mask, dist, ce_weight=1.0, kl_weight=0.0, vocab=d2t, vocab_size=V)
    for b, s1, g in zip(both, t1, greedy):
        assert torch.allclose(b["chain_s"], s1["chain"]) and b["chain_s_n"] == s1["chain_n"] > 0
        assert torch.equal(b["chain"], g["chain"]) and "chain_s" not in g
    assert not torch.allclose(both[0]["chain_s"], both[0]["chain"])
    assert "chain_s" not in mtp_losses(q, ids, mask, None, ce_weight=1.0, kl_weight=0.0, vocab=d2t, vocab_size=V,
                                       sampled_temperature=1.0)[0]  # no target distribution: not measured
    # sampled_rows: only the answers that were sampled count (here row 1), as if the batch held them alone
    rows = mtp_losses(q, ids, mask, dist, ce_weight=1.0, kl_weight=0.0, vocab=d2t, vocab_size=V, sampled_temperature=1.0,
                      sampled_rows=torch.tensor([False, True]))
    alone = mtp_losses([x[1:] for x in q], ids[1:], mask[1:], TargetDist(logits=dist_logits[1:]).truncated(8),
                       ce_weight=1.0, kl_weight=0.0, vocab=d2t, vocab_size=V, sampled_temperature=1.0)
    for r, a, b in zip(rows, alone, both):
        assert torch.allclose(r["chain_s"], a["chain_s"]) and r["chain_s_n"] == a["chain_s_n"] == b["chain_s_n"] / 2
        assert torch.equal(r["chain"], b["chain"])


# ------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("family,steps", [("medusa", 30), ("deepseek", 15)])
def test_loss_falls_on_a_tiny_task(tmp_path, cyc_data, family, steps, tiny_llama):
    cfg = cfg_for(tmp_path, cyc_data, f"head.family={family}", f"optim.max_steps={steps}", "optim.lr=3e-2",
                  "eval.every=0", "ckpt.every=0", "optim.warmup_steps=3", "data.batch_size=8", "eval.labels=data")
    train(cfg)
    logs = [json.loads(ln) for ln in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    tr = [r for r in logs if "train/loss" in r]
    ev = [r for r in logs if "eval/loss" in r][-1]
    assert tr[-1]["train/loss"] < 0.3 * tr[0]["train/loss"], (tr[0]["train/loss"], tr[-1]["train/loss"])
    assert ev["eval/top1_0"] > 0.9 and ev["eval/top1_1"] > 0.85, ev  # stated thresholds
    assert ev["eval/expected_tau"] > 3.3
    # the chain's acceptance of sampled decoding beside it (eval.sampled_temperature 1: what :auto reads at T > 0)
    sampled = [ev[f"eval/sampled_a_{k}"] for k in (1, 2, 3)]
    assert ev["eval/sampled_temperature"] == 1.0 and 1 >= sampled[0] >= sampled[1] >= sampled[2] >= 0
    assert ev["eval/sampled_expected_tau"] == pytest.approx(1 + sum(sampled))
    assert ev["eval/sampled_answers"] == 0  # measured on greedy answers (the data records no temperature)
    # acceptance by depth and rank (a tree's, conditioned on the greedy path): rank 0 is the learnt
    # answer, the other ranks share what is left
    from mtp.shape import heldout_rank_acceptance

    acc = heldout_rank_acceptance(cfg.run_dir / "best")
    assert len(acc) == cfg.head.args.get("num_heads", 3) and all(len(row) == cfg.eval.topk for row in acc)
    assert acc[0][0] > 0.9 and all(sum(row) <= 1 + 1e-9 for row in acc)
    assert (cfg.run_dir / "best" / "model.safetensors").is_file() and (cfg.run_dir / "final" / "config.json").is_file()
    from mtp.heads import load_heads

    load_heads(cfg.run_dir / "final", tiny_llama[0])  # strict load onto the same base model


def test_resume_ends_with_the_same_weights(tmp_path, cyc_data):
    over = ["head.family=deepseek", "optim.max_steps=6", "ckpt.every=3", "eval.every=2", "eval.max_batches=1",
            "data.batch_size=2", "optim.grad_accum=2"]
    a = cfg_for(tmp_path, cyc_data, "name=straight", *over)
    train(a)
    b = cfg_for(tmp_path, cyc_data, "name=killed", *over)
    st = train(b, stop_after=5)  # killed after step 5: the checkpoint of step 3 is the last one
    assert st["step"] == 5 and not (b.run_dir / "final").exists()
    assert (b.run_dir / "checkpoints" / "latest").read_text().strip() == "step-0000003"
    with pytest.raises(ResumeError, match="already holds a run"):
        Trainer(b)
    st = train(b, resume=True)
    assert st["step"] == 6
    wa, wb = head_weights(a.run_dir), head_weights(b.run_dir)
    assert wa.keys() == wb.keys()
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert diff <= 1e-6, diff
    assert json.loads((a.run_dir / "best.json").read_text()) == json.loads((b.run_dir / "best.json").read_text())
    # --eval-only evaluates the latest checkpoint again and appends the same row
    from mtp.training.checkpointing import evaluate_run

    last = [json.loads(x) for x in (a.run_dir / "metrics.jsonl").read_text().splitlines() if "eval/loss" in x][-1]
    again = evaluate_run(a)
    assert again["step"] == 6 and again["eval/loss"] == pytest.approx(last["eval/loss"], rel=1e-6)
    rows = [json.loads(x) for x in (a.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6 and rows[-1]["eval/loss"] == again["eval/loss"] and "eval/rank0_0" in rows[-1]
    with pytest.raises(ResumeError, match="no checkpoint"):
        evaluate_run(cfg_for(tmp_path, cyc_data, "name=never", *over))
    # A run saved before a config key existed (here two) still resumes: the key takes its default.
    saved = json.loads((a.run_dir / "config.json").read_text())
    del saved["data"]["train_fraction"], saved["loss"]["replay"]
    (a.run_dir / "config.json").write_text(json.dumps(saved))
    assert evaluate_run(a)["eval/loss"] == pytest.approx(last["eval/loss"], rel=1e-6)
    # ... or on another held-out file (data.eval=...), writing nothing in the run folder. Here the file
    # holds the run's own held-out examples, so the score must be the same.
    from mtp.data.dataset import load_examples, split_examples

    rows = [json.loads(x) for x in cyc_data.read_text().splitlines()]
    ex = load_examples(str(cyc_data), None, max_seq_len=a.data.max_seq_len)
    where = {id(e): i for i, e in enumerate(ex)}
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(rows[where[id(e)]]) + "\n" for e in split_examples(ex, a.data.eval_fraction, a.seed)[1]))
    files = {f.name: f.read_bytes() for f in a.run_dir.iterdir() if f.is_file()}
    other = evaluate_run(cfg_for(tmp_path, cyc_data, "name=straight", *over, f"data.eval={held}"))
    assert other["eval_data"] == str(held) and other["step"] == 6
    assert other["eval/loss"] == pytest.approx(again["eval/loss"], rel=1e-6)
    assert {f.name: f.read_bytes() for f in a.run_dir.iterdir() if f.is_file()} == files
    # Held-out answers that were sampled (a record's "temperature" > 0, which distillation folders
    # record in meta.json): in a split of both kinds the sampled acceptance is measured on the
    # sampled answers alone and the greedy one on the greedy answers alone.
    recs = [json.loads(x) for x in held.read_text().splitlines()]
    assert len(recs) >= 4
    tagged = [{**r, "temperature": 1.0} if i % 2 else r for i, r in enumerate(recs)]
    files = {"held": recs, "mixed": tagged, "sampled": tagged[1::2], "greedy": tagged[0::2]}
    ev = {}
    for n, rs in files.items():
        (tmp_path / f"{n}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
        ev[n] = evaluate_run(cfg_for(tmp_path, cyc_data, "name=straight", *over, f"data.eval={tmp_path / n}.jsonl",
                                     "eval.max_batches=0"))
    assert [ev[n]["eval/sampled_answers"] for n in files] == [0, len(recs) // 2, len(recs) // 2, 0]
    for k in (1, 2, 3):
        assert ev["mixed"][f"eval/a_{k}"] == pytest.approx(ev["greedy"][f"eval/a_{k}"], rel=1e-5)
        assert ev["mixed"][f"eval/sampled_a_{k}"] == pytest.approx(ev["sampled"][f"eval/sampled_a_{k}"], rel=1e-5)
    ranks = {k: v for k, v in ev["greedy"].items() if k.startswith("eval/rank")}  # the tree's, by depth and rank
    assert ranks and ranks == pytest.approx({k: v for k, v in ev["mixed"].items() if k.startswith("eval/rank")}, rel=1e-5)
    assert ev["mixed"]["eval/sampled_a_1"] != pytest.approx(ev["held"]["eval/sampled_a_1"], rel=1e-3)
    with pytest.raises(ResumeError, match=r"optim\.lr"):  # only the held-out set may change
        evaluate_run(cfg_for(tmp_path, cyc_data, "name=straight", *over, f"data.eval={held}", "optim.lr=5e-3"))
    # A resume with another config is refused, naming the keys.
    c = cfg_for(tmp_path, cyc_data, "name=killed", *over, "optim.lr=5e-3")
    with pytest.raises(ResumeError, match=r"optim\.lr"):
        Trainer(c, resume=True)


def test_two_processes_match_one(tmp_path, cyc_data):
    """accelerate launch, 2 CPU processes (DDP over gloo), batch 2 per process, vs one process with
    batch 2 and 2 accumulation steps: the same global batch of 4 examples.
    (`--cpu --num_processes 2` starts a single process in accelerate 1.15, so `--multi_gpu` is used;
    on a machine without GPUs the trainer runs it on CPU.)"""
    common = ["head.family=medusa", "optim.max_steps=4", "ckpt.every=0", "eval.every=0", "data.batch_size=2",
              "log.progress=false"]
    one = cfg_for(tmp_path, cyc_data, "name=one", *common, "optim.grad_accum=2")
    st_one = train(one)
    train_tokens = lambda c: st_one["tokens"]  # noqa: E731  same examples seen by both runs
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), WANDB_MODE="disabled")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train.heads", "--config", str(RECIPE),
           f"data.train={cyc_data}", f"out_dir={tmp_path}", "name=two", *common, "optim.grad_accum=1"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert '"tokens": ' in p.stdout and p.stdout.count('"run_dir"') == 1  # rank 0 reports
    assert json.loads(p.stdout.strip().splitlines()[-1])["tokens"] == train_tokens(one)
    w1, w2 = head_weights(one.run_dir), head_weights(tmp_path / "two")
    diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert diff < 1e-4, diff  # stated tolerance: float reduction order only (gloo all-reduce vs local sum)
    l1 = [json.loads(x) for x in (one.run_dir / "metrics.jsonl").read_text().splitlines()]
    l2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert abs(l1[-1]["eval/expected_tau"] - l2[-1]["eval/expected_tau"]) < 1e-3


def test_cache_gives_the_same_loss_as_online(tmp_path, cyc_data, tiny_llama):
    from mtp.data import load_examples
    from mtp.data.cache import build_cache

    model, tok = tiny_llama
    over = ["head.family=medusa", "loss.kl_weight=1.0", "loss.kl_topk=16", "optim.max_steps=3", "eval.every=0",
            "ckpt.every=0", "data.batch_size=8"]
    cfg = cfg_for(tmp_path, cyc_data, *over)
    ex = load_examples(cyc_data, tok, max_seq_len=cfg.data.max_seq_len, vocab_size=128)
    build_cache(model, ex, [-1], tmp_path / "cache", dtype="fp32", topk=16, progress=False)
    online = Trainer(cfg_for(tmp_path, cyc_data, "name=online", *over))
    cached = Trainer(cfg_for(tmp_path, cyc_data, "name=cached", *over, f"data.cache={tmp_path / 'cache'}"))
    e1, e2 = online.evaluate(), cached.evaluate()
    assert abs(e1["eval/loss"] - e2["eval/loss"]) < 1e-4 * abs(e1["eval/loss"])
    online.train(), cached.train()
    w1, w2 = head_weights(online.run_dir), head_weights(cached.run_dir)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4
    e1, e2 = online.evaluate(), cached.evaluate()
    assert abs(e1["eval/loss"] - e2["eval/loss"]) < 1e-4 * abs(e1["eval/loss"])
    # A cache for other data or without the head's layers is refused.
    with pytest.raises(DataError, match="other data"):
        Trainer(cfg_for(tmp_path, cyc_data, "name=bad", *over, "data.max_examples=10", f"data.cache={tmp_path / 'cache'}"))


def test_cache_cli_runs_the_target_in_model_dtype(tmp_path, cyc_data, tiny_llama, capsys):
    """train.cache --model-dtype bf16 runs the target's forwards in bf16 (the hidden states a bf16
    target gives the heads at decode time), says so in meta.json, and an fp32 recipe trains from it;
    without the flag the recipe's model.dtype is used."""
    from mtp.data import load_examples
    from train.cache import main

    base = ["--config", str(RECIPE), "--topk", "16", f"data.train={cyc_data}", f"out_dir={tmp_path}",
            "head.family=medusa"]
    assert main([*base[:4], "--out", str(tmp_path / "c32"), *base[4:]]) == 0
    assert main([*base[:4], "--out", str(tmp_path / "c16"), "--model-dtype", "bf16", *base[4:]]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [o["model_dtype"] for o in out] == ["fp32", "bf16"]
    m32, m16 = (json.loads((tmp_path / c / "meta.json").read_text()) for c in ("c32", "c16"))
    assert (m32["model_dtype"], m16["model_dtype"]) == ("float32", "bfloat16")
    from mtp.data.cache import HiddenStateCache

    model, tok = tiny_llama
    ex = load_examples(cyc_data, tok, max_seq_len=512, vocab_size=128)
    h32, h16 = (HiddenStateCache(tmp_path / c).batch([0, 1], 24, [-1])["hidden_states"][-1] for c in ("c32", "c16"))
    rel = ((h32.float() - h16.float()).abs().mean() / h32.float().abs().mean()).item()
    assert 0 < rel < 0.1, rel  # bf16 forwards: near fp32's (0.03 here), not equal; other data would be ~1
    t = Trainer(cfg_for(tmp_path, cyc_data, "name=bf16cache", "head.family=medusa", "loss.kl_weight=1.0",
                        "loss.kl_topk=16", "optim.max_steps=2", "eval.every=0", "ckpt.every=0", "data.batch_size=8",
                        f"data.cache={tmp_path / 'c16'}"))
    assert t.target.dtype == torch.float32 and len(t.examples) == len(ex)
    t.train()
    assert all(torch.isfinite(w).all() for w in head_weights(t.run_dir).values())


def test_joint_training_reports_the_target_loss(tmp_path, cyc_data):
    cfg = cfg_for(tmp_path, cyc_data, "joint.enabled=true", "joint.target_lr=1e-3", "optim.max_steps=3",
                  "eval.every=0", "ckpt.every=3")
    t = Trainer(cfg)
    before = {k: v.clone() for k, v in t.target.state_dict().items()}
    t.train()
    logs = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "train/target_ntl" in logs[0] and "eval/target_ntl" in logs[-1]
    assert any(not torch.equal(before[k], v) for k, v in t.target.state_dict().items())
    assert (cfg.run_dir / "final" / "target" / "config.json").is_file()


# ------------------------------------------------------------------------------------ bad input
def test_feature_noise_reaches_the_head_in_training_only(tmp_path, cyc_data, tiny_llama):
    from mtp.training.build import TrainModule

    model, _ = tiny_llama
    seen = []

    class Spy(OracleHead):
        def forward_train(self, hidden_states, input_ids, attention_mask=None):
            seen.append(hidden_states)
            return super().forward_train(hidden_states, input_ids, attention_mask)

    torch.manual_seed(0)
    h = {-1: torch.randn(4, 64, 32) * 3.0}
    ids = torch.randint(0, 100, (4, 64))
    module = TrainModule(Spy(model), model, joint=False, feature_noise=0.5)
    module.train()
    module(ids, torch.ones_like(ids), hidden_states=h)
    # the noise is 0.5 of each position's RMS: relative size within 10% of 0.5, and independent per call
    rel = ((seen[0][-1] - h[-1]).pow(2).mean(-1).sqrt() / h[-1].pow(2).mean(-1).sqrt()).mean().item()
    assert abs(rel - 0.5) < 0.05, rel
    module(ids, torch.ones_like(ids), hidden_states=h)
    assert not torch.allclose(seen[0][-1], seen[1][-1])
    module.eval()
    module(ids, torch.ones_like(ids), hidden_states=h)
    assert torch.equal(seen[2][-1], h[-1])
    # Through the trainer: evaluation is untouched, the trained weights are not.
    over = ["head.family=medusa", "optim.max_steps=3", "eval.every=0", "ckpt.every=0"]
    plain = Trainer(cfg_for(tmp_path, cyc_data, "name=plain", *over))
    noisy = Trainer(cfg_for(tmp_path, cyc_data, "name=noisy", *over, "data.feature_noise=0.3"))
    assert plain.evaluate()["eval/loss"] == pytest.approx(noisy.evaluate()["eval/loss"], rel=1e-6)
    plain.train(), noisy.train()
    w1, w2 = head_weights(plain.run_dir), head_weights(noisy.run_dir)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) > 1e-4


def test_bad_input_is_a_clear_error(tmp_path, cyc_data):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['optim.lrr'\]"):
        cfg_for(tmp_path, cyc_data, "optim.lrr=1")
    with pytest.raises(ConfigError, match="optim.max_steps: expected int"):
        cfg_for(tmp_path, cyc_data, "optim.max_steps=many")
    with pytest.raises(ConfigError, match="data.feature_noise must be a finite number >= 0"):
        cfg_for(tmp_path, cyc_data, "data.feature_noise=-0.1")
    with pytest.raises(ConfigError, match="does not fit target"):
        Trainer(cfg_for(tmp_path, cyc_data, "head.args.hidden_layers=[9]"))
    with pytest.raises(ConfigError, match="does not fit target"):
        Trainer(cfg_for(tmp_path, cyc_data, "head.args.no_such_field=1"))
    with pytest.raises(ConfigError, match="position_weights has 2 entries"):
        Trainer(cfg_for(tmp_path, cyc_data, "loss.position_weights=[1, 1]"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        Trainer(cfg_for(tmp_path, tmp_path / "empty.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"input_ids": [1, 2, 3]}\n{"input_ids": [1, 2\n')
    with pytest.raises(DataError, match="bad.jsonl:2: malformed JSON"):
        Trainer(cfg_for(tmp_path, tmp_path / "bad.jsonl"))
    with pytest.raises(ConfigError, match="exceeds the target's context of 2048"):
        Trainer(cfg_for(tmp_path, cyc_data, "data.max_seq_len=4096"))
    with pytest.raises(DataError, match="fewer than one global batch"):
        Trainer(cfg_for(tmp_path, cyc_data, "data.max_examples=3"))
    # The CLI turns these into one line on stderr and exit code 2.
    from train.heads import main

    assert main(["--config", str(RECIPE), f"data.train={tmp_path / 'empty.jsonl'}", f"out_dir={tmp_path}"]) == 2


def test_data_in_parts_with_one_cache_per_part_and_warm_start(tmp_path, cyc_data, tiny_llama):
    """data.train="a,b" with data.cache="ca,cb" reads as the whole file with one cache; head.init
    starts from a checkpoint's weights."""
    from mtp.data import load_examples
    from mtp.data.cache import build_cache

    model, tok = tiny_llama
    rows = cyc_data.read_text().splitlines()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(rows[:40]) + "\n")
    b.write_text("\n".join(rows[40:]) + "\n")
    over = ["head.family=medusa", "loss.kl_weight=1.0", "loss.kl_topk=16", "optim.max_steps=2", "eval.every=0",
            "ckpt.every=0", "data.batch_size=8"]
    for part, name in ((cyc_data, "whole"), (a, "ca"), (b, "cb")):
        ex = load_examples(part, tok, max_seq_len=512, vocab_size=128)
        build_cache(model, ex, [-1], tmp_path / name, dtype="fp32", topk=16, progress=False)
    whole = Trainer(cfg_for(tmp_path, cyc_data, "name=whole", *over, f"data.cache={tmp_path / 'whole'}"))
    split = load_config(RECIPE, [f"data.train={a},{b}", f"out_dir={tmp_path}", "name=split", *over,
                                 f"data.cache={tmp_path / 'ca'},{tmp_path / 'cb'}"])
    parts = Trainer(split)
    assert len(parts.examples) == len(whole.examples) == len(rows)
    idx = [0, 45, 3, 70, 41]
    x, y = whole.cache.batch(idx, 30, [-1]), parts.cache.batch(idx, 30, [-1])
    assert torch.equal(x["topk_indices"], y["topk_indices"]) and torch.equal(x["topk_values"], y["topk_values"])
    assert all(torch.equal(x["hidden_states"][l], y["hidden_states"][l]) for l in x["hidden_states"])
    assert abs(whole.evaluate()["eval/loss"] - parts.evaluate()["eval/loss"]) < 1e-5
    with pytest.raises(DataError, match="other data"):
        Trainer(load_config(RECIPE, [f"data.train={a},{b}", f"out_dir={tmp_path}", "name=bad", *over,
                                     f"data.cache={tmp_path / 'ca'}"]))
    whole.train()
    warm = Trainer(cfg_for(tmp_path, cyc_data, "name=warm", *over, f"head.init={whole.run_dir / 'final'}"))
    w = head_weights(whole.run_dir)
    assert all(torch.equal(w[k], v.detach().cpu()) for k, v in warm.head.state_dict().items() if k in w)
    with pytest.raises(ConfigError, match="holds a 'medusa' head"):
        Trainer(cfg_for(tmp_path, cyc_data, "name=warm2", "head.family=hydra", f"head.init={whole.run_dir / 'final'}"))
