"""Fault injection: bad input and damaged files give one clear error, or are recovered from.

One test per class of fault (issue 10), on tiny-llama."""
from __future__ import annotations

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
