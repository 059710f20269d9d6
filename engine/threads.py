"""The thread policy's first half, set before torch starts: what every tool imports first.

``import engine.threads`` (no torch) sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it: OpenMP
threads that spin while waiting for each other collapse when the cores are shared (measured: ResNet-18
training on 2 cores with other work running fell from 240 to 12 images/s), and sleeping waiters cost
little on a free machine. OpenMP reads the variable once, when torch loads it, hence a module of its
own that the tools import before anything that imports torch. The second half, the number of compute
threads, is :func:`engine.hardware.apply_thread_policy` (``OMP_NUM_THREADS`` set by the user wins).
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def wait_policy() -> str:
    return os.environ.get("OMP_WAIT_POLICY", "")
