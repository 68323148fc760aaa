"""The decode loop: speculative greedy == plain greedy == HF greedy, stats add up, rollback is exact."""
import pytest
import torch

from conftest import hf_greedy, perturbed_copy
from mtp.drafters import DraftModelDrafter, LookupFirstDrafter, LookupUnionDrafter, OracleDrafter, PromptLookupDrafter, RandomDrafter
from mtp.engine import generate
from mtp.kv import KVState, crop_cache, new_cache


def _prompts(vocab: int, lengths=(6, 11, 17), seed=0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(lengths):
        p = torch.randint(3, vocab, (n,), generator=g).tolist()
        if i == 0:  # a repetitive prompt so prompt lookup has something to find
            p = (p[:4] * 4)[:n]
        out.append(p)
    return out


def _drafters(name, model, vocab, k, refs):
    if name == "pld":
        return PromptLookupDrafter(num_draft_tokens=k, max_ngram=2)
    if name == "random":
        return RandomDrafter(vocab, num_draft_tokens=k, seed=1)
    if name == "oracle":
        return OracleDrafter(refs, num_draft_tokens=k)
    if name == "draft-model":
        return DraftModelDrafter(perturbed_copy(model, 0.3), num_draft_tokens=k)
    if name == "pld+draft-model":  # lookup where the context repeats, the draft model elsewhere
        return LookupFirstDrafter(DraftModelDrafter(perturbed_copy(model, 0.3), num_draft_tokens=k),
                                  lookup_tokens=k + 1, min_ngram=1, max_ngram=2)
    raise KeyError(name)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_plain_greedy_matches_hf_generate(fixture, request):
    model, _ = request.getfixturevalue(fixture)
    vocab = model.config.vocab_size
    for p in _prompts(vocab):
        ours = generate(model, p, max_new_tokens=40, ignore_eos=True).tokens[0]
        assert ours == hf_greedy(model, p, 40), f"prompt {p}"


def test_batched_plain_equals_rows_alone(tiny_llama):
    model, _ = tiny_llama
    prompts = _prompts(model.config.vocab_size)
    batched = generate(model, prompts, max_new_tokens=30, ignore_eos=True)
    for r, p in enumerate(prompts):
        assert batched.tokens[r] == generate(model, p, max_new_tokens=30, ignore_eos=True).tokens[0]
    # A padded tensor with an attention mask is the same input.
    T = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, T - len(p):] = torch.tensor(p)
        mask[r, T - len(p):] = 1
    assert generate(model, ids, attention_mask=mask, max_new_tokens=30, ignore_eos=True).tokens == batched.tokens


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("drafter", ["pld", "random", "oracle", "draft-model", "pld+draft-model"])
def test_speculative_greedy_equals_plain(tiny_llama, drafter, k):
    model, _ = tiny_llama
    vocab = model.config.vocab_size
    prompts = _prompts(vocab)
    for max_new in (1, 2, 7, 33):
        refs = [generate(model, p, max_new_tokens=max_new, ignore_eos=True).tokens[0] for p in prompts]
        for r, p in enumerate(prompts):
            d = _drafters(drafter, model, vocab, k, [refs[r]])
            out = generate(model, p, drafter=d, max_new_tokens=max_new, ignore_eos=True)
            assert out.tokens[0] == refs[r], f"max_new={max_new} prompt={r}"
            s = out.stats
            assert s.new_tokens == len(out.tokens[0]) == s.accepted + s.target_tokens


@pytest.mark.parametrize("drafter", ["pld", "oracle", "draft-model"])
def test_eos_boundary(tiny_llama, drafter):
    """Pick as EOS a token the plain output emits mid-way: both paths stop right after it."""
    model, _ = tiny_llama
    vocab = model.config.vocab_size
    p = _prompts(vocab)[1]
    full = generate(model, p, max_new_tokens=40, ignore_eos=True).tokens[0]
    eos = full[len(full) // 2]
    cut = full.index(eos) + 1
    plain = generate(model, p, max_new_tokens=40, eos_token_id=eos)
    assert plain.tokens[0] == full[:cut] and plain.finish_reasons == ["eos"]
    assert plain.tokens[0] == hf_greedy(model, p, 40, eos=eos)
    for k in (2, 5):
        out = generate(model, p, drafter=_drafters(drafter, model, vocab, k, [full]), max_new_tokens=40, eos_token_id=eos)
        assert out.tokens[0] == full[:cut] and out.finish_reasons == ["eos"]


def test_oracle_accepts_everything_and_stats_add_up(tiny_llama):
    model, _ = tiny_llama
    p = _prompts(model.config.vocab_size)[2]
    for k in (1, 3, 4):
        ref = generate(model, p, max_new_tokens=30, ignore_eos=True).tokens[0]
        out = generate(model, p, drafter=OracleDrafter([ref], k), max_new_tokens=30, ignore_eos=True)
        s = out.stats
        assert out.tokens[0] == ref
        assert all(a == d for a, d in zip(s.accept_lengths, s.draft_lengths))  # nothing rejected
        assert s.accept_lengths[:-1] == [k] * (len(s.accept_lengths) - 1)  # full chains except the end
        assert s.draft_acceptance_rate == 1.0
        # prefill gives 1 token, each full step k+1: forwards = 1 + ceil((30-1)/(k+1))
        assert s.target_forwards == 1 + -(-29 // (k + 1))
        assert s.new_tokens == 30 == s.accepted + s.target_tokens
        assert s.per_position_acceptance() == [1.0] * k  # steps cut short by the end do not count against k
        assert s.tau == (30 - 1) / (s.target_forwards - 1)  # decode steps only: the prefill is not one
        if 29 % (k + 1) == 0:
            assert s.tau == k + 1
        assert sum(s.accept_length_histogram()) == len(s.accept_lengths)
        # one timed forward per decode step, each with its draft length (the cost model's in-run curve)
        assert len(s.step_costs) == s.target_forwards - 1
        assert [c[0] for c in s.step_costs if c[0]] == s.draft_lengths and not any(c[1] for c in s.step_costs)
        assert s.prefill_time_s > 0 and all(c[2] > 0 for c in s.step_costs)
        assert s.prefill_time_s + s.verify_time_s + s.draft_time_s <= s.wall_time_s


def test_random_drafter_accepts_almost_nothing(tiny_llama):
    model, _ = tiny_llama
    vocab = model.config.vocab_size
    p = _prompts(vocab)[2]
    ref = generate(model, p, max_new_tokens=60, ignore_eos=True)
    out = generate(model, p, drafter=RandomDrafter(vocab, 4, seed=3), max_new_tokens=60, ignore_eos=True)
    assert out.tokens == ref.tokens
    assert out.stats.draft_acceptance_rate < 0.1
    assert out.stats.tau < 1.3
    assert ref.stats.tau == 1.0 and ref.stats.target_forwards == 60


@pytest.mark.parametrize("drafter", ["pld", "random", "draft-model", "oracle", "pld+draft-model"])
def test_batched_speculative_equals_rows_alone(tiny_llama, drafter):
    """Rows accept different numbers of drafts (holes in the batch's cache): each row's output
    still equals that row decoded alone."""
    model, _ = tiny_llama
    vocab = model.config.vocab_size
    prompts = _prompts(vocab, lengths=(6, 11, 17, 9), seed=4)
    refs = [generate(model, p, max_new_tokens=25, ignore_eos=True).tokens[0] for p in prompts]
    out = generate(model, prompts, drafter=_drafters(drafter, model, vocab, 3, refs), max_new_tokens=25, ignore_eos=True)
    assert out.tokens == refs
    assert len(out.row_stats) == 4 and out.stats.new_tokens == sum(len(r) for r in refs)


def test_rollback_then_decode_equals_decode(tiny_llama):
    """Feed junk tokens, roll them back with the crop helper, continue: logits equal a cache that
    never saw the junk."""
    model, _ = tiny_llama
    prompt = torch.tensor([_prompts(model.config.vocab_size)[2]])
    nxt = torch.tensor([[5, 9, 11]])
    with torch.no_grad():
        clean = KVState(model, 1, torch.device("cpu"))
        clean.forward(prompt)
        ref = clean.forward(nxt).logits
        dirty = KVState(model, 1, torch.device("cpu"))
        dirty.forward(prompt)
        dirty.forward(torch.tensor([[7, 7, 7, 7, 7]]))
        dirty.truncate(torch.tensor([prompt.shape[1]]))
        assert dirty.num_slots == prompt.shape[1]
        got = dirty.forward(nxt).logits
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_crop_helper_semantics(tiny_llama):
    model, _ = tiny_llama
    cache = new_cache(model)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3, 4, 5, 6]]), cache=cache, use_cache=True)
    assert cache.get_seq_length() == 6
    crop_cache(cache, 2)
    assert cache.get_seq_length() == 4
    crop_cache(cache, 0)
    assert cache.get_seq_length() == 4
    with pytest.raises(ValueError):
        crop_cache(cache, -1)


def test_gemma3_sliding_window_past_window(tiny_gemma):
    """tiny-gemma3 has sliding-window layers with a small window: decode far past it, plain and
    speculative (rollbacks across the window edge), against HF."""
    model, _ = tiny_gemma
    window = model.config.sliding_window
    vocab = model.config.vocab_size
    p = _prompts(vocab)[2]
    n = 3 * window + 10
    ref = hf_greedy(model, p, n)
    assert generate(model, p, max_new_tokens=n, ignore_eos=True).tokens[0] == ref
    for d in (PromptLookupDrafter(4), RandomDrafter(vocab, 3, seed=2), OracleDrafter([ref], 5)):
        assert generate(model, p, drafter=d, max_new_tokens=n, ignore_eos=True).tokens[0] == ref


def test_stop_strings(tiny_llama):
    model, tok = tiny_llama
    p = _prompts(model.config.vocab_size)[1]
    full = generate(model, p, max_new_tokens=40, ignore_eos=True).tokens[0]
    text = tok.decode(full)
    stop = text[len(text) // 2: len(text) // 2 + 3]
    # The first token whose prefix text contains the stop string is the last one emitted.
    cut = next(i + 1 for i in range(len(full)) if stop in tok.decode(full[: i + 1]))
    for drafter in (None, PromptLookupDrafter(4), OracleDrafter([full], 4)):
        out = generate(model, p, drafter=drafter, max_new_tokens=40, ignore_eos=True, stop=[stop], tokenizer=tok)
        assert out.tokens[0] == full[:cut] and out.finish_reasons == ["stop"]
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, p, max_new_tokens=4, stop=["x"])


def test_drafter_receives_hidden_states_without_extra_target_pass(tiny_llama):
    """Feedback carries the requested hidden layers at the fed positions, equal to a fresh full
    forward over the committed sequence; the target runs exactly target_forwards times."""
    model, _ = tiny_llama
    p = _prompts(model.config.vocab_size)[2]
    seen = []

    class Recorder(PromptLookupDrafter):
        hidden_layers = (-1, 1)

        def observe(self, fb):
            seen.append(fb)

    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = generate(model, p, drafter=Recorder(3), max_new_tokens=20, ignore_eos=True)
    finally:
        hook.remove()
    assert len(calls) == out.stats.target_forwards == len(seen)
    # Rebuild the committed hidden states and compare with one full forward.
    hs = torch.cat([fb.hidden_states[-1][0][fb.valid[0]] for fb in seen], 0)
    seq = torch.tensor([p + out.tokens[0][:-1]])
    with torch.no_grad():
        full = model(seq, output_hidden_states=True).hidden_states[-1][0]
    torch.testing.assert_close(hs, full, rtol=1e-4, atol=1e-4)
    assert seen[0].is_prefill and seen[0].new_tokens[0] == out.tokens[0][:1]


def test_batched_speculative_on_sliding_window_model(tiny_gemma):
    """Gemma3-style sliding windows: a batch with a drafter decodes its rows one after another
    (holes in a shared cache would shift the window); outputs equal rows decoded alone."""
    from mtp.tree import DynamicTreeConfig

    model, _ = tiny_gemma
    vocab = model.config.vocab_size
    prompts = _prompts(vocab, lengths=(6, 11, 17), seed=5)
    n = 2 * model.config.sliding_window + 5
    refs = [generate(model, p, max_new_tokens=n, ignore_eos=True).tokens[0] for p in prompts]
    assert generate(model, prompts, max_new_tokens=n, ignore_eos=True).tokens == refs  # plain batches stay batched
    for d in (PromptLookupDrafter(4), PromptLookupDrafter(4, branches=2),
              DraftModelDrafter(perturbed_copy(model, 0.05), 3, tree=DynamicTreeConfig(8, 3, 3))):
        out = generate(model, prompts, drafter=d, max_new_tokens=n, ignore_eos=True)
        assert out.tokens == refs and len(out.row_stats) == 3


def test_lookup_first_uses_both_and_merges_with_a_tree_fallback(tiny_llama):
    """In one batch some rows copy from their context and others take the head's EAGLE-2 tree;
    greedy output still equals plain decoding, row by row."""
    from mtp.heads import build_head
    from mtp.tree import DynamicTreeConfig

    model, _ = tiny_llama
    vocab = model.config.vocab_size
    torch.manual_seed(0)
    head = build_head("eagle3", model, num_heads=3)
    prompts = _prompts(vocab, lengths=(12, 9, 17, 14), seed=5)
    refs = [generate(model, p, max_new_tokens=30, ignore_eos=True).tokens[0] for p in prompts]
    for fallback in (head.as_drafter(), head.as_drafter(tree=DynamicTreeConfig(total_tokens=8, depth=3, top_k=2))):
        for kind in (LookupFirstDrafter, LookupUnionDrafter):
            d = kind(fallback, lookup_tokens=5, min_ngram=1, max_ngram=2)
            out = generate(model, prompts, drafter=d, max_new_tokens=30, ignore_eos=True)
            assert out.tokens == refs, kind.__name__
            assert d.lookup_steps > 0 and d.fallback_steps > 0


@pytest.mark.parametrize("cost", ["flat", "moderate", "linear"])
def test_adaptive_union_in_a_batch_is_lossless(tiny_llama, cost):
    """The adaptive union switches per row and step between the union, lookup alone, the head alone
    and no draft; greedy output still equals plain decoding row by row, for a chain head, a tree
    head and a draft model's tree. Lookup's matches here are known: on a third of the steps the
    target's own continuation (agreeing far back), on a third a wrong chain, on the rest none. A flat
    verify cost favours the union, a cost linear in the tokens lookup's good chains and plain steps."""
    from mtp.drafters import AdaptiveUnionDrafter
    from mtp.heads import build_head
    from mtp.tree import DynamicTreeConfig

    model, _ = tiny_llama
    V = model.config.vocab_size
    torch.manual_seed(0)
    head = build_head("eagle3", model, num_heads=3)
    prompts = _prompts(V, lengths=(12, 9, 17, 14), seed=5)
    refs = [generate(model, p, max_new_tokens=30, ignore_eos=True).tokens[0] for p in prompts]

    class KnownLookup(AdaptiveUnionDrafter):
        def _match(self, seq, n):
            p, ref = next((p, r) for p, r in zip(prompts, refs) if seq[: len(p)] == p)
            cont = ref[len(seq) - len(p):][:n]
            kind = len(seq) % 3
            if kind == 0 or not cont:
                return [], 0
            return (cont, 12) if kind == 1 else ([(t + 1) % V for t in cont], 2)

    C = {"flat": lambda m: 1.0 + 0.01 * m, "moderate": lambda m: 1.0 + 0.2 * m, "linear": lambda m: float(m)}[cost]
    modes = dict.fromkeys(AdaptiveUnionDrafter.MODES, 0)
    for fallback in (head.as_drafter(), head.as_drafter(tree=DynamicTreeConfig(total_tokens=8, depth=3, top_k=2)),
                     DraftModelDrafter(perturbed_copy(model, 0.05), 3, tree=DynamicTreeConfig(8, 3, 3))):
        d = KnownLookup(fallback, C, lookup_tokens=5, chain_tokens=3 if getattr(fallback, "offers_chain", False) else 0)
        out = generate(model, prompts, drafter=d, max_new_tokens=30, ignore_eos=True)
        assert out.tokens == refs
        modes = {k: n + d.mode_steps.get(k, 0) for k, n in modes.items()}
    assert min(modes.values()) > 0, modes  # every choice occurs (per curve: 4-42 steps each)
    if cost == "linear":  # dear verifies: lookup's chains and plain steps more often than the union
        assert modes["lookup"] + modes["plain"] > modes["union"] + modes["heads"], modes


def test_adaptive_union_chooses_by_predicted_tokens_per_second():
    from mtp.drafters.adaptive import AdaptiveUnionDrafter, _chain_match, _Estimates, _tree_match
    from mtp.drafters.testing import RandomDrafter

    C = lambda m: 0.050 + 0.0025 * m  # seconds: 52.5 ms for one token, 117.5 ms for 27
    d = AdaptiveUnionDrafter(RandomDrafter(10, 3), C)
    d.draft_s = 0.005
    assert d.choose(_Estimates(lookup=8, union=8), 10) == "union"  # the head not seen yet
    d.heads, d.nodes = 1.0, 16
    assert d.choose(_Estimates(), 10) == "union"  # this bucket not seen yet
    assert d.choose(_Estimates(lookup=9, union=9), 0) == "heads"  # no lookup match
    assert d.choose(_Estimates(lookup=8, union=8), 10) == "lookup"  # 9 / 77.5 ms against 9 / 122.5 ms
    assert d.choose(_Estimates(lookup=2.0, union=3.2), 10) == "lookup"  # 3 / 77.5 > 4.2 / 122.5
    assert d.choose(_Estimates(lookup=2.0, union=4.0), 10) == "union"  # 5 / 122.5
    d.heads = 1.5
    assert d.choose(_Estimates(lookup=0.3, union=1.6), 10) == "heads"  # 2.5 / 97.5
    # a bucket that stopped verifying the union verifies it again after `explore` steps
    assert d.choose(_Estimates(lookup=8, union=8, since_union=d.explore), 10) == "union"
    # a head whose draft commits less per second than a one-token step: plain steps (19.0 / s)
    d.heads = 0.2
    assert d.choose(_Estimates(), 0) == "plain"  # 1.2 / 97.5 ms = 12.3 / s
    assert d.choose(_Estimates(lookup=0.0, union=0.3), 10) == "plain"  # lookup 12.9 / s, the union 10.6 / s
    assert d.choose(_Estimates(lookup=0.5, union=0.6), 10) == "lookup"  # 1.5 / 77.5 ms = 19.4 / s
    d.since_heads = d.explore  # ... until `explore` plain steps in a row: the head drafts again
    assert d.choose(_Estimates(), 0) == "heads" and d.choose(_Estimates(lookup=0.0, union=0.3), 10) == "union"
    # what a proposal got accepted: its drafts that agree with the committed tokens
    assert _chain_match((4, 5, 6), [4, 9]) == 1 and _chain_match((4, 5), [4, 5, 7]) == 2
    tokens, parents = [4, 7, 5, 8], [-1, -1, 0, 2]
    assert _tree_match(tokens, parents, [7, 1]) == 1 and _tree_match(tokens, parents, [4, 5, 8, 2]) == 3
    assert d._update(None, 2) == 2 and d._update(2.0, 0) == pytest.approx(1.6)


def test_adaptive_union_chooses_the_heads_chain_where_it_beats_the_tree():
    """A head that drafts trees also offers its greedy chain: fewer nodes to verify and draft. It is
    chosen where its predicted rate is highest, tried before the first plain step, and tried again
    after `explore` steps without it; a fallback with no chain has no such choice."""
    from mtp.drafters.adaptive import AdaptiveUnionDrafter, _Estimates
    from mtp.drafters.testing import RandomDrafter

    class TreeHead(RandomDrafter):  # stands in for a HeadDrafter with a tree
        offers_chain = True

        def propose_chain(self, ctx, sampled=False):
            return self.propose(ctx)

    C = lambda m: 0.050 + 0.0025 * m  # seconds
    d = AdaptiveUnionDrafter(TreeHead(10, 3), C, chain_tokens=3)
    assert d.modes == ("union", "lookup", "heads", "chain", "plain")
    d.heads, d.nodes, d.draft_s = 0.6, 16, 0.005  # the tree: 1.6 / 97.5 ms = 16.4 / s; plain 19.0 / s
    assert d.choose(_Estimates(), 0) == "chain"  # not seen yet
    d.chain, d.chain_s = 0.5, 0.002  # 1.5 / 62 ms = 24.2 / s
    assert d.choose(_Estimates(), 0) == "chain"
    assert d.choose(_Estimates(lookup=0.5, union=0.6), 10) == "chain"  # lookup alone: 1.5 / 77.5 ms
    assert d.choose(_Estimates(lookup=8, union=8), 10) == "lookup"
    d.heads = 2.0  # 3 / 97.5 ms = 30.8 / s
    assert d.choose(_Estimates(), 0) == "heads"
    d.heads, d.chain = 0.6, 0.05  # 1.05 / 62 ms = 16.9 / s: plain steps ...
    assert d.choose(_Estimates(), 0) == "plain"
    d.since_chain = d.explore  # ... until `explore` steps without the chain
    assert d.choose(_Estimates(), 0) == "chain"
    assert AdaptiveUnionDrafter(TreeHead(10, 3), C).modes == ("union", "lookup", "heads", "plain")  # off by default
    assert AdaptiveUnionDrafter(RandomDrafter(10, 3), C).modes == ("union", "lookup", "heads", "plain")
    with pytest.raises(ValueError, match="offers_chain"):
        AdaptiveUnionDrafter(RandomDrafter(10, 3), C, chain_tokens=2)


def test_adaptive_union_learns_only_from_verified_proposals():
    """Lookup verified alone moves its bucket's lookup estimate, not the head's, and counts toward
    the bucket's next exploring union; a union step updates lookup, head and union."""
    from mtp.drafters import AdaptiveUnionDrafter
    from mtp.drafters.base import DraftContext, TargetFeedback
    from mtp.drafters.adaptive import AGREEMENT_BUCKETS
    from mtp.drafters.testing import RandomDrafter
    from mtp.sampling import SamplingConfig

    d = AdaptiveUnionDrafter(RandomDrafter(100, 3, seed=0), lambda m: float(m))
    seq = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3]  # "1 2 3" matched, agreeing 3 tokens back: chain 4 5 6 7 ...
    d.reset([seq])
    ctx = DraftContext([seq], 4, SamplingConfig(), None, [True], torch.device("cpu"))

    def feedback(new, accepted):
        return TargetFeedback(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool), {}, None,
                              [new], torch.tensor([accepted]), False)

    draft = d.propose(ctx)  # nothing known: the union
    assert d.mode_steps["union"] == 1 and d._rows[0].chain == (4, 5, 6, 7) and draft.parents is not None
    est = d.buckets[d._rows[0].bucket]
    assert d._rows[0].bucket == sum(3 >= b for b in AGREEMENT_BUCKETS)
    d.observe(feedback([4, 5, 6, 7, 8], 4))
    assert est.lookup == 4 and est.union == 4 and d.heads is not None and d.nodes == 3
    heads = d.heads
    d.verify_cost = lambda m: 1.0 + 100.0 * (m > 5)  # the union and the head's 3 + lookup's 4 nodes: dear
    d.propose(ctx)
    assert d.mode_steps["lookup"] == 1 and est.since_union == 1
    d.observe(feedback([4, 5, 9], 2))
    assert est.lookup == pytest.approx(3.6) and est.union == 4 and d.heads == heads


def test_adaptive_union_averages_the_heads_estimate_with_its_own_weight():
    """head_smoothing: the head's estimate moves by its own weight, lookup's and the union's by
    `smoothing`; a weight outside (0, 1] is refused."""
    from mtp.drafters import AdaptiveUnionDrafter
    from mtp.drafters.base import DraftContext, TargetFeedback
    from mtp.drafters.testing import RandomDrafter
    from mtp.sampling import SamplingConfig

    d = AdaptiveUnionDrafter(RandomDrafter(100, 3, seed=0), lambda m: float(m), head_smoothing=0.05)
    seq = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3]
    d.reset([seq])
    ctx = DraftContext([seq], 4, SamplingConfig(), None, [True], torch.device("cpu"))
    fb = lambda new, acc: TargetFeedback(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool),  # noqa: E731
                                         {}, None, [new], torch.tensor([acc]), False)
    d.propose(ctx)
    d.observe(fb([4, 5, 6, 7, 8], 4))
    est, tree = d.buckets[d._rows[0].bucket], d._rows[0].tree
    h0 = d.heads
    est.since_union = d.explore  # the union again: lookup's chain and the head's draft both verified
    d.propose(ctx)
    assert d._rows[0].mode == "union" and tree is not None and d._rows[0].tree is not None
    toks, parents = d._rows[0].tree
    x = next(t for t, p in zip(toks, parents) if p == -1 and t != 4)  # a head's first draft, not lookup's
    d.observe(fb([x, 9], 1))  # lookup's estimate falls by 0.2 of the gap, the head's moves by 0.05 of it
    assert est.lookup == pytest.approx(4 - 0.2 * 4) and est.union == pytest.approx(4 - 0.2 * 3)
    assert d.heads == pytest.approx(h0 + 0.05 * (1 - h0))
    assert d.for_row(0).head_smoothing == 0.05
    with pytest.raises(ValueError, match="head_smoothing"):
        AdaptiveUnionDrafter(RandomDrafter(10, 3), lambda m: float(m), head_smoothing=0.0)


def test_adaptive_union_sets_each_buckets_lookup_length_from_its_acceptance():
    """A bucket whose chains are accepted whole grows its chain toward lookup_tokens; one whose chains
    are rejected at the first draft keeps one; a chain accepted whole (or cut by the output's end)
    says nothing about the draft after it. Without adaptive_length (the default) every chain has
    lookup_tokens."""
    from mtp.drafters import AdaptiveUnionDrafter
    from mtp.drafters.base import DraftContext, TargetFeedback
    from mtp.drafters.adaptive import LookupSurvival
    from mtp.drafters.testing import RandomDrafter
    from mtp.sampling import SamplingConfig

    s = LookupSurvival(4)
    s.observe(3, 3, censored=True)  # accepted whole
    s.observe(4, 1, censored=False)  # the second draft rejected
    s.observe(4, 2, censored=True)  # the output ended after two
    k0, r0 = LookupSurvival.PRIOR
    assert s.kept[1:] == [k0 + 3, k0 + 2, k0 + 1, k0] and s.risk[1:] == [r0 + 3, r0 + 3, r0 + 1, r0]
    cheap = lambda m: 1.0 + 0.01 * m  # noqa: E731  a verify costs little more per token
    assert LookupSurvival(8).best_length([cheap(1 + k) for k in range(9)]) == 8  # the prior: try long chains
    assert LookupSurvival(8).best_length([float(1 + k) for k in range(9)]) == 1  # each token a whole step: one

    passage = list(range(10, 60))
    seq = passage + [1] + passage[:20]  # a copied passage: matches agree 20 back, chains of 30 continue it
    ctx = DraftContext([seq], 40, SamplingConfig(), None, [True], torch.device("cpu"))

    def step(d, accept):
        d.propose(ctx)
        chain = d._rows[0].chain
        got = list(chain[:accept]) + [0]
        d.observe(TargetFeedback(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool), {}, None,
                                 [got], torch.tensor([len(got) - 1]), False))
        return len(chain)

    whole = AdaptiveUnionDrafter(RandomDrafter(100, 3, seed=0), cheap, lookup_tokens=30, adaptive_length=True)
    whole.reset([seq])
    lengths = [step(whole, 30) for _ in range(40)]
    assert lengths[0] < 30 and lengths[-1] == 30 and lengths == sorted(lengths)
    first = LookupSurvival(30)
    costs = [1.0 + 0.2 * (1 + k) for k in range(31)]
    assert first.best_length(costs) > 1
    for _ in range(10):  # chains rejected at their first draft
        first.observe(30, 0, censored=False)
    assert first.best_length(costs) == 1
    fixed = AdaptiveUnionDrafter(RandomDrafter(100, 3, seed=0), cheap, lookup_tokens=30)
    fixed.reset([seq])
    assert [step(fixed, 30) for _ in range(3)] == [30] * 3


def test_lookup_match_is_lookups_chain_with_its_agreement():
    from mtp.drafters.ngram import lookup_continuation, lookup_match

    g = torch.Generator().manual_seed(0)
    for _ in range(200):  # the same chain as prompt lookup, on sequences with repeats
        seq = torch.randint(0, 5, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g).tolist()
        chain, agree = lookup_match(seq, 3, 6, 2)
        assert chain == lookup_continuation(seq, 3, 6, 2)
        assert (agree == 0) == (not chain)
    passage = [11, 12, 13, 14, 15, 16, 17, 18]
    assert lookup_match([1] + passage + [2, 3] + passage[:6], 3, 4, 2) == ([17, 18, 2, 3], 6)  # copying 6 back
    assert lookup_match([5, 7, 8, 9, 6, 7, 8], 3, 2, 2) == ([9, 6], 2)  # a chance 2-gram
    assert lookup_match([5, 7, 8, 9], 3, 2, 2) == ([], 0)
    assert lookup_match(passage * 6, 3, 2, 2)[1] == 8  # the earliest match: back to the sequence's start
    assert lookup_match(passage * 6, 3, 2, 2, max_agree=5)[1] == 5


def test_lookup_match_can_prefer_the_occurrence_agreeing_furthest_back():
    """prefer="agreement": of the largest n-gram's occurrences, the one whose context agrees with the
    sequence's furthest back (the latest of those), never a smaller n; "first" stays lookup's."""
    from mtp.drafters.ngram import _ngram_hits, lookup_match

    # "7 8 9" occurs twice: first after 1 (agreeing 3 back), then after 4 5 6 (agreeing 6 back)
    seq = [1, 7, 8, 9, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 4, 5, 6, 7, 8, 9]
    assert lookup_match(seq, 3, 3, 1) == ([2, 3, 4], 3)
    assert lookup_match(seq, 3, 3, 1, prefer="agreement") == ([10, 11, 0], 6)
    seq = [1, 7, 8, 9, 2, 1, 7, 8, 9, 3, 0, 7, 8, 9]  # both agree 3 back: the latest
    assert lookup_match(seq, 3, 3, 1) == ([2, 1, 7], 3)
    assert lookup_match(seq, 3, 3, 1, prefer="agreement") == ([3, 0, 7], 3)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        seq = torch.randint(0, 4, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g).tolist()
        first, a_first = lookup_match(seq, 3, 5, 1)
        best, a_best = lookup_match(seq, 3, 5, 1, prefer="agreement")
        assert (not first) == (not best) and a_best >= a_first
        if best:  # the continuation of an occurrence of the same (largest) n-gram
            n = next(_ngram_hits(seq, 3, 1))[0]
            assert any(seq[i + n: i + n + 5] == best for m, i in _ngram_hits(seq, 3, 1) if m == n)
            assert min(a_first, a_best) >= n
    with pytest.raises(ValueError, match="prefer"):
        lookup_match(seq, 3, 5, 1, prefer="longest")


def test_adaptive_union_looks_up_lone_tokens_in_a_bucket_of_their_own():
    """By default a step where only the last token occurred before gets lookup's chain, in bucket 0
    (agreement 1); a 2-gram's match is in the next bucket; min_ngram=2 (round 14) had no chain there."""
    from mtp.drafters import AdaptiveUnionDrafter
    from mtp.drafters.base import DraftContext
    from mtp.drafters.testing import RandomDrafter
    from mtp.sampling import SamplingConfig

    for seq, bucket in (([5, 6, 7, 8, 6], 0), ([5, 6, 7, 8, 5, 6], 1)):
        for d, chain in ((AdaptiveUnionDrafter(RandomDrafter(100, 3, seed=0), lambda m: float(m)), True),
                         (AdaptiveUnionDrafter(RandomDrafter(100, 3, seed=0), lambda m: float(m), min_ngram=2),
                          bucket > 0)):
            d.reset([seq])
            d.propose(DraftContext([seq], 4, SamplingConfig(), None, [True], torch.device("cpu")))
            assert bool(d._rows[0].chain) == chain
            if d.min_ngram == 1:
                assert d._rows[0].bucket == bucket and d._rows[0].chain == tuple(seq[seq.index(seq[-1]) + 1:][:4])
    with pytest.raises(ValueError, match="prefer"):
        AdaptiveUnionDrafter(RandomDrafter(100, 3), lambda m: float(m), prefer="last")


def test_union_grafts_lookup_into_the_fallback_draft():
    """Deterministic drafts merge as a trie (shared prefix, distinct siblings); sampled chains get the
    lookup chain as a separate root branch with a point-mass q, after the sampled child."""
    from mtp.drafters.base import Draft
    from mtp.drafters.combined import graft
    from mtp.tree import node_depths

    chain = Draft(torch.tensor([[7, 8, 9], [4, 5, 6]]), torch.tensor([3, 3]))
    d = graft([[7, 8, 1, 2], []], chain, "cpu")
    assert d.tokens[0].tolist() == [7, 8, 9, 1, 2] and d.parents[0].tolist() == [-1, 0, 1, 1, 3]
    assert d.lengths.tolist() == [5, 3] and d.parents[1, :3].tolist() == [-1, 0, 1]  # a row without lookup: its path
    tree = Draft(torch.tensor([[7, 3, 8]]), torch.tensor([3]), None, torch.tensor([[-1, -1, 0]]))
    d = graft([[3, 4]], tree, "cpu")
    assert d.tokens[0].tolist() == [7, 3, 8, 4] and d.parents[0].tolist() == [-1, -1, 0, 1]
    assert int(node_depths(d.parents).max()) == 2
    q = torch.softmax(torch.randn(1, 2, 10), -1)
    d = graft([[7, 2]], Draft(torch.tensor([[7, 8]]), torch.tensor([2]), q), "cpu")
    assert d.tokens[0].tolist() == [7, 8, 7, 2] and d.parents[0].tolist() == [-1, 0, -1, 2]
    assert torch.equal(d.probs[0, :2], q[0])
    assert d.probs[0, 2, 7] == 1 and d.probs[0, 3, 2] == 1 and torch.allclose(d.probs[0, 2:].sum(-1), torch.ones(2))


def test_draft_time_counts_observe_after_prefill(tiny_llama):
    """draft_time_s is the drafter's whole cost per decode step: a head whose work happens when it
    observes the verified tokens (DeepSeek MTP feeds its modules there) is charged for it; the
    prompt's observe (prefill) is not."""
    import time

    model, _ = tiny_llama
    p = _prompts(model.config.vocab_size)[2]
    calls = {"decode": 0}

    class SlowObserver(PromptLookupDrafter):
        def observe(self, fb):
            if not fb.is_prefill:
                calls["decode"] += 1
                time.sleep(0.02)
            else:
                time.sleep(0.5)

    out = generate(model, p, drafter=SlowObserver(3), max_new_tokens=12, ignore_eos=True)
    n = calls["decode"]
    assert n == out.stats.target_forwards - 1 > 0
    # at least the observes' sleeps, and not the prefill's 0.5 s
    assert 0.02 * n <= out.stats.draft_time_s < 0.02 * n + 0.45
