"""Print the backbone zoo: parameters and multiply-adds of every network, beside the paper's figures.

ImageNet networks are counted at 224x224 with the stride in the 3x3 (torchvision's) and in the first
1x1 (the paper's, ``stride_in_1x1=True``); the paper's Table 1 "FLOPs" are multiply-adds of the latter.
CIFAR networks are counted at 32x32 with option A shortcuts, beside Table 6's parameter counts.
Models are built on the meta device, so the whole table takes seconds.

    python tools/backbone_zoo.py [--markdown]
"""
from __future__ import annotations

import argparse

import torch

from backbones import available_networks, build_classifier
from backbones.flops import count_macs, count_parameters

# He et al. 2015, Table 1 (multiply-adds, x10^9) and Table 6 (parameters, millions).
PAPER_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3,
               "plain18": 1.8, "plain34": 3.6}
PAPER_CIFAR_PARAMS_M = {"cifar_resnet20": 0.27, "cifar_resnet32": 0.46, "cifar_resnet44": 0.66,
                        "cifar_resnet56": 0.85, "cifar_resnet110": 1.7, "cifar_resnet1202": 19.4,
                        "cifar_plain20": 0.27, "cifar_plain32": 0.46, "cifar_plain44": 0.66,
                        "cifar_plain56": 0.85, "cifar_plain110": 1.7}


def zoo_rows():
    rows = []
    for name in available_networks():
        cifar = name.startswith("cifar_")
        with torch.device("meta"):
            model = build_classifier(name, 10 if cifar else 1000)
            msra = None if cifar else build_classifier(name, 1000, stride_in_1x1=True)
        size = (1, 3, 32, 32) if cifar else (1, 3, 224, 224)
        params = count_parameters(model)
        if cifar:
            paper = PAPER_CIFAR_PARAMS_M.get(name)
            rows.append([name, f"{params / 1e6:.3f}M", "32", f"{count_macs(model, size) / 1e6:.1f}M", "—",
                         f"{paper}M params" if paper else "—"])
        else:
            paper = PAPER_GMACS.get(name)
            rows.append([name, f"{params / 1e6:.2f}M", "224", f"{count_macs(model, size) / 1e9:.2f}G",
                         f"{count_macs(msra, size) / 1e9:.2f}G", f"{paper}G MACs" if paper else "—"])
    return rows


HEADER = ["network", "params", "input", "mult-adds", "mult-adds (stride in 1x1)", "paper"]


def format_table(rows, markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in rows + [HEADER]) for i in range(len(HEADER))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*HEADER), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Parameters and multiply-adds of every network")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    print(format_table(zoo_rows(), args.markdown))


if __name__ == "__main__":
    main()
