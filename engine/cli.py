"""The command line every tool shares: ``--config FILE [--resume] [--eval-only] [key.sub=value ...]``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence, Type, TypeVar

from .config import ConfigError, load_config
from .logger import setup_logging
from .resume import forget_resume, load_config_to_resume

T = TypeVar("T")


class ToolParser(argparse.ArgumentParser):
    """An ArgumentParser whose ``parse_args`` lets options and ``key=value`` overrides mix in any
    order: ``--config F a=1 --resume b=2`` as well as ``--config F --resume a=1 b=2``. Plain argparse
    gives the ``nargs="*"`` positional only the first run of overrides and stops on the second with
    "unrecognized arguments"; ``parse_intermixed_args`` collects them all, in order."""

    def parse_args(self, args=None, namespace=None):
        return self.parse_intermixed_args(args, namespace)


def default_argument_parser(description: str) -> argparse.ArgumentParser:
    parser = ToolParser(description=description)
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML experiment file")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in output_dir")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: continue even though the config differs from the run's in more "
                             "than run length, logging, periods and workers (engine/resume.py)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the weights and stop")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, applied after the file")
    return parser


def fail(message: str, code: int = 2) -> "NoReturn":  # noqa: F821
    """Print one line to stderr and exit; the way every tool reports bad input."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def parse_config(schema: Type[T], path: Optional[str], overrides: Sequence[str], resume: bool = False) -> T:
    """Load and validate, or exit with code 2 and a one-line message before any work; then send the
    run's log to the console and ``output_dir/log.txt`` (torchrun's ``RANK`` picks the file).

    ``resume`` (``--resume``; a torchrun restart counts too): when ``output_dir`` holds a checkpoint,
    the starting-weights files are not required (engine.resume.load_config_to_resume)."""
    forget_resume()
    try:
        cfg = None
        if resume:
            cfg = load_config_to_resume(lambda: load_config(schema, path, overrides))
        elif "TORCHELASTIC_RESTART_COUNT" in os.environ:  # under torchrun; torch is imported only then
            from .dist import restart_count

            if restart_count() > 0:  # a restarted worker group resumes by itself (the Trainer's _start)
                cfg = load_config_to_resume(lambda: load_config(schema, path, overrides))
        if cfg is None:
            cfg = load_config(schema, path, overrides)
    except ConfigError as e:
        fail(str(e), 2)
    setup_logging(getattr(cfg, "output_dir", None), int(os.environ.get("RANK", "0")))
    return cfg
