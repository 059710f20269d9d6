"""How a tool's ``main`` runs: user-facing failures become one line and an exit code."""
from __future__ import annotations

from typing import Any, Callable

from .cli import fail
from .config import ConfigError
from .data import DataError, user_message
from .dist import destroy_distributed
from .interrupt import TrainingInterrupted


def run_tool(main: Callable[[], Any]) -> Any:
    """Call ``main()``; turn a bad config into exit code 2, bad data, a non-finite loss or a missing
    file into exit code 1, and Ctrl-C into 130 (during training, after saving a checkpoint), each as
    one ``error: ...`` line on stderr instead of a traceback. Leaves the process group cleanly."""
    try:
        return main()
    except ConfigError as e:
        fail(str(e), 2)
    except (DataError, FloatingPointError, FileNotFoundError) as e:
        fail(user_message(e), 1)
    except TrainingInterrupted as e:
        fail(str(e), 130)  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C
    except KeyboardInterrupt:
        fail("interrupted (nothing saved: training had not started, or Ctrl-C was pressed twice)", 130)
    finally:
        destroy_distributed()
