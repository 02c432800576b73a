"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain values (no pickled objects), so loading one cannot
run code. Model weights are saved from the uncompiled module, so ``torch.compile`` does not change
the file format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainable.atomic import write_atomic
from trainable.errors import UserError

FORMAT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or does not fit the model. One line, names the file."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint dict atomically."""
    write_atomic(path, lambda file: torch.save({"format": FORMAT_VERSION, **state}, file))


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, zipfile errors
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({reason[:160]}); "
            "delete it to fall back to an earlier checkpoint, or retrain"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "model" not in state:
        raise CheckpointError(
            f"checkpoint {path} is not a checkpoint of this tool (format {FORMAT_VERSION} expected)"
        )
    return state
