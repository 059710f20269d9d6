"""How a tool's ``main`` runs: user-facing failures become one line and an exit code."""
from __future__ import annotations

import re
from typing import Any, Callable

from .agent import POLL_SECONDS, agent_gone, exit_with_agent, stop_for_lost_agent
from .cli import fail
from .config import ConfigError
from .data import DataError, user_message
from .dist import destroy_distributed, is_peer_failure, peer_failure_message
from .interrupt import TrainingInterrupted


# A ValueError whose message starts with a config key ("model.rpn.anchor_sizes: ...") is the
# config's fault, raised where the value is used (the builders check what the schema cannot).
_CONFIG_KEY = re.compile(r"^(output_dir|seed|deterministic|(model|data|solver|test|input|logging|dist)(\.[\w\[\]]+)+)[: ]")


def run_tool(main: Callable[[], Any]) -> Any:
    """Call ``main()``; turn a bad config into exit code 2, bad data, a non-finite loss or a missing
    file into exit code 1, a collective that failed because another rank is gone into exit code 1
    with the lost ranks named (engine.dist.peer_failure_message), and Ctrl-C into 130 (during
    training, after saving a checkpoint), each as one ``error: ...`` line on stderr instead of a
    traceback. Leaves the process group cleanly. Under torchrun the process ends when its agent
    dies (engine.agent)."""
    exit_with_agent()
    try:
        return main()
    except ConfigError as e:
        fail(str(e), 2)
    except (DataError, FloatingPointError, FileNotFoundError) as e:
        fail(user_message(e), 1)
    except ValueError as e:
        if not _CONFIG_KEY.match(str(e)):
            raise
        fail(str(e), 2)
    except OSError as e:  # a file the run could not read or write (a folder given for a file, ...)
        if e.filename is None:
            raise
        fail(f"{e.filename}: {e.strerror or e}; check the path and its permissions", 1)
    except TrainingInterrupted as e:
        fail(str(e), 130)  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C
    except KeyboardInterrupt:
        fail("interrupted (nothing saved: training had not started, or Ctrl-C was pressed twice)", 130)
    except RuntimeError as e:
        if not is_peer_failure(e):
            raise
        if agent_gone(wait=2 * POLL_SECONDS):
            stop_for_lost_agent()  # the agent's death is why the collective failed: say that
        fail(peer_failure_message(e), 1)
    finally:
        destroy_distributed()
