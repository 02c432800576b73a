"""Render the results of a benchmark run as a text table and as BENCHMARKS.md."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import Outcome, Row


def format_value(row: Row) -> str:
    if row.unit in ("images/s", "MiB"):
        return f"{row.value:,.0f} {row.unit}"
    if row.unit == "s":
        return f"{row.value:,.2f} s"
    if row.unit == "x":
        return f"{row.value:.2f}x"
    return f"{row.value:.4g}"


def status(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "MISSED"


def text_table(outcomes: list[Outcome]) -> str:
    """Return the results as a fixed-width table for the terminal."""
    lines = [f"{'measurement':<48} {'value':>14}  {'target':<9} {'':<6} detail"]
    for outcome in outcomes:
        for row in outcome.rows:
            lines.append(
                f"{row.name:<48} {format_value(row):>14}  {row.target:<9} {status(row):<6} "
                f"{row.detail}"
            )
    return "\n".join(lines)


def markdown_table(outcomes: list[Outcome]) -> str:
    lines = ["| measurement | value | target | status | detail |", "|---|---|---|---|---|"]
    for outcome in outcomes:
        for row in outcome.rows:
            name = f"`{row.name}`" if row.target else row.name
            lines.append(
                f"| {name} | {format_value(row)} | {row.target} | {status(row)} | {row.detail} |"
            )
    return "\n".join(lines)


def markdown(
    outcomes: list[Outcome],
    command: str,
    machine: dict[str, Any],
    load: str,
    keys: dict[str, Any],
    total_seconds: float,
    json_text: str,
) -> str:
    """Return BENCHMARKS.md for a run: command, machine, table, then each measurement."""
    parts = [
        "# Benchmarks",
        "",
        "Written by `benchmarks/run.py`; rerun it to refresh this page. Every value is the "
        "median of the repetitions stated under its measurement.",
        "",
        f"- Command: `{command}`",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}, {total_seconds / 60:.1f} minutes",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB "
        f"memory, no GPU; Python {machine['python']}, torch {machine['torch']}, torchvision "
        f"{machine['torchvision']}, Ray {machine['ray']}",
        f"- 1-minute load average during the run: {load}. Other jobs shared this machine, so "
        "absolute images/s scatter; each ratio compares sides measured alternately.",
        "",
        "## Results",
        "",
        markdown_table(outcomes),
        "",
        "The last line that the run printed:",
        "",
        "```",
        json_text,
        "```",
        "",
    ]
    missed = [outcome for outcome in outcomes if outcome.missed]
    if missed:
        names = ", ".join(f"`{row.name}`" for o in missed for row in o.rows if row.met is False)
        parts += [f"Missed targets: {names}. Their sections show a profile and the bound.", ""]

    for outcome in outcomes:
        parts += [f"## {outcome.title}", "", outcome.method, ""]
        for note in outcome.notes:
            parts += [note, ""]
        if outcome.missed:
            parts += [f"Target missed. Bound: {outcome.bound}.", ""]
        if outcome.profile:
            parts += ["```", outcome.profile.rstrip(), "```", ""]
    parts += [GPU_SECTION, ""]
    return "\n".join(parts)


GPU_SECTION = """## GPU check

`benchmarks/gpu_check.sh` prints images/s of ModResNet18 (depth 18, cifar stem) and ResNet50
(cifar stem) at 40x40, batch 256, on one NVIDIA GPU: our path (Trainer with bf16 autocast,
channels_last, the dataset uploaded to the GPU and batched augmentation) and the report-style
path (DataLoader, PIL and torchvision transforms, fp32), with torch.cuda.max_memory_allocated.
It generates its own data, installs nothing and stops with an error where no GPU is visible.
No GPU was available for this page, so it has not run on one; its Python part was run on the CPU
with `--device cpu --tiny`."""
