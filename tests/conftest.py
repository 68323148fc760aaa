import copy
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # stat_utils
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_llama():
    from mtp.models import load_model

    model, tok = load_model("tiny-llama", dtype=torch.float32, device="cpu")
    return model, tok


@pytest.fixture(scope="session")
def tiny_gemma():
    from mtp.models import load_model

    model, tok = load_model("tiny-gemma3", dtype=torch.float32, device="cpu")
    return model, tok


def perturbed_copy(model, scale: float, seed: int = 0):
    """A draft model close to `model`: the same weights plus Gaussian noise."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.std())
    return m


def hf_greedy(model, prompt: list[int], max_new_tokens: int, eos=None) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=eos, pad_token_id=0, min_new_tokens=0)
    return out[0, len(prompt):].tolist()
