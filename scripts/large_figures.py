"""Figures of a task count real data sets have (65 tasks, like exam; 3 layers of 32 hinges).

Writes a reference-format state_dict (``<layer>.alpha`` (T, M), ``<layer>.basis`` (1, M), as an
imported reference TAAN model looks) whose tasks share activations in nested groups (1, 4 and 13
groups with depth) with small task-specific noise, then draws it with taan-viz like any imported
model. `make demo` runs it through scripts/readme_figures.sh.

Usage: python scripts/large_figures.py OUT [--tasks 65]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def reference_state_dict(num_tasks: int, groups_per_layer=(1, 4, 13), num_hinges: int = 32, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for l, count in enumerate(groups_per_layer):
        group = torch.arange(num_tasks) * count // num_tasks
        centres = 0.6 * torch.randn(count, num_hinges, generator=gen)
        state[f"layer{l + 1}.weight"] = torch.randn(8, 8, generator=gen)
        state[f"layer{l + 1}.alpha"] = centres[group] + 0.04 * torch.randn(num_tasks, num_hinges, generator=gen)
        state[f"layer{l + 1}.basis"] = torch.linspace(-2.0, 2.0, num_hinges).reshape(1, num_hinges)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tasks", type=int, default=65)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(reference_state_dict(args.tasks), args.out / f"reference-{args.tasks}-tasks.pt")


if __name__ == "__main__":
    main()
