"""Fault injection: bad input and damaged files give one clear error, or are recovered from.

One test per class of fault (issue 10), on tiny-llama."""
from __future__ import annotations

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
