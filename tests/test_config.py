"""engine/config.py: typed YAML configs, _base_ inheritance, overrides, one-line errors with exit code 2."""
import dataclasses
import glob
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

import pytest

from backbones.config import BackboneConfig
from engine.config import ConfigError, SolverConfig, load_config, save_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int = 80


@dataclass
class TinyConfig:
    output_dir: str = "runs/tiny"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)


TOOL = textwrap.dedent("""
    import sys
    from dataclasses import dataclass, field
    from engine.cli import default_argument_parser, parse_config
    from backbones.config import BackboneConfig
    from engine.config import SolverConfig, to_yaml

    @dataclass
    class ModelConfig:
        backbone: BackboneConfig = field(default_factory=BackboneConfig)
        num_classes: int = 80

    @dataclass
    class TinyConfig:
        output_dir: str = "runs/tiny"
        seed: int = 0
        model: ModelConfig = field(default_factory=ModelConfig)
        solver: SolverConfig = field(default_factory=SolverConfig)

    args = default_argument_parser("tiny").parse_args()
    cfg = parse_config(TinyConfig, args.config, args.overrides)
    print("OK", cfg.model.backbone.name, cfg.solver.base_lr)
""")


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def run_tool(tmp_path, *args):
    tool = tmp_path / "tool.py"
    tool.write_text(TOOL)
    return subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True, timeout=60)


def test_tool_exit_codes_and_one_line_messages(tmp_path):
    good = write(tmp_path / "good.yaml", """
        model:
          backbone: {name: resnet18}
        solver: {base_lr: 0.02}
    """)
    bad_key = write(tmp_path / "bad_key.yaml", """
        model:
          backbone: {nmae: resnet18}
    """)
    bad_type = write(tmp_path / "bad_type.yaml", """
        solver: {max_iter: many}
    """)
    cases = [
        ((good,), 0, None),
        ((bad_key,), 2, "error: unknown key 'model.backbone.nmae' (closest valid: name"),
        ((bad_type,), 2, "error: solver.max_iter: expected int, got str 'many'"),
        ((str(tmp_path / "missing.yaml"),), 2, f"error: config file not found: {tmp_path / 'missing.yaml'}"),
        ((good, "solver.base_lr=fast"), 2, "error: solver.base_lr: expected float, got str 'fast'"),
        ((good, "model.backbone.norm=XN"), 2, "error: model.backbone.norm: 'XN' is not a valid value"),
    ]
    for (config, *overrides), code, message in cases:
        result = run_tool(tmp_path, "--config", config, *overrides)
        assert result.returncode == code, (config, result.stderr)
        if code == 0:
            assert result.stdout.strip() == "OK resnet18 0.02"
        else:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(message), result.stderr
            assert result.stdout == ""  # stopped before any work


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "bases").mkdir()
    write(tmp_path / "bases" / "schedule.yaml", """
        solver: {base_lr: 0.1, max_iter: 100, steps: [50, 80], warmup_iters: 10}
    """)
    write(tmp_path / "bases" / "model.yaml", """
        model:
          backbone: {name: resnet50, dilation: [1, 2]}
          num_classes: 10
    """)
    child = write(tmp_path / "child.yaml", """
        _base_: [bases/schedule.yaml, bases/model.yaml]
        solver: {max_iter: 200, steps: [150]}
        model:
          backbone: {norm: FrozenBN}
    """)
    cfg = load_config(TinyConfig, child, ["solver.base_lr=0.02", "model.backbone.out_features=[res4]",
                                          "model.backbone.stride_in_1x1=true", "seed=7"])
    assert cfg.solver.base_lr == 0.02 and cfg.solver.max_iter == 200 and cfg.solver.warmup_iters == 10
    assert cfg.solver.steps == [150]  # lists replace, they do not merge element-wise
    assert cfg.model.backbone.name == "resnet50" and cfg.model.backbone.norm == "FrozenBN"
    assert cfg.model.backbone.dilation == [1, 2] and cfg.model.backbone.out_features == ["res4"]
    assert cfg.model.backbone.stride_in_1x1 is True and cfg.seed == 7 and cfg.model.num_classes == 10
    assert isinstance(cfg.model.backbone, BackboneConfig)

    # YAML 1.1 reads `off` as a boolean: a string option still gets the word the user typed
    assert load_config(TinyConfig, child, ["solver.amp=off"]).solver.amp == "off"
    with pytest.raises(ConfigError, match="solver.amp"):
        load_config(TinyConfig, child, ["solver.amp=on"])  # and "on" is not an amp mode

    # the resolved config saved with a run loads back to the same thing
    save_config(cfg, str(tmp_path / "run" / "config.yaml"))
    assert load_config(TinyConfig, str(tmp_path / "run" / "config.yaml")) == cfg


def test_errors(tmp_path):
    cycle_a = write(tmp_path / "a.yaml", "_base_: b.yaml\nseed: 1\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(TinyConfig, cycle_a)
    no_base = write(tmp_path / "c.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="_base_ file not found: nowhere.yaml"):
        load_config(TinyConfig, no_base)
    with pytest.raises(ConfigError, match=r"unknown key 'solver.bse_lr' \(closest valid: base_lr"):
        load_config(TinyConfig, None, ["solver.bse_lr=0.1"])
    with pytest.raises(ConfigError, match="model.backbone.dilation"):
        load_config(TinyConfig, None, ["model.backbone.dilation=[3, 3]"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(TinyConfig, None, ["seed"])
    with pytest.raises(ConfigError, match="seed: expected int, got bool"):
        load_config(TinyConfig, None, ["seed=true"])
    broken = write(tmp_path / "broken.yaml", "model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml line .*not valid YAML"):
        load_config(TinyConfig, broken)


# Every YAML shipped in configs/ loads against its task's schema (the vocabulary did not change when
# the task configs came to share engine.config.RunConfig and backbones.config.BackboneConfig).
def _schema_of(path):
    from classification.config import ClsConfig
    from detection.config import DetConfig
    from segmentation.config import SegConfig

    group, name = path.split(os.sep)[-2:] if "_base_" not in path else path.split(os.sep)[-3:-1]
    if group == "demo":
        group = {"shapes_cls.yaml": "classification", "shapes_mask_rcnn.yaml": "detection",
                 "shapes_semantic.yaml": "segmentation"}[name]
    return {"classification": ClsConfig, "detection": DetConfig, "segmentation": SegConfig}[group]


SHIPPED = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_every_shipped_config_loads(path):
    from engine.config import RunConfig

    schema = _schema_of(path)
    overrides = []
    for _ in range(3):  # weights files named by example configs are the user's to provide
        try:
            cfg = load_config(schema, path, overrides)
            break
        except ConfigError as e:
            key = str(e).split(":")[0]
            if "file not found" not in str(e) or not key.endswith("weights"):
                raise
            overrides.append(f"{key}=null")
    assert isinstance(cfg, RunConfig) and cfg.dist.backend == "auto" and cfg.dist.timeout == 1800.0
    with pytest.raises(ConfigError, match=r"^unknown key 'model.backbone.nmae' \(closest valid: name"):
        load_config(schema, path, overrides + ["model.backbone.nmae=resnet18"])


def test_task_configs_share_one_header():
    from classification.config import ClsConfig
    from detection.config import DetConfig
    from engine.config import DistConfig, RunConfig
    from segmentation.config import SegConfig

    header = [f.name for f in dataclasses.fields(RunConfig)]
    assert header == ["output_dir", "seed", "deterministic", "solver", "test", "logging", "dist"]
    for schema, out, lr in ((DetConfig, "runs/detection", 0.02), (SegConfig, "runs/segmentation", 0.02),
                            (ClsConfig, "runs/classification", 0.1)):
        assert issubclass(schema, RunConfig)
        cfg = schema()
        assert cfg.output_dir == out and cfg.solver.base_lr == lr and cfg.dist == DistConfig()
    cfg = load_config(DetConfig, None, ["dist.backend=gloo", "dist.timeout=60"])
    assert (cfg.dist.backend, cfg.dist.timeout) == ("gloo", 60.0)
    with pytest.raises(ConfigError, match=r"dist.backend: 'mpi' is not a valid value"):
        load_config(DetConfig, None, ["dist.backend=mpi"])
    with pytest.raises(ConfigError, match="dist.timeout"):
        load_config(SegConfig, None, ["dist.timeout=0"])
