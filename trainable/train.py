"""Train one configuration without Ray: ``python -m trainable.train --preset NAME``.

Writes into ``--out``: ``config.json``, ``metrics.jsonl`` (one JSON object per epoch) and
``checkpoint.pt`` (the latest epoch, enough to resume). A preset that fine-tunes from a stage-1
preset trains that stage first, into ``OUT/stage1``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainable.atomic import write_text
from trainable.cli import ArgumentParser, UserError, run_main
from trainable.config import ConfigError, TrainConfig
from trainable.data import Dataset, load_dataset, stratified_split
from trainable.loop import TrainData, Trainer, fit
from trainable.presets import PRESETS, get_preset

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class Stage:
    """One training run of a recipe; a fine-tune stage is initialized from the stage before it."""

    name: str
    config: TrainConfig


def read_config_file(path: Path) -> dict:
    """Read a JSON object of hyperparameters (all or some keys of TrainConfig)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(
            f"cannot read config file {path}: {err.strerror}; check the path"
        ) from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {path} is not valid JSON ({err}); fix the file") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must contain a JSON object of hyperparameters")
    return values


def resolve_stages(
    preset: str | None, file_values: dict | None = None, overrides: dict | None = None
) -> list[Stage]:
    """Return the runs to train: the preset (or defaults) updated by the file, then overrides.

    A preset with a stage-1 preset yields two stages. Overrides (such as ``epochs``) apply to both.
    """
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    values = get_preset(preset).config.to_dict() if preset else TrainConfig().to_dict()
    values.update(file_values or {})
    values.update(overrides)
    final = TrainConfig.from_dict(values)

    stage1 = get_preset(preset).stage1 if preset else None
    if stage1 is None or final.init_from:
        return [Stage(preset or "config", final)]
    first = get_preset(stage1).config.replace(**overrides)
    return [Stage(stage1, first), Stage(preset, final)]


def make_train_data(dataset: Dataset, config: TrainConfig) -> TrainData:
    train_idx, val_idx = stratified_split(dataset.labels, config.val_fraction, config.seed)
    return TrainData(dataset.images, dataset.labels, train_idx, val_idx, dataset.num_classes)


def format_epoch(metrics: dict[str, float], epochs: int) -> str:
    """Format one epoch's metrics as the fixed-format line every command prints."""
    return (
        f"epoch {metrics['epoch']:>3}/{epochs}  "
        f"train_loss {metrics['train_loss']:.4f}  train_acc {metrics['train_acc']:.4f}  "
        f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_acc']:.4f}  "
        f"lr {metrics['lr']:.3g}  {metrics['epoch_seconds']:.1f} s  "
        f"{metrics['images_per_second']:.0f} img/s"
    )


def train_into(trainer: Trainer, out: Path) -> list[dict[str, float]]:
    """Run ``fit`` and keep ``out`` current after every epoch: metrics, then the checkpoint."""
    write_text(out / CONFIG_NAME, trainer.config.to_json() + "\n")

    def on_epoch(metrics: dict[str, float], trainer: Trainer) -> None:
        print(format_epoch(metrics, trainer.config.epochs), flush=True)
        lines = "".join(json.dumps(row) + "\n" for row in trainer.history)
        write_text(out / METRICS_NAME, lines)
        trainer.save(out / CHECKPOINT_NAME)

    return fit(trainer, on_epoch)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m trainable.train",
        description="Train one configuration of the ResNet family without Ray.",
    )
    parser.add_argument(
        "--preset",
        help=f"a run of the reference report by name: {', '.join(PRESETS)}. "
        "Without it, the config starts from the defaults of TrainConfig",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.json",
        help="a JSON object of hyperparameters that overrides the preset's values "
        "(a best.json from a search works too: its 'config' entry is used)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="dataset folder with labels.csv, trainval/ and test/; default: the embedded digits",
    )
    parser.add_argument("--epochs", type=int, metavar="N", help="number of epochs to train")
    parser.add_argument("--seed", type=int, help="random seed of the split, init and augmentation")
    parser.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="warm start: initialize the weights from this checkpoint (same architecture)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder for config.json, metrics.jsonl and checkpoint.pt "
        "(default: runs/train/PRESET)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    parser.add_argument(
        "--device", help="torch device, e.g. cuda:0 or cpu (default: cuda if present)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="compile the model with torch.compile"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} is invalid; pass a positive number of epochs")
    file_values = read_config_file(args.config) if args.config else None
    if file_values is not None and isinstance(file_values.get("config"), dict):
        file_values = file_values["config"]  # an exported best.json
    stages = resolve_stages(
        args.preset,
        file_values,
        {"epochs": args.epochs, "seed": args.seed, "init_from": args.init_from},
    )
    out = args.out or Path("runs/train") / (args.preset or "config")
    checkpoint = out / CHECKPOINT_NAME
    if checkpoint.exists() and not args.resume:
        raise UserError(
            f"output folder {out} already contains a run; pass --resume to continue it "
            "or choose another --out"
        )
    if args.resume and not checkpoint.exists():
        raise UserError(f"nothing to resume: {checkpoint} not found; run without --resume")

    dataset = load_dataset(args.data)
    logger.info(
        "dataset %s: %d trainval images of %dx%d, %d classes, %d test images",
        dataset.root,
        len(dataset.labels),
        dataset.images.shape[2],
        dataset.images.shape[1],
        dataset.num_classes,
        len(dataset.test_ids),
    )
    for number, stage in enumerate(stages, start=1):
        last = number == len(stages)
        stage_out = out if last else out / "stage1"
        config = stage.config
        if last and len(stages) > 1:
            config = config.replace(init_from=str(out / "stage1" / CHECKPOINT_NAME))
        if len(stages) > 1:
            print(f"stage {number}/{len(stages)}: {stage.name}", flush=True)
        trainer = Trainer(
            config, make_train_data(dataset, config), device=args.device, compile_model=args.compile
        )
        if (stage_out / CHECKPOINT_NAME).exists() and args.resume:
            trainer.resume(stage_out / CHECKPOINT_NAME)
        train_into(trainer, stage_out)
    print(f"wrote {out / CHECKPOINT_NAME}, {out / METRICS_NAME} and {out / CONFIG_NAME}")
    return 0


if __name__ == "__main__":
    run_main(main)
