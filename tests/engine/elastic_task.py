"""The tiny task (tests/engine/tiny_task.py) with a ``dist`` section and a test-only way to lose a
worker, for the elastic tests (tests/engine/test_elastic*.py):

    python -m torch.distributed.run --nproc_per_node=2 --max-restarts=1 tests/engine/elastic_task.py \\
        --config FILE

ELASTIC_KILL="ITER:RANK" makes global rank RANK ("*": any rank whose environment has it) SIGKILL itself right after the checkpoint of
iteration ITER is complete on disk (every rank waits for it), in the first attempt only
(TORCHELASTIC_RESTART_COUNT 0 or unset): the restarted group then runs through. ELASTIC_KILL_ONLY=1
skips the barrier (the rank dies while the others go on to the next step's collective).
"""
from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field

import torch

from engine.cli import default_argument_parser, parse_config
from engine.config import DistConfig
from engine.dist import barrier, get_rank
from engine.launch import run_tool
from engine.trainer import Trainer
from tiny_task import TinyConfig, TinyTask


@dataclass
class ElasticConfig(TinyConfig):
    dist: DistConfig = field(default_factory=DistConfig)


def install_kill_after_checkpoint() -> None:
    spec = os.environ.get("ELASTIC_KILL")
    if not spec or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        return
    iteration, rank = spec.split(":")
    iteration = int(iteration)
    rank = None if rank == "*" else int(rank)  # "*": whichever rank this process is
    real_save = Trainer.save_checkpoint

    def save_checkpoint(self):
        real_save(self)
        if self.iteration != iteration:
            return
        if not os.environ.get("ELASTIC_KILL_ONLY"):
            barrier()  # rank 0 has written the file: the checkpoint is complete
        if rank is None or get_rank() == rank:
            print(f"ELASTIC_KILL: rank {get_rank()} kills itself after iteration {iteration}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer.save_checkpoint = save_checkpoint


def main():
    args = default_argument_parser("train the engine's tiny test task under torchrun").parse_args()
    cfg = parse_config(ElasticConfig, args.config, args.overrides)
    trainer = Trainer(cfg, TinyTask(cfg))
    results = trainer.train(resume=args.resume)
    print("RESULTS", results, flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    install_kill_after_checkpoint()
    sys.exit(run_tool(main))
