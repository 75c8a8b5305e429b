"""Library chatter kept off the user's terminal while the models run: transformers' and torch's
deprecation notes (e.g. `past_key_values` becoming `cache`) and transformers' logged advice say nothing a
user of `forge eval` can act on, and they break its progress display. Only inside the block, so a
warning anywhere else still shows, and every setting is as it was afterwards."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# The categories libraries use for API changes and advice; a real failure raises instead of warning.
_QUIETED = (FutureWarning, DeprecationWarning, PendingDeprecationWarning, UserWarning)


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
