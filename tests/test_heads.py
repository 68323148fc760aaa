"""MTP head families: shapes, no accidental weight sharing, learning, checkpoints, and drafting
through the engine (greedy output identical to plain decoding; proper q at T>0).

Learnable task: the tiny Llama's own greedy continuations of 4 random prompts (teacher-forced,
as self-distillation data would be). Each family (3 heads) trains 40 Adam steps on it; stated
thresholds: the loss falls to under half its initial value and every head's top-1 accuracy is
>= 0.9 on positions past the prompt (chance is about 1/128; all families reach 0.99-1.0).
"""
import json
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import perturbed_copy
from mtp.drafters.base import Drafter
from mtp.engine import generate
from mtp.heads import (HEAD_FAMILIES, HeadCheckpointError, build_head, list_families, load_heads)

FAMILIES = list_families()
K = 3
PROMPT_LEN = 6
STEPS = 40
LR = {"medusa": 1e-2, "hydra": 1e-2}  # zero-initialised residual MLPs learn faster at a higher rate
MIN_ACC = 0.9


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: intra-op threads only add synchronisation (10x slower on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _prompts(lengths, seed=0, vocab=128):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


@pytest.fixture(scope="module")
def data(tiny_llama):
    model, _ = tiny_llama
    prompts = _prompts([PROMPT_LEN] * 4, seed=0)
    cont = generate(model, prompts, max_new_tokens=24, ignore_eos=True).tokens
    ids = torch.tensor([p + c for p, c in zip(prompts, cont)])
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
    return ids, hs


def _loss_acc(head, ids, hs):
    out = head.forward_train({i: hs[i] for i in head.config.hidden_layers}, ids, torch.ones_like(ids))
    T = ids.shape[1]
    losses, accs = [], []
    for j, lg in enumerate(out.logits):
        lg, tgt = lg[:, PROMPT_LEN - 2: T - 2 - j], ids[:, PROMPT_LEN + j:]  # logits[j][:, t] ~ ids[:, t+2+j]
        losses.append(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tgt.reshape(-1)))
        accs.append((lg.argmax(-1) == tgt).float().mean().item())
    return torch.stack(losses).sum() + sum(out.aux_losses.values()), accs


@pytest.fixture(scope="module")
def trained(tiny_llama, data):
    """family -> (head, initial loss, final loss, final per-head accuracies)."""
    model, _ = tiny_llama
    ids, hs = data
    result = {}
    for fam in FAMILIES:
        result[fam] = _train(fam, model, ids, hs, K)
    return result


def _train(family, model, ids, hs, num_heads):
    """A fresh head fitted to (ids, hs) for STEPS steps: (head in eval mode, initial loss, final
    loss, final per-head accuracies)."""
    torch.manual_seed(0)
    head = build_head(family, model, num_heads=num_heads)
    opt = torch.optim.Adam(head.parameters(), lr=LR.get(family, 3e-3))
    with torch.no_grad():
        l0, _ = _loss_acc(head, ids, hs)
    for _ in range(STEPS):
        loss, _ = _loss_acc(head, ids, hs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        l1, accs = _loss_acc(head, ids, hs)
    return head, l0.item(), l1.item(), accs


# ---- construction ---------------------------------------------------------------------------

def test_registry_and_bad_configs(tiny_llama):
    model, _ = tiny_llama
    # the documented families are registered (a new one is tested by every parametrized test here)
    assert set(FAMILIES) >= {"medusa", "parallel", "hydra", "deepseek", "eagle", "eagle3"}
    assert all(HEAD_FAMILIES[f].family == f for f in FAMILIES)
    with pytest.raises(ValueError, match="unknown head family"):
        build_head("nope", model)
    with pytest.raises(ValueError, match="unknown MedusaConfig fields"):
        build_head("medusa", model, num_head=3)
    with pytest.raises(ValueError, match="out of range"):
        build_head("parallel", model, hidden_layers=(7,))
    with pytest.raises(ValueError, match="does not fit"):
        build_head("medusa", model, hidden_size=32)
    head = build_head("eagle3", model)
    assert head.config.hidden_layers == (1, 2)  # (2, L//2, L-1) for L=2, deduplicated
    assert head.config.base_model == "tiny-llama" and len(head.config.base_fingerprint) == 16


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_and_padding(tiny_llama, family):
    model, _ = tiny_llama
    head = build_head(family, model, num_heads=K)
    B, T, V = 2, 10, model.config.vocab_size
    ids = torch.randint(3, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0  # right padding
    with torch.no_grad():
        hs = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        out = head.forward_train({i: hs[i] for i in head.config.hidden_layers}, ids, mask)
    assert len(out.logits) == K
    for lg in out.logits:
        assert lg.shape == (B, T, V) and torch.isfinite(lg).all()
    for v in out.aux_losses.values():
        assert v.dim() == 0 and torch.isfinite(v)
    assert len(head.loss_weights()) == K


@pytest.mark.parametrize("family", FAMILIES)
def test_no_parameters_shared_by_accident(tiny_llama, family):
    model, _ = tiny_llama
    head = build_head(family, model, num_heads=K, **({"own_lm_head": True} if family == "medusa" else {}))
    params = [p for _, p in head.named_parameters(remove_duplicate=False)]
    assert len({id(p) for p in params}) == len(params), "a module is registered twice"
    assert len({p.data_ptr() for p in params}) == len(params), "two parameters share storage"
    target_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not target_ptrs & {p.data_ptr() for p in params}, "a target parameter is inside the head"
    # Per-head submodules (ModuleLists of length K) hold distinct tensors.
    for name, mod in head.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == K and len(list(mod[0].parameters())):
            ptrs = [{p.data_ptr() for p in m.parameters()} for m in mod]
            assert all(not (ptrs[a] & ptrs[b]) for a in range(K) for b in range(a + 1, K)), name


# ---- learning -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_loss_falls_and_heads_learn(trained, family):
    _, l0, l1, accs = trained[family]
    assert l1 < 0.5 * l0, f"{family}: loss {l0:.3f} -> {l1:.3f}"
    assert min(accs) >= MIN_ACC, f"{family}: per-head top-1 {accs}"


# ---- checkpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_roundtrip_exact(tiny_llama, tiny_gemma, trained, data, family, tmp_path):
    model, _ = tiny_llama
    head = trained[family][0]
    ids, hs = data
    d = tmp_path / "heads"
    head.save_pretrained(d)
    assert sorted(os.listdir(d)) == ["config.json", "model.safetensors"]
    assert os.listdir(tmp_path) == ["heads"], "temp folders left behind"
    meta = json.loads((d / "config.json").read_text())
    assert meta["family"] == family and meta["base_model"] == "tiny-llama"
    assert meta["hidden_size"] == 64 and meta["vocab_size"] == 128 and meta["mtp_version"]
    loaded = load_heads(d, model)
    assert type(loaded) is HEAD_FAMILIES[family]
    sd_a, sd_b = head.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    h = {i: hs[i] for i in head.config.hidden_layers}
    with torch.no_grad():
        a, b = head.forward_train(h, ids).logits, loaded.forward_train(h, ids).logits
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # Another base model: a clear error naming the model the heads were trained for.
    with pytest.raises(HeadCheckpointError, match="trained for tiny-llama"):
        load_heads(d, tiny_gemma[0])
    head.save_pretrained(d)  # overwriting a checkpoint is fine (and atomic)
    assert os.listdir(tmp_path) == ["heads"]


def test_checkpoint_errors(tiny_llama, trained, tmp_path):
    model, _ = tiny_llama
    head = trained["medusa"][0]
    d = tmp_path / "heads"
    head.save_pretrained(d)
    other = perturbed_copy(model, 0.01)  # same shapes, other weights
    with pytest.raises(HeadCheckpointError, match="fingerprint"):
        load_heads(d, other)
    load_heads(d, other, strict=False)  # explicitly allowed
    with pytest.raises(HeadCheckpointError, match="not a heads checkpoint"):
        load_heads(tmp_path, model)
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["bogus"] = 1
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(HeadCheckpointError, match="bogus"):
        load_heads(d, model)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("x")
    with pytest.raises(HeadCheckpointError, match="refusing to overwrite"):
        head.save_pretrained(plain)


# ---- drafting through the engine ------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_engine_greedy_equals_plain(tiny_llama, trained, family):
    model, _ = tiny_llama
    head = trained[family][0]
    train_prompts = _prompts([PROMPT_LEN] * 4, seed=0)
    prompts = [train_prompts[0][:4], train_prompts[1], _prompts([11], seed=5)[0]]  # lengths 4, 6, 11
    refs = generate(model, prompts, max_new_tokens=16, ignore_eos=True).tokens
    for k in (1, 3):
        out = generate(model, prompts, drafter=head.as_drafter(), num_draft_tokens=k, max_new_tokens=16,
                       ignore_eos=True)
        assert out.tokens == refs, f"{family} k={k} batched"
        assert out.stats.accepted > 0, f"{family} k={k}: a trained head should get some drafts accepted"
        one = generate(model, prompts[2], drafter=head.as_drafter(), num_draft_tokens=k, max_new_tokens=16,
                       ignore_eos=True)
        assert one.tokens[0] == refs[2]


class _Recorder(Drafter):
    """Wraps a drafter and keeps every Draft it proposes."""

    def __init__(self, inner):
        self.inner, self.drafts = inner, []
        self.num_draft_tokens, self.hidden_layers = inner.num_draft_tokens, inner.hidden_layers

    def reset(self, prompts):
        self.inner.reset(prompts)

    def observe(self, feedback):
        self.inner.observe(feedback)

    def propose(self, ctx):
        d = self.inner.propose(ctx)
        self.drafts.append(d)
        return d


@pytest.mark.parametrize("family", FAMILIES)
def test_sampled_drafts_report_their_distribution(tiny_llama, trained, family):
    model, _ = tiny_llama
    rec = _Recorder(trained[family][0].as_drafter())
    generate(model, _prompts([5, 8]), drafter=rec, num_draft_tokens=3, max_new_tokens=10, temperature=0.9,
             top_k=40, top_p=0.95, seed=0, ignore_eos=True)
    assert rec.drafts
    for d in rec.drafts:
        assert d.probs is not None and d.probs.shape == (*d.tokens.shape, model.config.vocab_size)
        assert torch.allclose(d.probs.sum(-1), torch.ones(d.tokens.shape), atol=1e-5)
        assert (d.probs.gather(-1, d.tokens[..., None]) > 0).all(), "drew a token of probability 0"
        assert ((d.probs > 0).sum(-1) <= 40).all(), "top-k was not applied to q"


@pytest.mark.parametrize("fam,args", [(f, {}) for f in FAMILIES] + [("medusa", {"own_lm_head": True})],
                         ids=FAMILIES + ["medusa-own-lm-head"])
def test_reduced_vocabulary(tiny_llama, data, tmp_path, fam, args):
    """A reduced draft vocabulary (EAGLE-3, FR-Spec) in every family: the 32 most frequent tokens.
    Training logits are the full-vocabulary head's columns for them (same initial weights); greedy
    chains and trees equal plain decoding; sampled drafts and q never leave the draft vocabulary;
    the vocabulary survives a save and load."""
    from mtp.tree import DynamicTreeConfig, StaticTree

    model, _ = tiny_llama
    ids, hs = data
    counts = torch.bincount(ids.flatten(), minlength=128)
    torch.manual_seed(0)
    full = build_head(fam, model, num_heads=2, **args)
    torch.manual_seed(0)
    head = build_head(fam, model, num_heads=2, draft_vocab_size=32, token_counts=counts, **args)
    assert torch.equal(head.d2t, counts.topk(32).indices.sort().values) and head.t2d.sum() == 32 and head.t2d[head.d2t].all()
    h = {i: hs[i] for i in head.config.hidden_layers}
    with torch.no_grad():
        res, ref_res = head.forward_train(h, ids), full.forward_train(h, ids)
    assert torch.equal(res.vocab, head.d2t) and ref_res.vocab is None
    for z, zf in zip(res.logits, ref_res.logits):
        assert z.shape[-1] == 32 and torch.allclose(z, zf[..., head.d2t], atol=1e-5)
    p = _prompts([7])[0]
    ref = generate(model, p, max_new_tokens=10, ignore_eos=True).tokens
    for tree in (None, StaticTree([(0,), (1,), (0, 0), (0, 1), (1, 0)]), DynamicTreeConfig(6, 2, 2)):
        rec = _Recorder(head.as_drafter(tree=tree))
        assert generate(model, p, drafter=rec, num_draft_tokens=2, max_new_tokens=10, ignore_eos=True).tokens == ref, tree
        if tree is not None:
            assert all(head.t2d[d.tokens[0, : int(d.lengths[0])]].all() for d in rec.drafts)
    rec = _Recorder(head.as_drafter())
    generate(model, p, drafter=rec, num_draft_tokens=2, max_new_tokens=10, temperature=1.0, seed=0, ignore_eos=True)
    assert rec.drafts
    for d in rec.drafts:
        assert (d.probs[..., ~head.t2d] == 0).all() and head.t2d[d.tokens].all()
    head.save_pretrained(tmp_path / "h")
    loaded = load_heads(tmp_path / "h", model)
    assert torch.equal(loaded.d2t, head.d2t) and torch.equal(loaded.t2d, head.t2d)
    with torch.no_grad():
        assert torch.equal(loaded.forward_train(h, ids).logits[1], res.logits[1])


def test_deepseek_feeds_only_the_modules_in_use(tiny_llama):
    """DeepSeek MTP feeds module 0 at each step and every other module its new committed positions
    in the forward that drafts with it (modules a shorter chain did not use fall behind and catch
    up there): the drafts equal those of a head that feeds every module at every step, for chain
    lengths that change from step to step, in a batch of rows of different lengths."""
    import dataclasses

    model, _ = tiny_llama
    torch.manual_seed(0)
    head = build_head("deepseek", model, num_heads=4)
    lengths = iter([1, 1, 2, 1, 4, 3, 1, 2] * 10)

    class Varying(_Recorder):
        def propose(self, ctx):
            return super().propose(dataclasses.replace(ctx, max_tokens=min(ctx.max_tokens, next(lengths))))

    prompts = _prompts([7, 12], seed=5)
    ref = generate(model, prompts, max_new_tokens=16, ignore_eos=True).tokens
    runs = []
    for feed_all in (True, False):
        head.feed_all_modules = feed_all
        lengths = iter([1, 1, 2, 1, 4, 3, 1, 2] * 10)
        rec = Varying(head.as_drafter())
        assert generate(model, prompts, drafter=rec, num_draft_tokens=4, max_new_tokens=16, ignore_eos=True).tokens == ref
        runs.append([(d.tokens.tolist(), d.lengths.tolist()) for d in rec.drafts])
    head.feed_all_modules = False
    assert runs[0] == runs[1] and len(runs[0]) > 4


def test_deepseek_trees_feed_committed_positions_with_the_tree(tiny_llama):
    """Once it drafts trees, DeepSeek MTP feeds modules 1.. their new committed positions in the
    same forward as their first tree slots: trees (dynamic and static), interleaved with chains and
    with steps that draft nothing, equal those of a head that feeds every module at every step,
    and decoding equals plain greedy."""
    import dataclasses

    from mtp.tree import DynamicTreeConfig, StaticTree

    model, _ = tiny_llama
    torch.manual_seed(0)
    head = build_head("deepseek", model, num_heads=4)
    prompt = _prompts([11], seed=6)[0]
    ref = generate(model, prompt, max_new_tokens=20, ignore_eos=True).tokens

    class Mixed(_Recorder):
        """Step i drafts the tree, the head's chain of 2, or nothing, by a fixed pattern."""

        def __init__(self, inner):
            super().__init__(inner)
            self.i = 0

        def propose(self, ctx):
            self.i += 1
            if self.i % 5 == 3:
                ctx = dataclasses.replace(ctx, max_tokens=0)
            elif self.i % 5 == 4:
                d = self.inner.propose_chain(dataclasses.replace(ctx, max_tokens=2))
                self.drafts.append(d)
                return d
            return super().propose(ctx)

    for tree in (DynamicTreeConfig(10, 3, 3), StaticTree([(0,), (1,), (0, 0), (0, 1), (0, 0, 0), (0, 0, 0, 0)])):
        runs = []
        for feed_all in (True, False):
            head.feed_all_modules = feed_all
            rec = Mixed(head.as_drafter(tree=tree))
            out = generate(model, prompt, drafter=rec, num_draft_tokens=4, max_new_tokens=20, ignore_eos=True)
            assert out.tokens == ref, (type(tree).__name__, feed_all)
            runs.append([(d.tokens.tolist(), d.lengths.tolist(), None if d.parents is None else d.parents.tolist())
                         for d in rec.drafts])
        head.feed_all_modules = False
        assert runs[0] == runs[1] and len(runs[0]) > 4


@pytest.mark.parametrize("family", FAMILIES)
def test_gemma3_smoke(tiny_gemma, family, tmp_path):
    """Every family builds, trains a step, round-trips and drafts losslessly on Gemma3."""
    model, _ = tiny_gemma
    head = build_head(family, model, num_heads=2)
    ids = torch.tensor([_prompts([12], seed=3)[0]])
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
    h = {i: hs[i] for i in head.config.hidden_layers}
    out = head.forward_train(h, ids)
    assert [tuple(x.shape) for x in out.logits] == [(1, 12, 128)] * 2
    (sum(x.logsumexp(-1).mean() for x in out.logits) + sum(out.aux_losses.values())).backward()
    head.eval()
    head.save_pretrained(tmp_path / "h")
    with torch.no_grad():
        assert torch.equal(load_heads(tmp_path / "h", model).forward_train(h, ids).logits[1], head.forward_train(h, ids).logits[1])
    p = _prompts([9], seed=4)[0]
    ref = generate(model, p, max_new_tokens=12, ignore_eos=True).tokens
    assert generate(model, p, drafter=head.as_drafter(), num_draft_tokens=2, max_new_tokens=12,
                    ignore_eos=True).tokens == ref


#: other decoder architectures a researcher may bring (tiny random models built from their transformers
#: configs, nothing downloaded); Phi keeps its final norm as .final_layernorm, a LayerNorm; GPT-NeoX
#: (Pythia) keeps its decoder as .gpt_neox, rotates a quarter of each head, and takes its cache as layer_past
OTHER_ARCHS = {"qwen3": dict(head_dim=16), "mistral": {}, "phi": {}, "phi3": dict(pad_token_id=0), "olmo2": {},
               "gpt_neox": {},
               "gemma2": dict(head_dim=16), "qwen3_moe": dict(head_dim=16, num_experts=4, num_experts_per_tok=2,
                                                            moe_intermediate_size=32)}


def _tiny_decoder(arch: str, **config):
    """A seeded random 2-layer model of a transformers architecture (config: its extra fields), its
    weight matrices scaled up for sharper logits, so greedy ties cannot hide a wrong draft."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(arch, vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=128, **config)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() > 1:
                w.mul_(4.0)
    return model


@pytest.mark.parametrize("arch", sorted(OTHER_ARCHS))
def test_every_family_on_other_decoders(arch):
    """On other transformers decoders, each family builds, trains a step, and its drafts (chain and
    tree) leave greedy output equal to plain decoding."""
    from mtp.tree import DynamicTreeConfig

    kv = {} if arch in ("phi", "gpt_neox") else dict(num_key_value_heads=2)
    model = _tiny_decoder(arch, max_position_embeddings=256, **kv, **OTHER_ARCHS[arch])
    p = _prompts([10], seed=5)[0]
    ref = generate(model, p, max_new_tokens=12, ignore_eos=True).tokens
    ids = torch.tensor([p + ref[0]])
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
    for family in FAMILIES:
        head = build_head(family, model, num_heads=2)
        out = head.forward_train({i: hs[i] for i in head.config.hidden_layers}, ids)
        (sum(x.logsumexp(-1).mean() for x in out.logits) + sum(out.aux_losses.values())).backward()
        head.eval()
        for drafter in (head.as_drafter(), head.as_drafter(tree=DynamicTreeConfig(6, 2, 3))):
            assert generate(model, p, drafter=drafter, num_draft_tokens=2, max_new_tokens=12,
                            ignore_eos=True).tokens == ref, (arch, family)


@pytest.mark.parametrize("arch,extra", [("mistral", {}), ("qwen2", dict(use_sliding_window=True, max_window_layers=0)),
                                        ("gemma2", dict(head_dim=16))])
def test_sliding_window_decoders_past_their_window(arch, extra):
    """A window of 6 over 30 tokens: plain decoding equals HF generate, and trees (a static one, a
    batch of two rows, an EAGLE head's dynamic one) leave it unchanged; Mistral slides on every
    layer (no layer_types), Qwen2 as configured here too, Gemma2 on every other layer."""
    from mtp.drafters.testing import StaticTreeTestDrafter
    from mtp.tree import DynamicTreeConfig, StaticTree

    model = _tiny_decoder(arch, num_key_value_heads=2, sliding_window=6, **extra)
    p = _prompts([10], seed=1)[0]
    ref = generate(model, p, max_new_tokens=20, ignore_eos=True).tokens[0]
    hf = model.generate(torch.tensor([p]), max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert ref == hf[0, 10:].tolist()
    tree = StaticTree([(0,), (1,), (0, 0), (0, 1), (0, 0, 0)])
    assert generate(model, p, drafter=StaticTreeTestDrafter(tree, 128, [ref]), max_new_tokens=20,
                    ignore_eos=True).tokens[0] == ref
    assert generate(model, [p, p[:7]], drafter=StaticTreeTestDrafter(tree, 128), max_new_tokens=20,
                    ignore_eos=True).tokens[0] == ref
    eagle = build_head("eagle", model, num_heads=2).eval()
    assert generate(model, p, drafter=eagle.as_drafter(tree=DynamicTreeConfig(6, 2, 3)), num_draft_tokens=2,
                    max_new_tokens=20, ignore_eos=True).tokens[0] == ref


def test_every_family_on_gpt2_learned_positions():
    """GPT-2 (blocks under .h, learned absolute positions .wpe, final norm .ln_f) gets every family:
    the block families add the target's position embedding to their blocks' input. Each head learns
    its training sequences and stays lossless, as a chain in a batch of two and as a dynamic tree.
    A decoder with neither rotary nor learned positions (BLOOM: ALiBi) gets a clear error."""
    from transformers import BloomConfig, BloomForCausalLM, GPT2Config, GPT2LMHeadModel

    from mtp.tree import DynamicTreeConfig

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=128)).eval()
    prompts = _prompts([PROMPT_LEN] * 4, seed=6)
    ids = torch.tensor([p + c for p, c in zip(prompts, generate(model, prompts, max_new_tokens=24,
                                                                   ignore_eos=True).tokens)])
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
    p = ids[0, : PROMPT_LEN + 2].tolist()
    ref = generate(model, [p, p[:5]], max_new_tokens=12, ignore_eos=True).tokens
    for family in FAMILIES:
        head, l0, l1, accs = _train(family, model, ids, hs, 2)
        # (GPT-2's small tied unembedding keeps the loss high after 40 steps: judge by accuracy)
        assert l1 < l0 and min(accs) >= MIN_ACC, f"{family}: loss {l0:.3f} -> {l1:.3f}, accuracy {accs}"
        out = generate(model, [p, p[:5]], drafter=head.as_drafter(), num_draft_tokens=2, max_new_tokens=12,
                       ignore_eos=True)
        assert out.tokens == ref, family
        assert out.stats.tau > 1.2, f"{family}: a head that learned its sequences drafts them (tau {out.stats.tau:.2f})"
        tree = generate(model, p, drafter=head.as_drafter(tree=DynamicTreeConfig(6, 2, 3)), num_draft_tokens=2,
                        max_new_tokens=12, ignore_eos=True)
        assert tree.tokens[0] == ref[0], family
    bloom = BloomForCausalLM(BloomConfig(vocab_size=128, hidden_size=64, n_layer=2, n_head=4)).eval()
    assert generate(bloom, p, drafter=build_head("hydra", bloom, num_heads=2).eval().as_drafter(),
                    num_draft_tokens=2, max_new_tokens=4, ignore_eos=True).tokens
    for family in ("eagle", "eagle3", "deepseek", "parallel"):
        with pytest.raises(ValueError, match="rotary embedding .rotary_emb or learned .wpe"):
            build_head(family, bloom, num_heads=2)


@pytest.mark.parametrize("family", ["hydra", "medusa", "parallel", "eagle", "eagle3", "deepseek"])
def test_batched_trees_expand_each_row_like_the_per_path_fallback(tiny_llama, trained, data, family):
    """In a batch of two rows of different lengths, heads whose tree expander takes a row build each
    row's tree with one head call per depth; the trees equal those of the per-path fallback (the
    same tokens, verify by verify) and leave greedy output equal to plain decoding."""
    from mtp.tree import DynamicTreeConfig

    model, _ = tiny_llama
    head = trained[family][0]
    ids, _ = data  # prompts from the heads' training sequences, so that drafts get accepted
    prompts = [ids[0, : PROMPT_LEN - 3].tolist(), ids[1, :PROMPT_LEN].tolist()]
    ref = generate(model, prompts, max_new_tokens=16, ignore_eos=True).tokens
    outs = {}
    try:
        for rows in (True, False):
            head.tree_expander_rows = rows  # False: the per-path fallback
            outs[rows] = generate(model, prompts, drafter=head.as_drafter(tree=DynamicTreeConfig(8, 3, 3)),
                                  num_draft_tokens=3, max_new_tokens=16, ignore_eos=True)
    finally:
        del head.tree_expander_rows
    assert outs[True].tokens == outs[False].tokens == ref
    a, b = outs[True].stats, outs[False].stats
    assert a.accept_lengths == b.accept_lengths and a.draft_lengths == b.draft_lengths and a.draft_depths == b.draft_depths
    assert sum(a.accept_lengths) > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_drafting_matches_training_forward(tiny_llama, trained, data, family):
    """Fed the true tokens as its drafts, a drafter's chain logits equal forward_train's logits at
    the last committed position: the draft caches hold exactly what training saw, through a
    left-padded batched prefill and a verify step with rows accepting different lengths."""
    from mtp.drafters.base import DraftContext, TargetFeedback
    from mtp.sampling import SamplingConfig

    model, _ = tiny_llama
    head = trained[family][0]
    ids, hs = data
    layers = head.config.hidden_layers
    with torch.no_grad():
        full = head.forward_train({i: hs[i] for i in layers}, ids).logits
    rows, P, n_valid = [0, 1], [7, 10], [2, 3]
    seqs = [ids[r].tolist() for r in rows]
    m = max(P)
    valid = torch.zeros(2, m, dtype=torch.bool)
    pre = {i: torch.zeros(2, m, hs[i].shape[-1]) for i in layers}
    for b, (r, p) in enumerate(zip(rows, P)):
        valid[b, m - p:] = True
        for i in layers:
            pre[i][b, m - p:] = hs[i][r, :p]
    d = head.as_drafter()
    d.reset([s[:p] for s, p in zip(seqs, P)])
    none = torch.zeros(2, dtype=torch.long)
    d.observe(TargetFeedback(input_ids=torch.zeros(2, m, dtype=torch.long), valid=valid,
                             hidden_states=pre, logits=None, new_tokens=[[s[p]] for s, p in zip(seqs, P)],
                             num_accepted=none, is_prefill=True))
    ver = {i: torch.stack([hs[i][r, p: p + 3] for r, p in zip(rows, P)]) for i in layers}
    vvalid = torch.arange(3)[None, :] < torch.tensor(n_valid)[:, None]
    d.observe(TargetFeedback(input_ids=torch.zeros(2, 3, dtype=torch.long), valid=vvalid,
                             hidden_states=ver, logits=None,
                             new_tokens=[s[p + 1: p + 1 + n] for s, p, n in zip(seqs, P, n_valid)],
                             num_accepted=torch.tensor(n_valid) - 1, is_prefill=False))
    t = [p + n - 1 for p, n in zip(P, n_valid)]  # last committed position per row
    k = min(K, ids.shape[1] - 2 - max(t))
    for _ in range(2):  # twice: the first chain's speculative cache entries must be gone
        got = []

        def pick(logits):
            j = len(got)
            got.append(logits)
            return torch.tensor([seqs[b][t[b] + 2 + j] for b in range(2)])

        with torch.no_grad():
            head.draft_chain(d._state, d._seqs, k, pick)
        for j in range(k):
            for b, r in enumerate(rows):
                torch.testing.assert_close(got[j][b], full[j][r, t[b]], atol=1e-4, rtol=1e-4,
                                           msg=f"{family}: head {j}, row {b}")
