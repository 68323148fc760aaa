"""Fault injection: bad input and damaged files give one clear error, or are recovered from.

One test per class of fault (issue 10), on tiny-llama."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

from mtp.engine import GenerationInputError, generate


# ---- engine input checks -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=[5] * 2040, max_new_tokens=10), r"prompt of 2040 tokens \+ max_new_tokens=10 .* context of 2048"),
    (dict(input_ids=[5, 300]), r"token id 300 .* vocabulary \(size 128"),
    (dict(input_ids=[5, -1]), r"token id -1 .* vocabulary"),
    (dict(input_ids=[5, 6], temperature=float("nan")), r"temperature .* got nan"),
    (dict(input_ids=[5, 6], temperature=-1.0), r"temperature .* got -1"),
    (dict(input_ids=[5, 6], eos_token_id=999), r"eos_token_id 999 .* vocabulary \(size 128"),
    (dict(input_ids=torch.tensor([[5.7, 6.0]])), r"float32 tensor: token ids must be integers"),
    (dict(input_ids=[5.7, 6.0]), r"holds 5.7 \(float\)"),
    (dict(input_ids="hello"), r"is a string: tokenize it first"),
    (dict(input_ids=np.array([[1.0, 2.0]])), r"numpy array of float64"),
    (dict(input_ids=[5, 6], max_new_tokens=0), r"max_new_tokens must be >= 1"),
])
def test_engine_refuses_bad_input(tiny_llama, kwargs, match):
    model, _ = tiny_llama
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(GenerationInputError, match=match) as ei:
        generate(model, **kwargs)
    assert isinstance(ei.value, ValueError) and "\n" not in str(ei.value)


def test_engine_accepts_numpy_integer_prompts(tiny_llama):
    model, _ = tiny_llama
    ref = generate(model, [5, 6, 7], max_new_tokens=4).tokens
    assert generate(model, np.array([5, 6, 7], dtype=np.int32), max_new_tokens=4).tokens == ref
    assert generate(model, [np.int64(5), 6, 7], max_new_tokens=4).tokens == ref
    assert generate(model, [5] * 2038, max_new_tokens=10, ignore_eos=True).finish_reasons == ["length"]  # fits exactly


# ---- heads and base weights ----------------------------------------------------------------------

def test_corrupt_heads_refused_with_path(tiny_llama, tmp_path):
    from safetensors.torch import load_file, save_file

    from mtp.heads import HeadCheckpointError, build_head, load_heads

    model, _ = tiny_llama
    d = tmp_path / "heads"
    build_head("medusa", model, num_heads=2).save_pretrained(d)
    weights = d / "model.safetensors"
    good = weights.read_bytes()
    load_heads(d, model)  # intact: loads
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(HeadCheckpointError, match=r"heads/model.safetensors: cannot read the weights .*truncated or corrupt"):
        load_heads(d, model)
    weights.write_bytes(good)
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = float("nan")  # bytes flipped to a NaN
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(HeadCheckpointError, match=r"non-finite .* in 1 tensor"):
        load_heads(d, model)


def test_nan_base_model_warns(tiny_llama, tmp_path):
    from mtp.models import load_model

    model, tok = tiny_llama
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    with warnings.catch_warnings(record=True) as rec:  # an intact copy gives no non-finite warning
        warnings.simplefilter("always")
        load_model(str(tmp_path / "m"), dtype=torch.float32, device="cpu")
    assert not any("non-finite" in str(w.message) for w in rec)
    from safetensors.torch import load_file, save_file

    f = tmp_path / "m" / "model.safetensors"
    sd = load_file(f)
    sd["model.norm.weight"].fill_(float("nan"))
    save_file(sd, f, metadata={"format": "pt"})
    with pytest.warns(RuntimeWarning, match="non-finite .* logits"):
        load_model(str(tmp_path / "m"), dtype=torch.float32, device="cpu")


# ---- corrupted model cache -----------------------------------------------------------------------

from test_models import _save_tiny, fake_builtin  # noqa: E402,F401  (a built-in model built from local zips)


def test_corrupted_model_cache_is_rebuilt(fake_builtin, monkeypatch, capsys):
    import mtp.models as M
    import mtp.models.fetch as F
    from mtp.models import load_model, model_fingerprint, verify_cache

    builds = []
    monkeypatch.setattr(F, "_convert_gguf", lambda g, o: (builds.append(1), _save_tiny(g, o)))
    ref = model_fingerprint(load_model("tiny-llama")[0])
    load_model("fake-model")
    folder = M.model_cache_path("fake-model")
    marker = json.loads((folder / ".mtp_complete").read_text())
    assert marker["files"]["model.safetensors"]["size"] == (folder / "model.safetensors").stat().st_size
    assert len(marker["files"]["tokenizer.json"]["sha256"]) == 64 and verify_cache(folder, deep=True) == []
    weights = folder / "model.safetensors"

    def damage_truncate():
        weights.write_bytes(weights.read_bytes()[:-1000])

    def damage_tokenizer():
        (folder / "tokenizer.json").unlink()

    def damage_flip():  # same size, bytes flipped in the middle of a tensor
        b = bytearray(weights.read_bytes())
        b[len(b) // 2: len(b) // 2 + 64] = b"\xff" * 64
        weights.write_bytes(bytes(b))

    os.utime(weights, ns=(1, 1))  # touched, same bytes: hashed once, then trusted again
    assert verify_cache(folder) == [] and json.loads((folder / ".mtp_complete").read_text())["files"][
        "model.safetensors"]["mtime_ns"] == 1
    for damage, problem in [(damage_truncate, "bytes, "), (damage_tokenizer, "tokenizer.json is missing"),
                            (damage_flip, "does not match its sha256")]:
        damage()
        assert any(problem in p for p in verify_cache(folder)), damage.__name__
        n = len(builds)
        model, tok = load_model("fake-model")
        assert len(builds) == n + 1, f"{damage.__name__}: not rebuilt"
        assert model_fingerprint(model) == ref and tok("hi").input_ids
        assert "is damaged" in capsys.readouterr().err
        assert verify_cache(folder, deep=True) == []
    load_model("fake-model")
    assert len(builds) == 4  # an intact cache is not rebuilt
    # A cache of an older kit (the marker holds only the GGUF's sha256): safetensors headers are checked.
    (folder / ".mtp_complete").write_text(fake_builtin.sha256 + "\n")
    assert verify_cache(folder) == []
    damage_truncate()
    assert any("truncated" in p for p in verify_cache(folder))
    load_model("fake-model")
    assert len(builds) == 5 and "files" in json.loads((folder / ".mtp_complete").read_text())


# ---- sampled self-distillation: killed and resumed == uninterrupted ------------------------------

_DISTILL_KILLED_AFTER_ONE_BATCH = r"""
import os, signal, sys
import torch
from mtp.data import DistillConfig, distill, load_prompts
from mtp.data.distill import ShardWriter
from mtp.models import load_model

torch.set_num_threads(1)
real_write = ShardWriter.write

def write_then_die(self, records):
    real_write(self, records)
    os.kill(os.getpid(), signal.SIGKILL)  # killed right after the first batch is on disk

ShardWriter.write = write_then_die
model, tok = load_model("tiny-llama")
cfg = DistillConfig(max_new_tokens=8, batch_size=2, temperature=1.0, seed=3)
distill(model, tok, load_prompts("builtin")[:6], sys.argv[1], cfg, progress=False)
"""


def test_sampled_distill_killed_then_resumed_equals_uninterrupted(tiny_llama, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from mtp.data import DistillConfig, distill, load_distilled, load_prompts

    model, tok = tiny_llama
    prompts = load_prompts("builtin")[:6]
    cfg = DistillConfig(max_new_tokens=8, batch_size=2, temperature=1.0, seed=3)
    distill(model, tok, prompts, tmp_path / "whole", cfg, progress=False)
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", _DISTILL_KILLED_AFTER_ONE_BATCH, str(tmp_path / "killed")],
                          cwd=repo, env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(load_distilled(tmp_path / "killed")) == 2  # the first batch only
    stats = distill(model, tok, prompts, tmp_path / "killed", cfg, progress=False)  # resume
    assert stats["prompts_new"] == 4
    key = lambda r: r["id"]  # noqa: E731
    whole, resumed = sorted(load_distilled(tmp_path / "whole"), key=key), sorted(load_distilled(tmp_path / "killed"), key=key)
    assert len(whole) == 6 and resumed == whole


# ---- training resume past a damaged checkpoint ---------------------------------------------------

from test_train import cfg_for, cyc_data, head_weights  # noqa: E402,F401


def test_resume_falls_back_past_a_truncated_checkpoint(tmp_path, cyc_data, capsys):
    from mtp.training import ResumeError, Trainer, train

    over = ["head.family=deepseek", "optim.max_steps=6", "ckpt.every=2", "ckpt.keep=2", "eval.every=0",
            "eval.max_batches=1", "data.batch_size=2"]
    straight = cfg_for(tmp_path, cyc_data, "name=straight", *over)
    train(straight)
    cfg = cfg_for(tmp_path, cyc_data, "name=killed", *over)
    train(cfg, stop_after=5)  # killed after step 5: checkpoints of steps 2 and 4
    ck = cfg.run_dir / "checkpoints"
    weights = ck / "step-0000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # the latest checkpoint is truncated
    with open(cfg.run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train/lo')  # and the metrics log ends in a torn line
    st = train(cfg, resume=True)
    out = capsys.readouterr().out
    assert "step-0000004 is unusable (model.safetensors has" in out and "resumed from" in out
    assert st["step"] == 6 and (ck / "damaged").is_dir()
    wa, wb = head_weights(straight.run_dir), head_weights(cfg.run_dir)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # as if never damaged
    steps = [json.loads(x)["step"] for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)
    # `latest` naming a folder that is gone: the newest intact checkpoint is used.
    (ck / "latest").write_text("step-0000042\n")
    t = Trainer(cfg, resume=True)
    assert t.state["step"] == 6
    t.close()
    for d in ck.glob("step-*"):
        (d / "trainer_state.json").write_text("{")
    with pytest.raises(ResumeError, match="no intact checkpoint"):
        Trainer(cfg, resume=True)


# ---- CLIs: one `error: ...` line, exit code 2, nothing left behind -------------------------------

def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), lines[0]


def test_cli_errors_are_one_line(tmp_path, capsys):
    from eval.bench import main as bench
    from eval.costmodel import main as costmodel
    from eval.sweep import main as sweep
    from train.distill import main as distill

    out = tmp_path / "d"
    base = ["--model", "tiny-llama", "--out", str(out), "--num-prompts", "2", "--no-progress"]
    for flag, value, name in [("--shard-size", "0", "shard_size"), ("--temperature", "-1", "temperature"),
                              ("--batch-size", "0", "batch_size"), ("--max-new-tokens", "0", "max_new_tokens")]:
        assert distill(base + [flag, value]) == 2
        _one_error_line(capsys, name)
        assert not (out / "meta.json").exists()  # nothing that would block the corrected rerun
    assert distill(base + ["--max-new-tokens", "4"]) == 0
    assert len(list(out.glob("shard-*.jsonl"))) == 1
    # The kit's own errors: a model that is not there, an output path that cannot be a folder.
    assert distill(["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "x")]) == 2
    _one_error_line(capsys, "no such folder")
    (tmp_path / "file").write_text("")
    assert distill(base[:2] + ["--out", str(tmp_path / "file" / "sub"), "--max-new-tokens", "4"]) == 2
    _one_error_line(capsys, "Not a directory")
    # An empty suite is an error, not an empty summary.
    (tmp_path / "empty.jsonl").write_text("")
    assert bench(["--model", "tiny-llama", "--methods", "vanilla", "--suite", str(tmp_path / "empty.jsonl"),
                  "--out", str(tmp_path / "b"), "--no-plots"]) == 2
    _one_error_line(capsys, "holds no prompts")
    for main, argv in [(bench, ["--num-prompts", "0", "--out", str(tmp_path / "b")]),
                       (costmodel, ["--methods", "vanilla", "--out", str(tmp_path / "c"), "--tokens", "0"]),
                       (sweep, ["--batch-sizes", "abc", "--out", str(tmp_path / "s")]),
                       (sweep, ["--batch-sizes", "0", "--out", str(tmp_path / "s")])]:
        with pytest.raises(SystemExit) as ei:
            main(argv)
        assert ei.value.code == 2 and "must be" in capsys.readouterr().err


def test_malformed_files_name_file_and_line(tmp_path, tiny_llama):
    from mtp import results as R
    from mtp.data import DataError, load_examples
    from mtp.data.cache import HiddenStateCache, build_cache
    from mtp.suites import SuiteError, load_suite

    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"id": "a", "turns": ["hi"]}\n\n{"id": "b", "turns": [\n')
    with pytest.raises(SuiteError, match=r"suite.jsonl:3: malformed JSON \(.* at column"):
        load_suite(str(suite))
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"method": "vanilla"}\n{"method": \n{"method": "x"}\n')
    with pytest.raises(DataError, match=r"samples.jsonl:2: malformed JSON"):
        R.read_jsonl(samples)
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"input_ids": [1, "2", 3]}) + "\n")
    with pytest.raises(DataError, match=r"record 0: input_ids must be a list of ints .* got '2'"):
        load_examples(data, vocab_size=128)
    data.write_text(json.dumps({"prompt_ids": "12", "response_ids": [3, 4]}) + "\n")
    with pytest.raises(DataError, match=r"record 0: prompt_ids / response_ids must be lists of ints"):
        load_examples(data, vocab_size=128)
    # A hidden-state cache with a torn meta.json, then a truncated shard.
    model, _ = tiny_llama
    data.write_text("".join(json.dumps({"prompt_ids": [5, 6, 7], "response_ids": [8, 9, 10, 11]}) + "\n"
                            for _ in range(3)))
    cache = tmp_path / "cache"
    build_cache(model, load_examples(data, vocab_size=128), [-1], cache, dtype="fp32", topk=4)
    meta = (cache / "meta.json").read_text()
    (cache / "meta.json").write_text(meta[: len(meta) // 2])
    with pytest.raises(DataError, match=r"cache/meta.json:\d+: malformed JSON"):
        HiddenStateCache(cache)
    (cache / "meta.json").write_text(meta)
    shard = sorted(cache.glob("shard-*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-4])
    with pytest.raises(DataError, match=rf"cache shard .*{shard.name} has \d+ bytes, meta.json says"):
        HiddenStateCache(cache)


# ---- engine edge cases ---------------------------------------------------------------------------

def test_row_by_row_sliding_window_path_gives_each_drafter_its_row(tiny_gemma):
    from mtp.drafters import OracleDrafter

    model, _ = tiny_gemma
    prompts = [[5, 6, 7, 8], [9, 10, 11, 12, 13, 14], [20, 21, 22]]
    refs = [generate(model, p, max_new_tokens=40, ignore_eos=True).tokens[0] for p in prompts]
    out = generate(model, prompts, drafter=OracleDrafter(refs, 4), max_new_tokens=40, ignore_eos=True)
    assert out.tokens == refs  # was: "OracleDrafter has 3 continuations for 1 rows"
    assert out.stats.tau > 4  # the oracle's drafts were all accepted


def test_stop_string_across_the_prompt_end_does_not_stop(tiny_llama):
    """Stop strings match the generated text only (documented in `generate`)."""
    model, tok = tiny_llama
    prompt = tok("the cat sat", add_special_tokens=False).input_ids
    first = generate(model, prompt, max_new_tokens=1, ignore_eos=True).tokens[0]
    spanning = tok.decode(prompt[-1:]) + tok.decode(first)  # last prompt token + first output token
    assert spanning not in tok.decode(first)
    out = generate(model, prompt, max_new_tokens=6, ignore_eos=True, stop=[spanning], tokenizer=tok)
    assert out.tokens[0][:1] == first and len(out.tokens[0]) > 1
    inside = tok.decode(out.tokens[0][1:3])  # a stop string wholly in the output does stop
    out = generate(model, prompt, max_new_tokens=6, ignore_eos=True, stop=[inside], tokenizer=tok)
    assert out.finish_reasons == ["stop"] and len(out.tokens[0]) <= 3
