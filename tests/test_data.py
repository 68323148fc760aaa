"""Data: prompt sources, self-distillation (resume without duplicates), loss masks, bucketing, cache."""
from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter

import pytest
import torch

from mtp.data import DataError, DistillConfig, collate, distill, global_batches, load_examples, load_prompts
from mtp.data.cache import HiddenStateCache, build_cache
from mtp.data.prompts import Prompt

CFG = DistillConfig(max_new_tokens=6, batch_size=3, shard_size=4)


# ------------------------------------------------------------------------------------ prompt sources
def test_builtin_prompt_set():
    ps = load_prompts("builtin")
    assert len(ps) >= 300
    cats = Counter(p.category for p in ps)
    for c in ("chat", "writing", "code", "math", "qa", "summarization", "translation", "extraction", "multi-turn"):
        assert cats[c] >= 10, cats
    assert len({p.id for p in ps}) == len(ps)
    assert len({p.turns[0] for p in ps}) > 0.95 * len(ps)  # varied, not one template repeated
    assert all(len(p.turns) >= 2 for p in ps if p.category == "multi-turn")


def test_prompt_files_and_errors(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\nsecond prompt\n")
    assert [p.turns for p in load_prompts(tmp_path / "p.txt")] == [["first prompt"], ["second prompt"]]
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"messages": [{"role": "user", "content": "y"}]}\n')
    assert [p.turns for p in load_prompts(tmp_path / "p.jsonl")] == [["x"], ["y"]]
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_prompts(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        load_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "nofield.jsonl").write_text('{"foo": 1}\n')
    with pytest.raises(DataError, match="no prompt field"):
        load_prompts(tmp_path / "nofield.jsonl")
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(DataError, match="duplicate prompt id 'a'"):
        load_prompts(tmp_path / "dup.jsonl")
    with pytest.raises(DataError, match="neither"):
        load_prompts(tmp_path / "missing.jsonl")


def test_shipped_prompt_file_is_its_generators_output():
    from mtp.data import make_prompts

    want = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in make_prompts.build())
    assert make_prompts.OUT.read_text(encoding="utf-8") == want, \
        "mtp/data/prompts.jsonl is stale: run python -m mtp.data.make_prompts"


def test_training_prompts_hold_no_benchmark_text():
    from mtp.eval_suites.passages import PASSAGES
    from mtp.suites import load_suite

    train_text = "\n".join(t for p in load_prompts("builtin") for t in p.turns)
    for title, body in PASSAGES:
        assert body[:80] not in train_text, title
    for it in load_suite("spec"):
        assert it.turns[0] not in train_text, it.id


def test_read_jsonl_strict_and_tolerant_tail(tmp_path):
    from mtp.io import read_jsonl

    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n\n[2]\n{"a": 3}')  # blank line skipped; last line has no newline
    assert read_jsonl(p) == [{"a": 1}, [2], {"a": 3}]
    assert read_jsonl(p, tolerant_tail=True) == [{"a": 1}, [2]]  # an unfinished append is dropped
    p.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    for tolerant in (False, True):  # a malformed complete line is an error in both modes
        with pytest.raises(DataError, match=r"a.jsonl:2: malformed JSON \(.* at column \d+\); fix it"):
            read_jsonl(p, tolerant_tail=tolerant, hint="fix it")
    assert read_jsonl(tmp_path / "none.jsonl", tolerant_tail=True) == []  # an append-only file not yet written
    with pytest.raises(DataError, match="no such data file"):
        read_jsonl(tmp_path / "none.jsonl")


def test_one_encoder_for_distillation_and_benchmarks(tmp_path, tiny_llama):
    """Distilled prompt ids are exactly what a benchmark feeds for the same prompt and history."""
    from mtp.chat import encode_turn
    from mtp.suites import load_suite

    model, tok = tiny_llama
    suite = tmp_path / "s.jsonl"
    suite.write_text(json.dumps({"id": "mt", "category": "multi-turn", "turns": ["hello there", "and then?"]}) + "\n")
    (p,) = load_suite(str(suite))
    assert isinstance(p, Prompt) and p.format == "chat"
    distill(model, tok, [p], tmp_path / "d", CFG, progress=False)
    r0, r1 = _records(tmp_path / "d")
    assert r0["prompt_ids"] == encode_turn(tok, p, 0)
    answer0 = tok.decode(r0["response_ids"], skip_special_tokens=True)
    assert r1["prompt_ids"] == encode_turn(tok, p, 1, [answer0])
    assert tok.decode(r1["prompt_ids"]) == f"user: hello there\nassistant: {answer0}\nuser: and then?\nassistant: "
    raw = Prompt(id="r", turns=["def f():"], format="raw")
    assert encode_turn(tok, raw, 0) == tok("def f():").input_ids  # raw: the text as is, with BOS


# ------------------------------------------------------------------------------------ self-distillation
def _records(folder):
    return [json.loads(ln) for f in sorted(folder.glob("shard-*.jsonl")) for ln in f.read_text().splitlines()]


def test_distill_resume_after_kill_writes_no_duplicates(tmp_path, tiny_llama, monkeypatch):
    model, tok = tiny_llama
    prompts = load_prompts("builtin")[:7] + [p for p in load_prompts("builtin") if p.category == "multi-turn"][:2]
    expected_ids = sorted(f"{p.id}#{t}" for p in prompts for t in range(len(p.turns)))
    # A run killed between writing a shard's temp file and renaming it (the third batch).
    real_replace, calls = os.replace, {"n": 0}

    def dying_replace(a, b):
        if str(a).endswith(".jsonl.tmp"):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt("killed")
        return real_replace(a, b)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        distill(model, tok, prompts, tmp_path / "run", CFG, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    partial = _records(tmp_path / "run")
    assert 0 < len({r["prompt_id"] for r in partial}) < len(prompts)
    assert list((tmp_path / "run").glob("*.tmp")), "the kill should leave the half-written temp file"
    stats = distill(model, tok, prompts, tmp_path / "run", CFG, progress=False)  # resume
    assert not list((tmp_path / "run").glob("*.tmp"))
    recs = _records(tmp_path / "run")
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), "duplicate records after resume"
    assert sorted(ids) == expected_ids  # every prompt (and every turn) exactly once
    assert stats["prompts_new"] == len(prompts) - len({r["prompt_id"] for r in partial})
    assert all(r in recs for r in partial)  # what was written before the kill is kept as is
    assert max(len(_records_in(f)) for f in (tmp_path / "run").glob("shard-*.jsonl")) <= CFG.shard_size + CFG.batch_size * 3
    # Running again does nothing.
    assert distill(model, tok, prompts, tmp_path / "run", CFG, progress=False)["prompts_new"] == 0
    assert len(_records(tmp_path / "run")) == len(recs)


def _records_in(f):
    return f.read_text().splitlines()


def test_distill_multiturn_sees_own_replies_and_resume_checks_settings(tmp_path, tiny_llama):
    model, tok = tiny_llama
    p = Prompt(id="mt", turns=["hello there", "and then?"], category="multi-turn")
    distill(model, tok, [p], tmp_path, CFG, progress=False)
    r0, r1 = _records(tmp_path)
    assert (r0["turn"], r1["turn"]) == (0, 1)
    reply0 = tok.decode(r0["response_ids"], skip_special_tokens=True)
    assert reply0 and reply0 in tok.decode(r1["prompt_ids"])  # turn 1's context holds turn 0's reply
    with pytest.raises(DataError, match="temperature"):
        distill(model, tok, [p], tmp_path, DistillConfig(max_new_tokens=6, temperature=0.7), progress=False)


def test_distill_long_prompt_is_a_clear_error(tmp_path, tiny_llama):
    model, tok = tiny_llama
    long = Prompt(id="too-long", turns=["word " * 3000])
    short = Prompt(id="ok", turns=["hi"])
    with pytest.raises(DataError, match=r"prompt 'too-long'.*exceeds the model's context of 2048"):
        distill(model, tok, [short, long], tmp_path / "a", CFG, progress=False)
    stats = distill(model, tok, [short, long], tmp_path / "b",
                    DistillConfig(max_new_tokens=6, on_long_prompt="skip"), progress=False)
    assert stats["skipped"] == ["too-long"] and stats["prompts_done"] == 1


# ------------------------------------------------------------------------------------ dataset
def test_loss_mask_covers_exactly_the_response(tmp_path, tiny_llama):
    model, tok = tiny_llama
    prompts = load_prompts("builtin")[:3]
    distill(model, tok, prompts, tmp_path, CFG, progress=False)
    recs = _records(tmp_path)
    ex = load_examples(tmp_path, tok)
    assert len(ex) == len(recs)
    for e, r in zip(ex, recs):
        assert e.input_ids == r["prompt_ids"] + r["response_ids"]
        assert [t for t, m in zip(e.input_ids, e.loss_mask) if m] == r["response_ids"]
        assert sum(e.loss_mask[: len(r["prompt_ids"])]) == 0
        assert tok.decode(r["prompt_ids"]).endswith("assistant: ")  # chat template, masked out
    b = collate(ex, pad_id=tok.pad_token_id)
    assert b["input_ids"].shape == b["loss_mask"].shape == b["attention_mask"].shape
    assert int((b["loss_mask"] * (1 - b["attention_mask"])).sum()) == 0  # no loss on padding
    assert int(b["loss_mask"].sum()) == sum(len(r["response_ids"]) for r in recs)
    # greedy answers; the same prompts sampled: their examples say so (the folder's meta.json does)
    assert not any(e.sampled for e in ex)
    distill(model, tok, prompts, tmp_path / "t1", dataclasses.replace(CFG, temperature=1.0), progress=False)
    both = load_examples(f"{tmp_path},{tmp_path / 't1'}", tok)
    assert [e.sampled for e in both] == [False] * len(recs) + [True] * len(_records(tmp_path / "t1"))


def test_dataset_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_examples(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt_ids": [1, 2], "response_ids": [3, 4, 5]}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl:2: malformed JSON"):
        load_examples(tmp_path / "bad.jsonl")
    (tmp_path / "vocab.jsonl").write_text('{"prompt_ids": [1, 2], "response_ids": [3, 400, 5]}\n')
    with pytest.raises(DataError, match="outside the target's vocabulary"):
        load_examples(tmp_path / "vocab.jsonl", vocab_size=128)
    (tmp_path / "long.jsonl").write_text(json.dumps({"prompt_ids": list(range(50)), "response_ids": [1, 2]}) + "\n")
    with pytest.raises(DataError, match="max_seq_len=16"):
        load_examples(tmp_path / "long.jsonl", max_seq_len=16)
    with pytest.raises(DataError, match="no shard"):
        load_examples(tmp_path)
    (tmp_path / "temp.jsonl").write_text('{"prompt_ids": [1, 2], "response_ids": [3, 4, 5], "temperature": "hot"}\n')
    with pytest.raises(DataError, match="temperature must be a number"):
        load_examples(tmp_path / "temp.jsonl")


def test_length_bucketing_is_deterministic_and_covers_each_example_once():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 200, (103,), generator=g).tolist()
    a = global_batches(lengths, 8, seed=1, epoch=0)
    assert a == global_batches(lengths, 8, seed=1, epoch=0)
    assert a != global_batches(lengths, 8, seed=1, epoch=1)
    flat = [i for b in a for i in b]
    assert len(flat) == len(set(flat)) == 96  # last incomplete batch dropped
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    plain = global_batches(lengths, 8, seed=1, epoch=0, bucket=False)
    spread_plain = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / len(plain)
    assert spread < 0.5 * spread_plain


# ------------------------------------------------------------------------------------ hidden-state cache
def test_cache_round_trip(tmp_path, tiny_llama):
    model, tok = tiny_llama
    from mtp.data.dataset import Example

    g = torch.Generator().manual_seed(0)
    ex = [Example(torch.randint(4, 128, (n,), generator=g).tolist(), [0] * 3 + [1] * (n - 3)) for n in (9, 14, 6, 11)]
    meta = build_cache(model, ex, [-1, 1], tmp_path / "c", dtype="fp32", topk=8, batch_size=3, shard_tokens=20,
                       progress=False)
    assert len(meta["shards"]) > 1 and meta["layers"] == [1, 2]
    c = HiddenStateCache(tmp_path / "c")
    c.check(model, ex, [-1], 8)
    b = collate(ex[1:3])
    got = c.batch([1, 2], b["input_ids"].shape[1], [-1, 1])
    with torch.no_grad():
        for r, e in enumerate(ex[1:3]):
            out = model(torch.tensor([e.input_ids]), output_hidden_states=True)
            n = len(e.input_ids)
            torch.testing.assert_close(got["hidden_states"][-1][r, :n], out.hidden_states[-1][0], atol=1e-3, rtol=1e-4)  # batched vs single forward
            torch.testing.assert_close(got["hidden_states"][1][r, :n], out.hidden_states[1][0], atol=1e-3, rtol=1e-4)  # batched vs single forward
            assert torch.equal(got["topk_indices"][r, :n], out.logits[0].topk(8).indices)
            assert got["hidden_states"][-1][r, n:].abs().sum() == 0
    assert c.size_bytes() == meta["tokens"] * meta["bytes_per_token"]
    bf = build_cache(model, ex, [-1], tmp_path / "b", dtype="bf16", topk=8, progress=False)
    assert bf["bytes_per_token"] == 64 * 2 + 8 * 8
    with pytest.raises(DataError, match="other data"):
        c.check(model, ex[:3], [-1], 8)
    with pytest.raises(DataError, match="needs \\[0\\]"):
        c.check(model, ex, [0], 8)
    with pytest.raises(DataError, match="top-8"):
        c.check(model, ex, [-1], 16)


def test_passage_tasks_from_own_responses():
    """Passage prompts wrap finished, non-repetitive responses; RAG and follow-up tasks use the
    question that produced the passage; cut-off and looping responses are never used."""
    from mtp.data.passages import KINDS, passage_prompts

    words = ("the river carries water from the hills to the sea and farmers along its banks grow rice "
             "wheat and beans while towns trade fish salt and cloth in busy markets each spring").split()

    class WordTok:  # token i is words[i]; 99 is EOS
        eos_token_id = 99

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(words[i % len(words)] for i in ids if i != 99)

    def rec(pid, ids, finish="eos", turn=0):
        return {"prompt_id": pid, "turn": turn, "prompt_ids": [1, 2], "response_ids": ids + [99], "finish_reason": finish}

    good = list(range(len(words))) + list(range(len(words)))[::-1]
    records = [rec(f"q{i}", good[i:] + good[:i]) for i in range(4)]
    records += [rec("cut", good, finish="length"), rec("loop", [0, 1, 2] * 20), rec("short", [0, 1, 2]),
                rec("q0", good, turn=1)]
    questions = [Prompt(id=f"q{i}", turns=[f"Question number {i}?"]) for i in range(4)]
    out = passage_prompts(records, WordTok(), 24, seed=1, questions=questions)
    assert len(out) == 24 and len({p.id for p in out}) == 24
    assert Counter(p.category for p in out) == {f"passage-{k}": 4 for k in KINDS}
    for p in out:
        text = " ".join(p.turns)
        assert "Question number" in text if p.category in ("passage-rag", "passage-follow-up") else True
        if p.category == "passage-follow-up":
            assert len(p.turns) == 2 and p.turns[0].startswith("Question number")
        elif p.category != "passage-translate":
            assert "river" in text or "wheat" in text
    assert [p.turns for p in passage_prompts(records, WordTok(), 24, seed=1, questions=questions)] == [p.turns for p in out]
    assert {p.group for p in out} == {"q0", "q1", "q2", "q3"}  # each task is grouped with its source answer
    no_q = passage_prompts(records, WordTok(), 12, seed=1)
    assert not any(p.category in ("passage-rag", "passage-follow-up") for p in no_q)
    with pytest.raises(DataError, match="no usable passages"):
        passage_prompts(records[4:7], WordTok(), 5)
    with pytest.raises(DataError, match="unknown passage task kinds"):
        passage_prompts(records, WordTok(), 5, kinds=("poem",))


def test_passage_tasks_share_the_held_out_side_of_their_source(tmp_path):
    """A prompt's "group" goes through write_prompts / load_prompts and distillation records, and
    split_examples keeps a group on one side: passage tasks never score against their own source."""
    from mtp.data.dataset import example_from_record, split_examples
    from mtp.data.magpie import write_prompts

    ps = [Prompt(id=f"q{i}", turns=["Q?"]) for i in range(40)]
    ps += [Prompt(id=f"passage-{i}", turns=["Summarize: ..."], category="passage-summarize", group=f"q{i % 40}")
           for i in range(120)]
    write_prompts(ps, tmp_path / "p.jsonl")
    back = load_prompts(str(tmp_path / "p.jsonl"))
    assert [p.group for p in back] == [p.group for p in ps]
    recs = [{"id": f"{p.id}#0", "prompt_id": p.id, "prompt_ids": [1, 2], "response_ids": [3, 4, 5],
             **({"group": p.group} if p.group else {})} for p in back]
    exs = [example_from_record(r) for r in recs]
    train, held = split_examples(exs, 0.2, seed=0)
    assert held and train
    assert not {e.group for e in train} & {e.group for e in held}
    assert len({e.group for e in exs}) == 40


def test_train_fraction_keeps_a_nested_share_of_training_groups_and_the_same_held_out():
    """data.train_fraction (data-scaling curves): the held-out side is the full split's, a smaller
    share's training groups are a subset of a larger share's, each about its share of the groups;
    a share that keeps nothing, or one out of (0, 1], is refused with what to change."""
    from mtp.data.dataset import example_from_record, split_examples
    from mtp.training.config import ConfigError, TrainConfig, validate

    recs = [{"id": f"g{i // 2}-{i}", "prompt_id": f"g{i // 2}", "prompt_ids": [1, 2], "response_ids": [3, 4, 5]}
            for i in range(800)]  # 400 groups of two turns
    exs = [example_from_record(r) for r in recs]
    full_train, full_held = split_examples(exs, 0.1, seed=0)
    groups = []
    for f in (0.25, 0.5, 1.0):
        train, held = split_examples(exs, 0.1, seed=0, train_fraction=f)
        assert held == full_held
        g = {e.group for e in train}
        assert abs(len(g) / len({e.group for e in full_train}) - f) < 0.08, f
        assert all(len([e for e in train if e.group == x]) == 2 for x in g)  # a group stays whole
        groups.append(g)
    assert groups[0] < groups[1] < groups[2] and groups[2] == {e.group for e in full_train}
    assert {e.group for e in split_examples(exs, 0.0, seed=0, train_fraction=0.5)[0]} <= {e.group for e in exs}
    with pytest.raises(DataError, match="train_fraction"):
        split_examples(exs[:2], 0.0, seed=0, train_fraction=1e-9)
    cfg = TrainConfig()
    cfg.data.train, cfg.data.train_fraction = "x", 0.0
    with pytest.raises(ConfigError, match="train_fraction"):
        validate(cfg)


def test_distill_records_carry_the_prompt_group(tiny_llama, tmp_path):
    from mtp.data.dataset import load_examples as load

    model, tok = tiny_llama
    ps = [Prompt(id="src", turns=["hello there"]), Prompt(id="task", turns=["say it again"], group="src")]
    distill(model, tok, ps, tmp_path / "d", CFG, progress=False)
    recs = {r["prompt_id"]: r for r in _records(tmp_path / "d")}
    assert "group" not in recs["src"] and recs["task"]["group"] == "src"
    assert {e.group for e in load(tmp_path / "d", tok)} == {"src"}
