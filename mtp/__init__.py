"""mtp: a speculative-decoding research kit for multi-token-prediction heads."""
from mtp.engine import GenerationInputError, GenerationOutput, generate
from mtp.heads import build_head, list_families, load_heads
from mtp.models import ModelLoadError, list_models, load_model
from mtp.sampling import SamplingConfig, verify_chain
from mtp.stats import SpecStats

__version__ = "0.1.0"

__all__ = [
    "GenerationInputError", "GenerationOutput", "generate", "build_head", "list_families", "load_heads", "ModelLoadError", "list_models", "load_model", "SamplingConfig",
    "verify_chain", "SpecStats", "__version__",
]
