"""A tiny classification task for the engine's tests, runnable as a training tool:

    python tests/engine/tiny_task.py --config FILE [--resume] [key=value ...]
    python -m torch.distributed.run --nproc_per_node=2 tests/engine/tiny_task.py --config FILE ...

16x16 images of 4 classes (a bright square in one quadrant, on noise), augmented with a random
contrast, shift and noise drawn from the sample seed; a 2-layer conv net with GroupNorm and dropout. It has
everything a resume could lose: momentum, random augmentation, dropout.
"""
from __future__ import annotations

import io
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.cli import default_argument_parser, parse_config
from engine.config import LoggingConfig, SolverConfig, TestConfig
from engine.data import DataError
from engine.launch import run_tool
from engine.sampler import InferenceSampler, gather_in_order
from engine.trainer import Trainer


@dataclass
class TinyData:
    num_workers: int = 0
    num_train: int = 96
    num_val: int = 40
    bad_index: int = -1  # this training sample raises DataError
    skip_index: int = -1  # this training sample is skipped (None)
    nan_index: int = -1  # this training sample holds a NaN pixel
    delay: float = 0.0  # seconds per training sample (slows a run down for the kill test)


@dataclass
class TinyModel:
    dropout: float = 0.2
    width: int = 8


@dataclass
class TinyConfig:
    output_dir: str = "runs/tiny"
    seed: int = 0
    deterministic: bool = True
    data: TinyData = field(default_factory=TinyData)
    model: TinyModel = field(default_factory=TinyModel)
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(
        base_lr=0.05, ims_per_batch=8, max_iter=20, steps=[12], warmup_iters=3, checkpoint_period=5))
    test: TestConfig = field(default_factory=lambda: TestConfig(eval_period=0, ims_per_batch=16))
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(log_period=1, tensorboard=False,
                                                                        progress_bar=False))


def make_image(index: int, seed: int = 1234):
    """The clean image and label of sample ``index``: a function of the index only."""
    g = torch.Generator().manual_seed(seed * 100003 + index)
    label = index % 4
    img = 0.3 * torch.rand(3, 16, 16, generator=g)
    y, x = divmod(label, 2)
    img[:, 2 + 8 * y:6 + 8 * y, 2 + 8 * x:6 + 8 * x] += 0.7
    return img, label


class TinyTrainSet(torch.utils.data.Dataset):
    def __init__(self, cfg: TinyData):
        self.cfg = cfg

    def __len__(self):
        return self.cfg.num_train

    def __getitem__(self, item):
        index, sample_seed = item
        if self.cfg.delay:
            time.sleep(self.cfg.delay)
        if index == self.cfg.bad_index:
            raise DataError(f"images/{index:05d}.png: cannot decode the image (truncated file?); "
                            "re-download it or remove it from the list")
        if index == self.cfg.skip_index:
            return None
        img, label = make_image(index)
        g = torch.Generator().manual_seed(sample_seed)
        img = img * (0.8 + 0.4 * torch.rand((), generator=g))  # contrast (a flip would change the label)
        dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
        img = torch.roll(img, shifts=(dy, dx), dims=(1, 2))
        img = img + 0.05 * torch.randn(img.shape, generator=g)
        if index == self.cfg.nan_index:
            img[0, 0, 0] = float("nan")
        return img, label


class TinyValSet(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return make_image(10_000 + index)


def collate(samples):
    images = torch.stack([s[0] for s in samples])
    labels = torch.tensor([s[1] for s in samples])
    return {"images": images, "labels": labels}


class TinyNet(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.norm1 = nn.GroupNorm(2, width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(2, 2 * width)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * width * 4, 4)

    def forward(self, x):
        # SiLU, not ReLU: runs that differ by rounding (one process vs two ranks) must stay close, and
        # a ReLU input within 1e-7 of zero flips its gradient between them.
        x = F.silu(self.norm1(self.conv1(x)))
        x = F.silu(self.norm2(self.conv2(x)))
        return self.fc(self.dropout(F.adaptive_avg_pool2d(x, 2).flatten(1)))  # keeps the quadrant


class TinyTask:
    primary_metric = "top1"

    def __init__(self, cfg: TinyConfig):
        self.cfg = cfg
        self.num_train_samples = cfg.data.num_train

    def build_model(self):
        return TinyNet(self.cfg.model.width, self.cfg.model.dropout)

    def train_dataset(self):
        return TinyTrainSet(self.cfg.data)

    def collate(self, samples):
        return collate(samples)

    def group_ids(self):
        return None

    def training_step(self, model, batch):
        logits = model(batch["images"])
        return {"loss_cls": F.cross_entropy(logits, batch["labels"]),
                "loss_logit_l2": 1e-3 * logits.float().pow(2).mean()}

    def evaluate(self, model):
        device = next(model.parameters()).device
        # A plain DataLoader draws its base seed from the global RNG, as many tasks' loaders would:
        # the trainer must keep evaluation from shifting the training's random stream.
        dataset = TinyValSet(self.cfg.data.num_val)
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=InferenceSampler(len(dataset)),
                                             collate_fn=collate)
        correct = []
        for batch in loader:
            logits = model(batch["images"].to(device))
            correct += (logits.argmax(1).cpu() == batch["labels"]).tolist()
        correct = gather_in_order(correct)
        if not correct:
            return {}
        return {"top1": 100.0 * sum(correct) / len(correct), "num_images": len(correct)}

    def checkpoint_meta(self):
        return {"class_names": ["a", "b", "c", "d"], "mean": [0.0, 0.0, 0.0]}


def install_kill_during_save():
    """TINY_KILL_DURING_SAVE=NAME: writing the file NAME (e.g. model_0000010.pth) stops after half its
    bytes with a SIGKILL (a crash while a checkpoint is being written)."""
    name = os.environ.get("TINY_KILL_DURING_SAVE")
    if not name:
        return
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        path = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else str(f)
        if name not in os.path.basename(path):
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        f.write(data[:len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save


def main():
    args = default_argument_parser("train the engine's tiny test task").parse_args()
    cfg = parse_config(TinyConfig, args.config, args.overrides)
    trainer = Trainer(cfg, TinyTask(cfg))
    if args.eval_only:
        results = trainer.evaluate_only(os.path.join(cfg.output_dir, "model_final.pth"))
    else:
        results = trainer.train(resume=args.resume, allow_config_change=args.allow_config_change)
    print("RESULTS", results, flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)  # runs compared bitwise use the same kernels; the test machine is small
    install_kill_during_save()
    sys.exit(run_tool(main))
