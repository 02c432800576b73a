"""Retrain a search's best config on all of trainval and predict the test images.

``python -m trainable.final --config best.json [--data DIR] [--epochs N] [--from-checkpoint]
[--tta] [--out DIR] [--force]``

Writes into ``--out`` (default ``final/<experiment name>/``): ``model.pt`` (a checkpoint of the
final model, updated after every epoch), ``metrics.json`` and ``submission.csv`` (``Id,Category``,
one row per test image, sorted by Id). A best.json with a ``stage1`` config trains stage 1
first, into ``OUT/stage1/``, and initializes the final stage from it.

The final run has no held-out validation split. The loop's validation metrics (and the plateau
scheduler, which steps on them) are computed on a stratified sample of the training images.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainable.atomic import write_json, write_text
from trainable.checkpoint import load_checkpoint
from trainable.cli import ArgumentParser, UserError, run_main
from trainable.config import ConfigError, TrainConfig
from trainable.data import Dataset, load_dataset, stratified_split
from trainable.loop import TrainData, Trainer, fit
from trainable.train import Stage, format_epoch

logger = logging.getLogger(__name__)

MODEL_NAME = "model.pt"
METRICS_NAME = "metrics.json"
SUBMISSION_NAME = "submission.csv"
STAGE1_FOLDER = "stage1"
# Share of the training images, stratified by class, on which the final run measures its
# "validation" metrics. They are trained on too, so these metrics show fit, not generalization.
MONITOR_FRACTION = 0.05

# best.json keys and the JSON types each may have (None = null).
BEST_KEYS: dict[str, tuple[type | None, ...]] = {
    "config": (dict,),
    "stage1": (dict, None),
    "fingerprint": (str,),
    "data": (str, None),
    "experiment": (str,),
    "trial_id": (str,),
    "checkpoint": (str, None),
}


@dataclass(frozen=True)
class BestRecord:
    """The parts of a best.json (written by ``python -m results.export``) the final job uses."""

    path: Path
    config: TrainConfig
    stage1: TrainConfig | None
    fingerprint: str
    data: str | None  # dataset folder of the search; None means the embedded digits
    experiment: str
    trial_id: str
    checkpoint: str | None


def read_best(path: Path) -> BestRecord:
    """Read and validate a best.json; raise UserError naming the file and the problem."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}; check the --config path") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path} is not valid JSON ({err}); export it again with python -m results.export"
        ) from None
    if not isinstance(values, dict):
        raise UserError(f"{path} must contain a JSON object, as python -m results.export writes")

    missing = [key for key in BEST_KEYS if key not in values]
    if missing:
        raise UserError(
            f"{path} is missing the key{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))}; pass a best.json written by python -m "
            "results.export"
        )
    for key, types in BEST_KEYS.items():
        value = values[key]
        if not any(value is None if kind is None else isinstance(value, kind) for kind in types):
            expected = " or ".join("null" if kind is None else _json_type(kind) for kind in types)
            raise UserError(f"{path}: key {key!r} must be {expected}, got {value!r}")

    try:
        config = TrainConfig.from_dict(values["config"])
        stage1 = TrainConfig.from_dict(values["stage1"]) if values["stage1"] else None
    except ConfigError as err:
        raise UserError(f"{path}: {err}") from None
    return BestRecord(
        path=Path(path),
        config=config,
        stage1=stage1,
        fingerprint=values["fingerprint"],
        data=values["data"],
        experiment=values["experiment"],
        trial_id=values["trial_id"],
        checkpoint=values["checkpoint"],
    )


def _json_type(kind: type) -> str:
    return {dict: "a JSON object", str: "a string"}.get(kind, kind.__name__)


def final_train_data(dataset: Dataset, config: TrainConfig) -> TrainData:
    """Train on every trainval image; measure the loop's val metrics on a sample of them.

    NOTE: the loop has no mode without a validation split. With an empty one its val_loss is
    NaN, its val_acc 0 and the plateau scheduler would cut the learning rate every
    ``plateau_patience + 1`` epochs. A stratified sample of the training images is used instead.
    """
    train_idx = np.arange(len(dataset.labels), dtype=np.int64)
    _, monitor_idx = stratified_split(dataset.labels, MONITOR_FRACTION, config.seed)
    return TrainData(dataset.images, dataset.labels, train_idx, monitor_idx, dataset.num_classes)


def plan_stages(record: BestRecord, epochs: int | None, out: Path) -> list[Stage]:
    """Return the runs to train: stage 1 (if the search fine-tuned from one), then the final.

    ``epochs`` overrides both stages' epochs. The final stage of a two-stage recipe starts from
    the stage-1 model that this job trains, not from the search's stage-1 checkpoint.
    """
    overrides = {"epochs": epochs} if epochs is not None else {}
    final = record.config.replace(**overrides)
    if record.stage1 is None:
        return [Stage("final", final)]
    stage1 = record.stage1.replace(**overrides)
    final = final.replace(init_from=str(out / STAGE1_FOLDER / MODEL_NAME))
    return [Stage(STAGE1_FOLDER, stage1), Stage("final", final)]


def check_fingerprint(record: BestRecord, dataset: Dataset, force: bool) -> bool:
    """Return whether the dataset is the one the search ran on; raise if not, unless ``force``."""
    if dataset.fingerprint == record.fingerprint:
        return True
    searched_on = record.data or "the embedded digits"
    if not force:
        raise UserError(
            f"dataset {dataset.root} (fingerprint {dataset.fingerprint}) is not the dataset "
            f"{record.path} was searched on ({searched_on}, fingerprint {record.fingerprint}); "
            "pass that dataset with --data, or --force to train on this one anyway"
        )
    logger.warning(
        "training on %s although the search ran on %s (fingerprints %s and %s differ)",
        dataset.root,
        searched_on,
        dataset.fingerprint,
        record.fingerprint,
    )
    return False


def prepare_output(out: Path) -> None:
    """Create the output folder and check that files can be created in it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as err:
        raise UserError(
            f"output folder {out} cannot be written ({err.strerror}); choose another --out"
        ) from None


def load_trial_checkpoint(record: BestRecord, config: TrainConfig) -> dict[str, Any]:
    """Load the trial's checkpoint and check that it was trained with ``config``.

    Only ``epochs`` (which --epochs may change) and ``init_from`` (the search's stage-1 path,
    whose weights the checkpoint already contains) may differ.
    """
    if record.checkpoint is None:
        raise UserError(
            f"{record.path} has no checkpoint (Ray kept none for trial {record.trial_id}); "
            "run without --from-checkpoint to retrain from scratch"
        )
    state = load_checkpoint(record.checkpoint)
    try:
        saved = TrainConfig.from_dict(state["config"])
    except (KeyError, ConfigError) as err:
        raise UserError(f"checkpoint {record.checkpoint} has no valid config ({err})") from None
    if saved.replace(epochs=config.epochs, init_from=None) != config.replace(init_from=None):
        raise UserError(
            f"checkpoint {record.checkpoint} was trained with another config than {record.path}; "
            "export the experiment again, or run without --from-checkpoint"
        )
    return state


def train_stage(trainer: Trainer, out: Path) -> list[dict[str, float]]:
    """Train to the config's epochs with the one loop, printing and saving after each epoch."""

    def on_epoch(metrics: dict[str, float], trainer: Trainer) -> None:
        print(format_epoch(metrics, trainer.config.epochs), flush=True)
        trainer.save(out / MODEL_NAME)

    history = fit(trainer, on_epoch)
    trainer.save(out / MODEL_NAME)  # also when a resumed checkpoint had no epochs left
    return history


def predict_test(trainer: Trainer, dataset: Dataset, tta: bool) -> pd.DataFrame:
    """Return the submission table: one row per test image, sorted by Id, integer Category."""
    logits = trainer.predict_logits(dataset.test_images, tta=tta)
    categories = logits.argmax(1).numpy().astype(np.int64)
    table = pd.DataFrame({"Id": np.asarray(dataset.test_ids, dtype=str), "Category": categories})
    return table.sort_values("Id", kind="stable").reset_index(drop=True)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m trainable.final",
        description="Retrain the best config of a search on all of trainval, predict test/ "
        "and write submission.csv.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="BEST.json",
        help="the best.json that python -m results.export wrote",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="dataset folder with labels.csv, trainval/ and test/; default: the dataset "
        "best.json records",
    )
    parser.add_argument(
        "--epochs", type=int, metavar="N", help="epochs per stage (default: the config's)"
    )
    parser.add_argument(
        "--from-checkpoint",
        action="store_true",
        help="continue the trial's checkpoint up to the config's epochs instead of retraining",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="average the predictions of each test image and its horizontal flip",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: final/<experiment name>)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="train even if the dataset is not the one the search ran on",
    )
    parser.add_argument(
        "--device", help="torch device, e.g. cuda:0 or cpu (default: cuda if present)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} is invalid; pass a positive number of epochs")

    # check every input before the output folder is created
    record = read_best(args.config)
    out = args.out or Path("final") / Path(record.experiment).name
    stages = plan_stages(record, args.epochs, out)
    checkpoint_state = None
    if args.from_checkpoint:
        stages = stages[-1:]
        checkpoint_state = load_trial_checkpoint(record, stages[0].config)
    data = args.data or (Path(record.data) if record.data else None)
    dataset = load_dataset(data)
    matches = check_fingerprint(record, dataset, args.force)
    for stage in stages:
        final_train_data(dataset, stage.config)  # a class too small to sample raises DataError
    prepare_output(out)

    trainer = None
    summaries = []
    for number, stage in enumerate(stages, start=1):
        stage_out = out / STAGE1_FOLDER if stage.name == STAGE1_FOLDER else out
        config = stage.config
        if len(stages) > 1:
            print(f"stage {number}/{len(stages)}: {stage.name}, {config.epochs} epochs", flush=True)
        if checkpoint_state is not None:
            config = config.replace(init_from=None)  # the checkpoint already has those weights
        data_split = final_train_data(dataset, config)
        print(
            f"training on all {len(data_split.train_idx)} trainval images; val_loss and "
            f"val_acc are measured on {len(data_split.val_idx)} of them",
            flush=True,
        )
        trainer = Trainer(config, data_split, device=args.device)
        if checkpoint_state is not None:
            trainer.load_state_dict(checkpoint_state)
            print(
                f"continuing from {record.checkpoint} after epoch {trainer.epoch} "
                f"of {config.epochs}",
                flush=True,
            )
        history = train_stage(trainer, stage_out)
        summaries.append({"name": stage.name, "config": config.to_dict(), "epochs": history})

    submission = predict_test(trainer, dataset, args.tta)
    submission_path = out / SUBMISSION_NAME
    write_text(submission_path, submission.to_csv(index=False))
    metrics = {
        "best_json": str(args.config.resolve()),
        "experiment": record.experiment,
        "trial_id": record.trial_id,
        "dataset": str(dataset.root),
        "fingerprint": dataset.fingerprint,
        "fingerprint_matches_search": matches,
        "from_checkpoint": record.checkpoint if args.from_checkpoint else None,
        "tta": args.tta,
        "train_images": int(len(dataset.labels)),
        "val_metrics_on": "a stratified sample of the training images, also trained on",
        "test_images": int(len(submission)),
        "stages": summaries,
        "final_epoch": summaries[-1]["epochs"][-1] if summaries[-1]["epochs"] else None,
        "model": str(out / MODEL_NAME),
        "submission": str(submission_path),
    }
    write_json(out / METRICS_NAME, _finite(metrics))
    print(f"wrote {out / MODEL_NAME} and {out / METRICS_NAME}")
    print(f"wrote {submission_path} ({len(submission)} test images)")
    return 0


def _finite(value: Any) -> Any:
    """Replace NaN and infinities by None, because JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


if __name__ == "__main__":
    run_main(main)
