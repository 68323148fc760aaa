"""Data: prompt sources, self-distillation, tokenized datasets, the hidden-state cache."""
from mtp.data.dataset import Example, collate, global_batches, load_examples
from mtp.data.distill import DistillConfig, distill, load_distilled
from mtp.data.prompts import BUILTIN, DataError, Prompt, load_prompts

__all__ = ["Example", "collate", "global_batches", "load_examples", "DistillConfig", "distill", "load_distilled",
           "BUILTIN", "DataError", "Prompt", "load_prompts"]
