"""Memory of a process tree from /proc (Linux): PSS, private and RSS of a process and its descendants.

PSS (proportional set size) counts a page shared by k processes as 1/k in each, so the PSS of a
whole tree sums to the memory the tree really holds; a forked DataLoader worker's private memory
(Private_Clean + Private_Dirty) is what it copied from its parent (copy-on-write, and copy-on-read
for Python objects whose reference counts change). Read from ``/proc/<pid>/smaps_rollup``.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional


def parents() -> Dict[int, int]:
    """{pid: parent pid} of every process now."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                text = f.read()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: the parent pid follows the last ')'
        fields = text[text.rfind(b")") + 2:].split()
        out[int(name)] = int(fields[1])
    return out


def children_of(pid: int, table: Optional[Dict[int, int]] = None) -> List[int]:
    table = parents() if table is None else table
    return sorted(p for p, parent in table.items() if parent == pid)


def descendants(pid: int, table: Optional[Dict[int, int]] = None) -> List[int]:
    table = parents() if table is None else table
    found, todo = [], [pid]
    while todo:
        kids = [p for p, parent in table.items() if parent in todo]
        found += kids
        todo = kids
    return found


def rollup(pid: int) -> Optional[Dict[str, int]]:
    """{Rss, Pss, Private_Clean, Private_Dirty, ...} in bytes, or None for a process that is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "r") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
            out[parts[0][:-1]] = int(parts[1]) * 1024
    out["Private"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def tree_memory(root: int) -> Dict[str, object]:
    """PSS of the tree rooted at ``root`` and each process's numbers, with its depth below the root
    (torchrun: 0 the agent, 1 the ranks, 2 their loader workers)."""
    table = parents()
    depth = {root: 0}
    todo = [root]
    while todo:
        nxt = []
        for p, parent in table.items():
            if parent in todo and p not in depth:
                depth[p] = depth[parent] + 1
                nxt.append(p)
        todo = nxt
    processes = {}
    for pid, d in depth.items():
        r = rollup(pid)
        if r is not None:
            processes[pid] = dict(r, depth=d, parent=table.get(pid, 0))
    return {"pss": sum(p.get("Pss", 0) for p in processes.values()), "processes": processes}
