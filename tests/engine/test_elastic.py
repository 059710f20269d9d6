"""torchrun beyond one clean run, on the CPU (gloo, loopback only): a worker SIGKILLed after a
checkpoint under --max-restarts=1 restarts the group, which resumes by itself and ends bitwise equal
to an uninterrupted run; two agents (--nnodes=2, c10d rendezvous) equal one node with two processes;
a lost or hung peer ends the job within the configured timeout with the lost rank named, and leaves
no process and no half-written file behind; so does a SIGKILLed agent; a run continued with another world size (2 -> 1) reads
the same samples and ends within rounding of a one-process run."""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
import torch

from conftest import HERE, free_port, tool_env, write_config
from engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

TASK = os.path.join(HERE, "elastic_task.py")
ROOT = os.path.dirname(os.path.dirname(HERE))
# fp32 (solver.amp=off): runs compared within 1e-5 must not round to bf16 on a CPU that has it. No
# dropout: a run continued with one process draws other masks than two ranks did (the per-rank RNG
# restore is tests/engine/test_resume.py's and test_torchrun.py's); augmentation is seeded per sample.
RUN = dict(model={"dropout": 0.0}, solver={"max_iter": 12, "checkpoint_period": 6, "amp": "off"},
           test={"eval_period": 0, "ims_per_batch": 16}, dist={"backend": "gloo", "timeout": 20.0})


def torchrun_args(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--monitor-interval=0.2", *args]


def tagged_processes(tag):
    """Pids of live processes whose environment holds ELASTIC_TEST_TAG=tag: the agents, their workers
    (torchrun starts each in a session of its own) and the workers' loader workers all inherit it, so
    whatever is left of them after the agents exit is an orphan."""
    found, mark = [], f"ELASTIC_TEST_TAG={tag}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if mark in environ and state != "Z":
            found.append(int(pid))
    return found


class Agents:
    """torchrun agents started together; ``wait`` returns their (returncode, output) and the wall
    time; ``close`` kills every process they left (found by an environment tag)."""

    def __init__(self, commands, env=None, extra_envs=None):
        self.tag = uuid.uuid4().hex
        env = {**tool_env(), "PYTHONPATH": ROOT, "ELASTIC_TEST_TAG": self.tag, **(env or {})}
        extra_envs = extra_envs or [{}] * len(commands)
        self.procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env={**env, **extra}, start_new_session=True)
                      for c, extra in zip(commands, extra_envs)]
        self.start = time.monotonic()

    def wait(self, timeout):
        outputs = []
        for p in self.procs:
            out, _ = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - self.start)))
            outputs.append((p.returncode, out))
        return outputs, time.monotonic() - self.start

    def orphans(self):
        deadline = time.monotonic() + 2.0  # a worker the agent signalled last may still be exiting
        while tagged_processes(self.tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        return tagged_processes(self.tag)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for pid in tagged_processes(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_agents(commands, timeout, env=None, extra_envs=None):
    agents = Agents(commands, env, extra_envs)
    try:
        outputs, seconds = agents.wait(timeout)
        return outputs, seconds, agents.orphans()
    finally:
        agents.close()


def one_node(config, *args, env=None, timeout=120):
    command = torchrun_args("--nproc-per-node=2", "--rdzv-backend=c10d",
                            f"--rdzv-endpoint=127.0.0.1:{free_port()}", *args, TASK, "--config", config)
    ((rc, out),), _, orphans = run_agents([command], timeout, env)
    assert not orphans, f"left running: {orphans}"
    return rc, out


def two_nodes(config, *args, env=None, second_env=None, timeout=120):
    """Two agents; the first hosts the rendezvous store (as a job's first node does), so a test that
    kills the second node's worker keeps the store the survivor reports through."""
    endpoint = f"--rdzv-endpoint=127.0.0.1:{free_port()}"
    commands = [torchrun_args("--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", endpoint,
                              f"--rdzv-conf=is_host={int(host)}", "--rdzv-id=elastic-test",
                              "--local-addr=127.0.0.1", *args, TASK, "--config", config) for host in (True, False)]
    return run_agents(commands, timeout, env, [{}, second_env or {}])


def one_process(config, *args, timeout=120):
    return subprocess.run([sys.executable, TASK, "--config", config, *args], capture_output=True, text=True,
                          timeout=timeout, env={**tool_env(), "PYTHONPATH": ROOT})


def weights(directory, name="model_final.pth"):
    return load_checkpoint(os.path.join(directory, name))["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted two-process run (one node)."""
    tmp = tmp_path_factory.mktemp("reference")
    rc, out = one_node(write_config(tmp, "run", **RUN))
    assert rc == 0, out[-3000:]
    return os.path.join(tmp, "run")


def test_killed_worker_restarts_and_resumes_bitwise(tmp_path, reference):
    config = write_config(tmp_path, "run", **RUN)
    rc, out = one_node(config, "--max-restarts=1", env={"ELASTIC_KILL": "6:1"})
    assert rc == 0, out[-3000:]
    assert "ELASTIC_KILL: rank 1 kills itself after iteration 6" in out
    assert "torchrun restart 1: resuming from the newest complete checkpoint" in out
    assert f"resuming from {tmp_path}/run/checkpoints/model_0000006.pth (iteration 6)" in out
    a, b = weights(reference), weights(os.path.join(tmp_path, "run"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not torch.equal(a["fc.weight"], weights(reference, "checkpoints/model_0000006.pth")["fc.weight"])
    assert "RESULTS {'top1'" in out  # the restarted group evaluated


def test_two_nodes_equal_one_node(tmp_path, reference):
    config = write_config(tmp_path, "run", **RUN)
    outputs, seconds, orphans = two_nodes(config)
    for rc, out in outputs:
        assert rc == 0, out[-3000:]
    a, b = weights(reference), weights(os.path.join(tmp_path, "run"))
    for name in a:
        relative = (a[name] - b[name]).norm() / a[name].norm().clamp_min(1e-12)
        assert relative < 1e-5, f"{name}: relative difference {relative:.2e}"
    # only global rank 0 wrote: one log.txt, one metrics record per iteration; rank 1 logs to its own file
    run = os.path.join(tmp_path, "run")
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["model_0000006.pth", "model_0000012.pth"]
    with open(os.path.join(run, "metrics.jsonl")) as f:
        assert sum('"loss"' in line for line in f) == 12
    assert os.path.isfile(os.path.join(run, "log.rank1.txt")) and not os.path.exists(os.path.join(run, "log.rank0.txt"))
    assert not orphans


def test_lost_peer_ends_the_job_with_the_rank_named(tmp_path):
    # restarts off: the second node's worker (global rank 0 or 1) dies after the first checkpoint,
    # without a barrier; the first node hosts the rendezvous store, as a real job's first node does.
    # A loader worker per rank: it must not outlive its rank
    config = write_config(tmp_path, "run", **{**RUN, "dist": {"backend": "gloo", "timeout": 3.0},
                                              "data": {"num_workers": 1}})
    outputs, seconds, orphans = two_nodes(config, "--max-restarts=0", env={"ELASTIC_KILL_ONLY": "1"},
                                          second_env={"ELASTIC_KILL": "6:*"})
    assert all(rc != 0 for rc, _ in outputs)
    text = "\n".join(out for _, out in outputs)
    killed = re.search(r"ELASTIC_KILL: rank (\d) kills itself after iteration 6", text)
    assert killed, text[-3000:]
    lost = int(killed.group(1))
    assert f"error: rank {1 - lost}: a collective failed: lost rank {lost} of 2 (no answer within 3 s" in text, \
        text[-3000:]
    assert seconds < 60
    assert not orphans
    checkpoints = os.path.join(tmp_path, "run", "checkpoints")
    assert not glob.glob(os.path.join(checkpoints, ".tmp-*"))
    for path in glob.glob(os.path.join(checkpoints, "*.pth")):
        load_checkpoint(path)  # every file there is complete


def test_killed_agent_ends_its_workers(tmp_path):
    # kill -9 on torchrun's agent reaches no worker (each runs in a session of its own): they trained
    # on and wrote model_final.pth. Each now watches its agent (engine.agent) and ends within a second,
    # with its loader worker, after one line; every checkpoint on disk is complete.
    run = os.path.join(tmp_path, "run")
    config = write_config(tmp_path, "run", **{**RUN, "solver": {**RUN["solver"], "max_iter": 400, "checkpoint_period": 2},
                                              "data": {"num_workers": 1, "delay": 0.01}})
    command = torchrun_args("--nproc-per-node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
                            TASK, "--config", config)
    agents = Agents([command])
    try:
        checkpoints = os.path.join(run, "checkpoints")
        deadline = time.monotonic() + 120
        while not glob.glob(os.path.join(checkpoints, "model_*.pth")) and time.monotonic() < deadline:
            assert agents.procs[0].poll() is None, agents.procs[0].communicate()[0][-3000:]
            time.sleep(0.1)
        assert len(tagged_processes(agents.tag)) == 5  # the agent, 2 workers, their 2 loader workers
        agents.procs[0].kill()
        killed = time.monotonic()
        while tagged_processes(agents.tag) and time.monotonic() - killed < 10:
            time.sleep(0.1)
        left = tagged_processes(agents.tag)
        out = agents.procs[0].communicate()[0]
    finally:
        agents.close()
    assert not left, f"left running 10 s after the agent's death: {left}"
    for rank in (0, 1):
        assert f"error: rank {rank}: the torchrun agent that started this worker (pid {agents.procs[0].pid}) is gone" \
            in out, out[-3000:]
    assert not os.path.exists(os.path.join(run, "model_final.pth"))
    assert not glob.glob(os.path.join(checkpoints, ".tmp-*"))
    for path in glob.glob(os.path.join(checkpoints, "*.pth")):
        load_checkpoint(path)  # complete


HUNG_PEER = textwrap.dedent("""
    import os, sys, time, torch
    from engine.dist import init_distributed, reduce_sum_tensor
    from engine.launch import run_tool
    def main():
        init_distributed("gloo", timeout=2.0)
        if os.environ["RANK"] == "1":
            time.sleep(60)  # alive but never joins the collective
        reduce_sum_tensor(torch.ones(1))
    sys.exit(run_tool(main))
""")


def test_hung_peer_times_out_with_dist_timeout():
    env = {**tool_env(), "PYTHONPATH": ROOT, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    procs = [subprocess.Popen([sys.executable, "-c", HUNG_PEER], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        start = time.monotonic()
        _, err = procs[0].communicate(timeout=40)
        seconds = time.monotonic() - start
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[0].returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: rank 0: a collective failed: lost rank 1 of 2 (no answer within 2 s"), err[-3000:]
    assert "Traceback" not in err
    assert "Timed out waiting 2000ms" in last  # gloo's collective honoured dist.timeout
    assert seconds < 30  # import + rendezvous + the 2 s timeout + the 2 s roll call, not 30 minutes


DEAD_STORE_HOST = textwrap.dedent("""
    import os, sys, time, torch
    from engine.dist import init_distributed, reduce_sum_tensor
    from engine.launch import run_tool
    def main():
        init_distributed("gloo", timeout=5.0)
        reduce_sum_tensor(torch.ones(1))  # both ranks are past the process group's start
        if os.environ["RANK"] == "0":
            os.kill(os.getpid(), 9)  # rank 0 hosts the store here (no agent): it goes with it
        time.sleep(1)
        reduce_sum_tensor(torch.ones(1))
    sys.exit(run_tool(main))
""")


def test_lost_peer_that_hosted_the_store_gives_one_line_without_a_cpp_stack():
    env = {**tool_env(), "PYTHONPATH": ROOT, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    procs = [subprocess.Popen([sys.executable, "-c", DEAD_STORE_HOST], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        _, err = procs[1].communicate(timeout=60)
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[1].returncode == 1, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: rank 1: a collective failed: the rendezvous store is "
                                                   "unreachable"), err[-3000:]
    assert "frame #" not in err and "TCPStore" not in err and "Traceback" not in err, err[-3000:]


def test_restart_with_one_process_resumes_at_the_same_sample(tmp_path, reference):
    # The two-process run's checkpoint of iteration 6, continued by one process (the global batch,
    # solver.ims_per_batch, stays: the same samples follow). Not bitwise (other reduction order, the
    # RNG is reseeded): within rounding of the two-process run, as one process is of two.
    run = os.path.join(tmp_path, "run")
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns("model_0000012.pth", "model_final.pth",
                                                                  "model_best.pth", "results.json"))
    config = write_config(tmp_path, "run", **RUN)
    resumed = one_process(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    text = resumed.stderr + resumed.stdout
    assert f"resuming from {run}/checkpoints/model_0000006.pth (iteration 6)" in text
    assert "holds RNG states of 2 ranks, this run has 1: reseeding" in text
    a, b = weights(reference), weights(run)
    for name in a:
        relative = (a[name] - b[name]).norm() / a[name].norm().clamp_min(1e-12)
        assert relative < 1e-5, f"{name}: relative difference {relative:.2e}"
    assert not torch.equal(a["fc.weight"], weights(reference, "checkpoints/model_0000006.pth")["fc.weight"])
