"""The environment a test gives the processes it starts."""

from __future__ import annotations

import os


def without_settings() -> dict[str, str]:
    """This process's environment less every ``FRAUDSTREAM_*`` variable: a child process
    reads only the settings its test hands it, never the developer's own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
