"""Self-written (Magpie) prompts: deterministic for a fixed seed, deduplicated, cut at the template's
end of turn, written atomically and read back by load_prompts."""
import pytest

from mtp.data import DataError, load_prompts
from mtp.data.magpie import Deduplicator, MagpieConfig, self_written_prompts, user_turn_end, write_prompts

CFG = MagpieConfig(max_new_tokens=128, batch_size=32, min_chars=2, min_letter_ratio=0.0, max_attempt_factor=16)


def test_deduplicator_drops_exact_and_near_duplicates():
    d = Deduplicator()
    assert d.add("Can you help me plan a trip to Lisbon?")
    assert not d.add("can you help me plan a trip to lisbon")  # same after normalisation
    assert not d.add("Can you help me plan a trip to Lisbon next week, please?")  # same first eight words
    assert d.add("Can you help me write a cover letter for a job?")


def test_self_written_prompts_are_deterministic_and_distinct(tiny_llama, tmp_path):
    model, tok = tiny_llama
    assert user_turn_end(tok) == "\n"  # the tiny template ends a user turn with a line break
    a = self_written_prompts(model, tok, 8, seed=3, cfg=CFG, progress=False)
    b = self_written_prompts(model, tok, 8, seed=3, cfg=CFG, progress=False)
    c = self_written_prompts(model, tok, 8, seed=4, cfg=CFG, progress=False)
    assert len(a) == 8 and [p.turns for p in a] == [p.turns for p in b]
    assert [p.turns for p in a] != [p.turns for p in c]
    d = Deduplicator()
    assert all(d.add(p.turns[0]) for p in a)  # no two are duplicates
    assert all("\n" not in p.turns[0] and p.turns[0] == p.turns[0].strip() for p in a)
    write_prompts(a, tmp_path / "p.jsonl", {"n": 8})
    back = load_prompts(f"builtin,{tmp_path / 'p.jsonl'}")
    assert [p.turns for p in back[-8:]] == [p.turns for p in a] and len(back) == 438 + 8


def test_self_written_prompts_need_a_chat_template(tiny_llama):
    model, tok = tiny_llama
    saved = tok.chat_template
    tok.chat_template = None
    try:
        with pytest.raises(DataError, match="chat template"):
            self_written_prompts(model, tok, 2, cfg=CFG, progress=False)
    finally:
        tok.chat_template = saved


def test_self_written_prompts_with_openers(tiny_llama):
    """With openers, batch b's turns start with openers[b % len]; still deterministic and distinct."""
    from dataclasses import replace

    model, tok = tiny_llama
    cfg = replace(CFG, batch_size=4, openers=("Explain", "List"))
    a = self_written_prompts(model, tok, 6, seed=3, cfg=cfg, progress=False)
    b = self_written_prompts(model, tok, 6, seed=3, cfg=cfg, progress=False)
    assert len(a) == 6 and [p.turns for p in a] == [p.turns for p in b]
    assert a[0].turns[0].startswith("Explain")
    assert all(p.turns[0].startswith(("Explain", "List")) for p in a)
    assert any(p.turns[0].startswith("List") for p in a)
    d = Deduplicator()
    assert all(d.add(p.turns[0]) for p in a)
