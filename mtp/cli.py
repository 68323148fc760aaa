"""Command-line entry points share one rule: the kit's own errors (bad data, config, model, heads,
input; a read-only or full disk) end the run with one `error: ...` line on stderr and exit code 2,
never a traceback. Bugs (any other exception) still show their traceback."""
from __future__ import annotations

import functools
import sys


def kit_errors() -> tuple[type[BaseException], ...]:
    """Exception classes the kit raises for things the user can fix."""
    from mtp.methods import MethodSpecError
    from mtp.data.prompts import DataError
    from mtp.engine import GenerationInputError
    from mtp.heads.checkpoint import HeadCheckpointError
    from mtp.models import ModelLoadError
    from mtp.suites import SuiteError
    from mtp.training.config import ConfigError
    from mtp.training.trainer import NonFiniteLossError, ResumeError

    return (DataError, ConfigError, ModelLoadError, HeadCheckpointError, ResumeError, NonFiniteLossError,
            MethodSpecError, GenerationInputError, SuiteError, OSError)


def error_line(e: BaseException) -> str:
    """`error: <message>`; a multi-line message keeps its advice on indented lines below."""
    first, *rest = (str(e) or type(e).__name__).strip().splitlines() or [type(e).__name__]
    return "\n".join([f"error: {first}"] + [f"  {line}" for line in rest if line.strip()])


def cli_main(fn):
    """Decorate a CLI's main(): kit errors -> one `error: ...` line on stderr, return code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not isinstance(e, kit_errors()):
                raise
            print(error_line(e), file=sys.stderr, flush=True)
            return 2
    return wrapper
