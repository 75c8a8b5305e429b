"""Library chatter kept off the user's terminal: transformers' and torch's deprecation notes (e.g.
`past_key_values` becoming `cache`) and transformers' logged advice say nothing a user of Forge can act on,
and they break its progress displays. Whatever a new release of a library starts printing, the user sees
Forge's own output only.

Two levels: `quiet_at_cli_boundary` once, when the `forge` command starts (every command, whichever
library it imports later); `quiet_libraries` around model code for callers that are not the CLI (the
library API, tests), restoring every setting afterwards. FORGE_DEBUG=1, or warnings asked for with
`python -W` / PYTHONWARNINGS, leave everything visible for whoever is debugging."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# The categories libraries use for API changes and advice; a real failure raises instead of warning.
_QUIETED = (FutureWarning, DeprecationWarning, PendingDeprecationWarning, UserWarning)


def quiet_at_cli_boundary() -> bool:
    """Library warnings and transformers' logging off for this process; False when left on (debugging)."""
    if os.environ.get("FORGE_DEBUG") or sys.warnoptions:
        return False
    for category in _QUIETED:
        warnings.filterwarnings("ignore", category=category)
    # Read by transformers when it is first imported (lazily, later in the command); the user's own
    # setting wins.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    # DeepSpeed (when installed) is imported by accelerate inside every save_pretrained and logs to stdout
    # that it found no GPU; its logger is made at import with its own level, but a filter set now stays.
    import logging

    logging.getLogger("DeepSpeed").addFilter(lambda record: record.levelno >= logging.ERROR)
    return True


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Python warnings of the categories above ignored, and transformers' logging at error level, inside."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    with warnings.catch_warnings():
        for category in _QUIETED:
            warnings.filterwarnings("ignore", category=category)
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(verbosity)
