"""How a tool's ``main`` runs: user-facing failures become one line and an exit code."""
from __future__ import annotations

from typing import Any, Callable

from .cli import fail
from .config import ConfigError
from .data import DataError, user_message
from .dist import destroy_distributed


def run_tool(main: Callable[[], Any]) -> Any:
    """Call ``main()``; turn a bad config into exit code 2 and bad data, a non-finite loss or a missing
    file into exit code 1, each as one ``error: ...`` line on stderr instead of a traceback. Leaves
    the process group cleanly at the end."""
    try:
        return main()
    except ConfigError as e:
        fail(str(e), 2)
    except (DataError, FloatingPointError, FileNotFoundError) as e:
        fail(user_message(e), 1)
    finally:
        destroy_distributed()
