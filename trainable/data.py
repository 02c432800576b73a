"""Read a competition-layout image dataset, validate it and cache its decoded pixels.

A dataset folder contains `labels.csv` (columns `Id,Category`), `trainval/` with the labeled
images and `test/` with the images to predict. Images are decoded once to uint8 arrays of shape
(N, H, W, 3) under `cache_dir/datasets/<fingerprint>/` and memory-mapped on later loads.
Without a folder, `load_dataset` uses scikit-learn's handwritten digits, written once in the
same layout.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import struct
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from trainable.errors import UserError

logger = logging.getLogger(__name__)

# Part of the fingerprint: bump it when the decoded arrays or meta.json change meaning.
CACHE_FORMAT_VERSION = 1

# Extensions tried, case-insensitively, for an Id given without one.
ID_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Below this many images a process pool rarely pays off, because each spawned worker first
# spends about 0.5 s importing numpy, pandas and PIL.
# NOTE: an estimate from 40x40 JPEGs, which decode in about 0.2 ms each on one core. Larger
# images break even with fewer.
PARALLEL_MIN_IMAGES = 4000
CHUNK_SIZE = 500

# A class id above this is almost certainly an Id or a value from another column, not one of
# a million classes.
MAX_CATEGORY = 1_000_000

DIGITS_TEST_COUNT = 297
# Each load_digits pixel counts the set pixels (0..16) in a 4x4 block of a 32x32 bitmap.
DIGITS_MAX_VALUE = 16

# PIL can raise any of these for a file that is not a valid image.
_IMAGE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


class DataError(UserError):
    """Bad dataset input.

    str(err) is one line that names the file, row or value and states how to fix it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\r", " ").replace("\n", " "))


@dataclass(frozen=True, eq=False)
class Dataset:
    """A decoded dataset, with its arrays memory-mapped read-only from the cache.

    `root` is the folder as given (for the digits, `cache_dir/digits`). `ids` are the trainval
    Ids in labels.csv order, `test_ids` are sorted. `images` and `test_images` are uint8
    (N, H, W, 3). `fingerprint` names the cache folder. `eq=False` because comparing arrays
    elementwise has no single truth value.
    """

    root: Path
    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    test_ids: np.ndarray
    test_images: np.ndarray
    num_classes: int
    fingerprint: str


@dataclass(frozen=True)
class _Layout:
    """Files to decode, in order, with their labels, test Ids and fingerprint."""

    labels_path: Path
    ids: list[str]
    labels: np.ndarray
    train_paths: list[str]
    test_ids: list[str]
    test_paths: list[str]
    fingerprint: str


# --- cache folder and the embedded digits ------------------------------------------------------


def default_cache_dir() -> Path:
    """Return $RESNET_SEARCH_CACHE, else $XDG_CACHE_HOME/resnet-search, else ~/.cache/resnet-search.

    An empty variable counts as unset.
    """
    explicit = os.environ.get("RESNET_SEARCH_CACHE")
    if explicit:
        return Path(explicit).expanduser()

    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "resnet-search"

    return Path.home() / ".cache" / "resnet-search"


def digits_root(cache_dir: Path | None = None) -> Path:
    """Write scikit-learn's digits in the competition layout once and return that folder.

    The folder is `cache_dir/digits/` with 1,500 trainval and 297 test PNGs (8x8 grayscale,
    a stratified split with a fixed seed), `labels.csv` and `test_answers.csv`. It is built in
    a temporary folder and renamed into place, so a process that loses a race to create it
    discards its copy and uses the winner's.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = cache_dir / "digits"
    if folder.is_dir():
        return folder

    temp = _make_temp_dir(cache_dir, "digits")
    try:
        _write_digits(temp)
        if _rename_into_place(temp, folder):
            logger.info("Wrote the digits dataset to %s", folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return folder


def digits_answers_path(cache_dir: Path | None = None) -> Path:
    """Return the path of the digits' test labels, test_answers.csv, writing the digits if needed.

    Its columns are Id,Category. It sits beside `test/`, not in it, and `load_dataset` never
    reads it.
    """
    return digits_root(cache_dir) / "test_answers.csv"


def _write_digits(folder: Path) -> None:
    # Imported here because it takes 1-2 s and only the digits need it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / DIGITS_MAX_VALUE)).astype(np.uint8)
    train_pixels, test_pixels, train_labels, test_labels = train_test_split(
        pixels,
        digits.target,
        test_size=DIGITS_TEST_COUNT,
        stratify=digits.target,
        random_state=0,
    )

    for split, split_pixels, split_labels, csv_name in (
        ("trainval", train_pixels, train_labels, "labels.csv"),
        ("test", test_pixels, test_labels, "test_answers.csv"),
    ):
        (folder / split).mkdir()
        ids = [f"{split}_{index:04d}" for index in range(len(split_pixels))]
        for image_id, image in zip(ids, split_pixels, strict=True):
            Image.fromarray(image, mode="L").save(folder / split / f"{image_id}.png")
        table = pd.DataFrame({"Id": ids, "Category": split_labels.astype(np.int64)})
        table.to_csv(folder / csv_name, index=False)


def _make_temp_dir(parent: Path, name: str) -> Path:
    # A unique hidden sibling of the final folder, on the same file system so rename is atomic.
    # Unlike tempfile.mkdtemp it keeps the umask's permissions, so a shared cache stays readable.
    # NOTE: a process killed before its cleanup (SIGKILL, power loss) leaves this folder behind,
    # and nothing removes it later.
    parent.mkdir(parents=True, exist_ok=True)
    temp = parent / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    return temp


def _rename_into_place(temp: Path, folder: Path) -> bool:
    """Rename `temp` to `folder` and return True, or return False if another process was first."""
    try:
        os.rename(temp, folder)
    except OSError:
        # Another process renamed its complete copy first. Keep theirs.
        if not folder.is_dir():
            raise
        logger.debug("%s was created by another process, discarding %s", folder, temp)
        return False
    return True


# --- cheap checks: folders, labels.csv, file names ---------------------------------------------


def check_layout(root: Path) -> None:
    """Raise DataError unless `root` looks like a readable dataset folder.

    Checks the folders, labels.csv and that every Id has an image, without decoding any image,
    so it is cheap enough to call before Ray starts.
    """
    _scan_layout(Path(root).expanduser())


def _scan_layout(root: Path) -> _Layout:
    if not root.exists():
        raise DataError(
            f"Dataset folder {root} not found. "
            "Pass the folder that contains labels.csv, trainval/ and test/."
        )
    if not root.is_dir():
        raise DataError(
            f"Dataset path {root} is not a folder. "
            "Pass the folder that contains labels.csv, trainval/ and test/."
        )

    labels_path = root / "labels.csv"
    if not labels_path.is_file():
        raise DataError(
            f"{labels_path} not found. "
            "The dataset folder must contain labels.csv with the columns Id,Category."
        )
    train_dir, train_entries = _find_image_dir(root, "trainval")
    test_dir, test_entries = _find_image_dir(root, "test")

    ids, labels, lines = _read_labels(labels_path)
    if not train_entries:
        raise DataError(
            f"Image folder {train_dir} contains no images. "
            "Put the training images there, named by the Id column of labels.csv."
        )
    if not test_entries:
        raise DataError(
            f"Image folder {test_dir} contains no images. Put the images to predict there."
        )

    train_names, ids_have_extensions = _resolve_ids(
        ids, lines, labels_path, train_dir, train_entries
    )
    test_ids, test_names = _name_test_images(test_dir, test_entries, ids_have_extensions)

    fingerprint = _fingerprint(
        root, labels_path, [(train_dir, train_entries), (test_dir, test_entries)]
    )
    return _Layout(
        labels_path=labels_path,
        ids=ids,
        labels=labels,
        train_paths=[os.path.join(train_dir, name) for name in train_names],
        test_ids=test_ids,
        test_paths=[os.path.join(test_dir, name) for name in test_names],
        fingerprint=fingerprint,
    )


def _find_image_dir(root: Path, name: str) -> tuple[Path, list[os.DirEntry]]:
    folder = root / name
    if not folder.is_dir():
        raise DataError(
            f"Image folder {folder} not found. "
            f"The dataset folder must contain {name}/ next to labels.csv."
        )

    entries = _list_images(folder)
    nested = folder / name
    # The Kaggle archive unpacks to trainval/trainval/ and test/test/.
    if not entries and nested.is_dir():
        return nested, _list_images(nested)
    return folder, entries


def _list_images(folder: Path) -> list[os.DirEntry]:
    """List the non-hidden files whose extension PIL reads, or that have no extension."""
    readable = Image.registered_extensions()
    entries = []
    skipped = []
    with os.scandir(folder) as scan:
        for entry in scan:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            suffix = _split_extension(entry.name)[1].lower()
            if suffix and suffix not in readable:
                skipped.append(entry.name)
                continue
            entries.append(entry)

    if skipped:
        logger.warning(
            "Ignoring %d files in %s that are not images by extension, e.g. %r",
            len(skipped),
            folder,
            skipped[0],
        )
    entries.sort(key=lambda entry: entry.name)
    return entries


def _split_extension(name: str) -> tuple[str, str]:
    # Same result as os.path.splitext for a bare file name, but without its path handling,
    # which measurably slowed a cached load of 100,000 images.
    leading_dots = len(name) - len(name.lstrip("."))
    dot = name.rfind(".")
    if dot <= leading_dots:
        return name, ""
    return name[:dot], name[dot:]


def _read_labels(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Parse labels.csv into Ids, int64 labels and each row's line number in the file."""
    empty_message = f"{path} is empty. Write the header Id,Category and one row per training image."
    if path.stat().st_size == 0:
        raise DataError(empty_message)
    try:
        # Blank lines are kept and dropped below, so that index + 2 is the line number.
        table = pd.read_csv(
            path, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig"
        )
    except pd.errors.EmptyDataError:
        raise DataError(empty_message) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(
            f"{path} is not a valid CSV file ({_describe(err)}). "
            "Write it as UTF-8 text with the header Id,Category."
        ) from None

    table.columns = [str(column).strip() for column in table.columns]
    for column in ("Id", "Category"):
        if column not in table.columns:
            found = ", ".join(repr(name) for name in table.columns)
            raise DataError(
                f"{path} has no {column!r} column (found {found}). "
                "The header line must be Id,Category."
            )

    table = table[["Id", "Category"]]
    table.insert(0, "line", table.index + 2)
    categories = table["Category"].str.strip()
    table = table[(table["Id"] != "") | (categories != "")]
    categories = categories[table.index]
    if table.empty:
        raise DataError(
            f"{path} has a header but no rows. Add one Id,Category row per training image."
        )

    empty_ids = table[table["Id"] == ""]
    if not empty_ids.empty:
        line = empty_ids["line"].iloc[0]
        raise DataError(
            f"{path} line {line}: the Id is empty. Fill in the image name or delete the row."
        )

    duplicated = table[table["Id"].duplicated(keep=False)]
    if not duplicated.empty:
        image_id = duplicated["Id"].iloc[0]
        lines = duplicated.loc[duplicated["Id"] == image_id, "line"].tolist()
        raise DataError(
            f"{path} lines {lines[0]} and {lines[1]}: duplicate Id {image_id!r}. "
            "Keep one row per image."
        )

    labels = _parse_categories(path, table, categories)
    return table["Id"].tolist(), labels, table["line"].to_numpy()


def _parse_categories(path: Path, table: pd.DataFrame, categories: pd.Series) -> np.ndarray:
    is_integer = categories.str.fullmatch(r"\d+")
    if not is_integer.all():
        row = table[~is_integer].iloc[0]
        value = categories[~is_integer].iloc[0]
        problem = "is negative" if re.fullmatch(r"-\d+", value) else "is not an integer"
        raise DataError(
            f"{path} line {row['line']}: Category {value!r} of Id {row['Id']!r} {problem}. "
            "Class ids must be whole numbers 0, 1, 2, ..."
        )

    # Compare lengths before converting, so that astype cannot overflow int64.
    short = categories.str.lstrip("0").str.len() <= len(str(MAX_CATEGORY))
    labels = np.full(len(categories), MAX_CATEGORY + 1, dtype=np.int64)
    labels[short.to_numpy()] = categories[short].astype(np.int64).to_numpy()
    if labels.max() > MAX_CATEGORY:
        position = int(np.argmax(labels > MAX_CATEGORY))
        row = table.iloc[position]
        raise DataError(
            f"{path} line {row['line']}: Category {categories.iloc[position]!r} of Id "
            f"{row['Id']!r} is larger than {MAX_CATEGORY:,}. "
            "Check that the Category column contains class ids."
        )
    return labels


def _resolve_ids(
    ids: list[str],
    lines: np.ndarray,
    labels_path: Path,
    folder: Path,
    entries: list[os.DirEntry],
) -> tuple[list[str], bool]:
    """Find each Id's file name in `folder` and report whether every Id was a full file name.

    An Id matches a file name exactly, or else a file named Id plus one of ID_EXTENSIONS in any
    letter case.
    """
    names = {entry.name for entry in entries}
    by_stem: dict[str, list[str]] = collections.defaultdict(list)
    for name in names:
        stem, suffix = _split_extension(name)
        if suffix.lower() in ID_EXTENSIONS:
            by_stem[stem].append(name)

    resolved = []
    missing = []
    all_exact = True
    for row, image_id in enumerate(ids):
        if image_id in names:
            resolved.append(image_id)
            continue

        all_exact = False
        candidates = by_stem.get(image_id, [])
        if len(candidates) > 1:
            raise DataError(
                f"{labels_path} line {lines[row]}: Id {image_id!r} matches several images in "
                f"{folder} ({', '.join(sorted(candidates))}). "
                "Delete all but one, or write the file extension in the Id."
            )
        if not candidates:
            missing.append(row)
            continue
        resolved.append(candidates[0])

    if missing:
        first = missing[0]
        others = f" (and {len(missing) - 1} other Ids)" if len(missing) > 1 else ""
        raise DataError(
            f"{labels_path} line {lines[first]}: no image for Id {ids[first]!r} in {folder}"
            f"{others}. Add the missing images or delete their rows."
        )

    unlabeled = len(names) - len(resolved)
    if unlabeled:
        logger.warning("Ignoring %d images in %s that labels.csv does not list", unlabeled, folder)
    return resolved, all_exact


def _name_test_images(
    folder: Path, entries: list[os.DirEntry], ids_have_extensions: bool
) -> tuple[list[str], list[str]]:
    """Return the sorted test Ids and their file names.

    Test Ids take the same form as the labels.csv Ids, so submission.csv matches labels.csv.
    They are file names when every Id was a file name, and file names without the extension
    otherwise.
    """
    names = [entry.name for entry in entries]
    if ids_have_extensions:
        return names, names

    by_stem: dict[str, list[str]] = collections.defaultdict(list)
    for name in names:
        by_stem[_split_extension(name)[0]].append(name)
    for stem, same_stem in by_stem.items():
        if len(same_stem) > 1:
            raise DataError(
                f"Image folder {folder} has several images named {stem!r} "
                f"({', '.join(sorted(same_stem))}), but test Ids drop the extension because the "
                "labels.csv Ids have none. Rename or delete all but one."
            )

    test_ids = sorted(by_stem)
    return test_ids, [by_stem[test_id][0] for test_id in test_ids]


def _fingerprint(
    root: Path, labels_path: Path, folders: list[tuple[Path, list[os.DirEntry]]]
) -> str:
    """Hash labels.csv's bytes and each image's relative name, size and modification time."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"format {CACHE_FORMAT_VERSION}\n".encode())
    digest.update(labels_path.read_bytes())

    for folder, entries in folders:
        prefix = folder.relative_to(root).as_posix()
        for entry in entries:
            stat = entry.stat()
            digest.update(f"\n{prefix}/{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


# --- decoding ----------------------------------------------------------------------------------


def _open_rgb(path: str) -> Image.Image:
    """Decode one image file to an 8-bit RGB PIL image, or raise DataError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return _convert_to_rgb(image)
    except _IMAGE_ERRORS as err:
        raise _unreadable(path, err) from None


def _convert_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):
        # PIL's convert clips 16- and 32-bit integer pixels at 255 instead of scaling them
        # (Pillow 13), so scale 0..65535 to 0..255 here.
        # NOTE: mode "I" is assumed to hold 16-bit values, as 16-bit PNG and PGM files do.
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values / 257), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")

    if image.mode in ("P", "PA") or "transparency" in image.info:
        # Going through RGBA resolves palette transparency without PIL's warning about it.
        image = image.convert("RGBA")
    # The alpha channel is dropped, not blended, as torchvision's pil_loader (convert("RGB"))
    # does.
    return image.convert("RGB")


def _unreadable(path: str, err: BaseException) -> DataError:
    return DataError(
        f"Failed to read image {path} ({_describe(err)}). "
        "Replace it with a valid image or delete it (and its labels.csv row)."
    )


def _read_size(path: str) -> tuple[int, int]:
    """Return an image's (width, height) from its header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except _IMAGE_ERRORS as err:
        raise _unreadable(path, err) from None


def _decode_rows(
    array_path: str,
    rows: Sequence[int],
    paths: Sequence[str],
    size: tuple[int, int],
    resize: bool,
) -> list[tuple[int, int]]:
    """Decode paths[k] into row rows[k] of a .npy file and return each image's original size.

    An image of another (width, height) is resized when `resize` is true and skipped otherwise,
    which leaves its row zero. Runs in worker processes, so it writes through its own memory
    map instead of returning the pixels.
    """
    array = np.load(array_path, mmap_mode="r+")
    sizes = []
    for row, path in zip(rows, paths, strict=True):
        image = _open_rgb(path)
        sizes.append(image.size)
        if image.size != size:
            if not resize:
                continue
            image = image.resize(size, Image.Resampling.BILINEAR)
        array[row] = np.asarray(image)
    array.flush()
    return sizes


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _run_jobs(
    function: Callable[..., Any],
    jobs: list[tuple[int, tuple]],
    description: str,
    progress: bool,
) -> list[Any]:
    """Call function(*args) for each (image count, args) job and return the results in order.

    Uses a pool of spawned processes when the jobs cover PARALLEL_MIN_IMAGES images or more.
    Spawn rather than fork, because forking a process that runs threads (torch, Ray) can
    deadlock the child.
    """
    total = sum(count for count, _ in jobs)
    workers = min(_available_cpus(), len(jobs))
    results: list[Any] = [None] * len(jobs)

    with tqdm(
        total=total, desc=description, unit="img", file=sys.stderr, disable=not progress
    ) as bar:
        if total < PARALLEL_MIN_IMAGES or workers < 2:
            for index, (count, args) in enumerate(jobs):
                results[index] = function(*args)
                bar.update(count)
            return results

        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
        try:
            futures = {pool.submit(function, *args): index for index, (_, args) in enumerate(jobs)}
            for future in concurrent.futures.as_completed(futures):
                index = futures[future]
                results[index] = future.result()
                bar.update(jobs[index][0])
        finally:
            # On an error, skip the chunks that have not started instead of decoding them.
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def _choose_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """Pick the most common (width, height) and log a warning when sizes differ.

    Ties go to the size seen first.
    """
    counts = collections.Counter(sizes)
    size, count = counts.most_common(1)[0]
    if count < len(sizes):
        others = ", ".join(f"{w}x{h}: {n}" for (w, h), n in counts.most_common(6)[1:])
        logger.warning(
            "Images differ in size, so %d of %d are resized to %dx%d (width x height), "
            "the most common size. Other sizes: %s",
            len(sizes) - count,
            len(sizes),
            size[0],
            size[1],
            others,
        )
    return size


def _allocate_arrays(temp: Path, splits: dict[str, list[str]], size: tuple[int, int]) -> None:
    width, height = size
    for file_name, paths in splits.items():
        # Only the header is written here. The workers fill in the rows through their own maps.
        np.lib.format.open_memmap(
            temp / file_name, mode="w+", dtype=np.uint8, shape=(len(paths), height, width, 3)
        )


def _decode_pass(
    temp: Path,
    selections: list[tuple[str, list[int], list[str]]],
    size: tuple[int, int],
    resize: bool,
    description: str,
    progress: bool,
) -> dict[str, list[tuple[int, int]]]:
    """Decode each (file name, rows, paths) selection and return the original sizes by file name."""
    jobs = []
    file_names = []
    for file_name, rows, paths in selections:
        for start in range(0, len(rows), CHUNK_SIZE):
            chunk = slice(start, start + CHUNK_SIZE)
            args = (str(temp / file_name), rows[chunk], paths[chunk], size, resize)
            jobs.append((len(rows[chunk]), args))
            file_names.append(file_name)

    sizes: dict[str, list[tuple[int, int]]] = {file_name: [] for file_name, _, _ in selections}
    results = _run_jobs(_decode_rows, jobs, description, progress)
    for file_name, chunk_sizes in zip(file_names, results, strict=True):
        sizes[file_name].extend(chunk_sizes)
    return sizes


def _decode_to_cache(layout: _Layout, folder: Path, progress: bool) -> None:
    """Decode every image of `layout` into a new cache folder, written atomically.

    Most datasets have one image size, so the first pass assumes the first image's size and
    skips the others. A second pass then resizes only the skipped images, or, when the first
    image's size is not the most common one, decodes everything again.
    """
    started = time.perf_counter()
    splits = {"trainval.npy": layout.train_paths, "test.npy": layout.test_paths}
    everything = [(name, list(range(len(paths))), paths) for name, paths in splits.items()]
    first_size = _read_size(layout.train_paths[0])

    temp = _make_temp_dir(folder.parent, folder.name)
    try:
        _allocate_arrays(temp, splits, first_size)
        sizes = _decode_pass(temp, everything, first_size, False, "Decoding images", progress)
        size = _choose_size([size for name in splits for size in sizes[name]])

        if size == first_size:
            skipped = []
            for name, paths in splits.items():
                rows = [row for row, found in enumerate(sizes[name]) if found != size]
                if rows:
                    skipped.append((name, rows, [paths[row] for row in rows]))
            _decode_pass(temp, skipped, size, True, "Resizing images", progress)
        else:
            _allocate_arrays(temp, splits, size)
            _decode_pass(temp, everything, size, True, "Decoding images again", progress)

        meta = {
            "format_version": CACHE_FORMAT_VERSION,
            "fingerprint": layout.fingerprint,
            "ids": layout.ids,
            "labels": layout.labels.tolist(),
            "test_ids": layout.test_ids,
            "num_classes": int(layout.labels.max()) + 1,
            "size": [size[1], size[0]],
        }
        (temp / "meta.json").write_text(json.dumps(meta))
        _rename_into_place(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)

    logger.info(
        "Decoded %d images to %dx%d in %.1f s, cached in %s",
        len(layout.train_paths) + len(layout.test_paths),
        size[0],
        size[1],
        time.perf_counter() - started,
        folder,
    )


# --- loading -----------------------------------------------------------------------------------


def load_dataset(
    root: Path | None = None, cache_dir: Path | None = None, progress: bool = True
) -> Dataset:
    """Check a dataset folder and return its images, decoding them only if no cache matches.

    `root` None loads the embedded digits. `cache_dir` defaults to default_cache_dir().
    `progress` shows tqdm bars on stderr while decoding. Raises DataError on bad input,
    before decoding anything where the check needs no pixels, and leaves no cache folder.

    The returned arrays are read-only memory maps. With PARALLEL_MIN_IMAGES images or more,
    decoding runs in spawned worker processes, which import the caller's main module, so a
    script that calls this at top level needs an `if __name__ == "__main__":` guard.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = digits_root(cache_dir) if root is None else Path(root).expanduser()

    layout = _scan_layout(root)
    folder = cache_dir / "datasets" / layout.fingerprint
    if folder.is_dir():
        try:
            dataset = _open_cache(root, folder)
        except (OSError, ValueError, KeyError) as err:
            logger.warning(
                "Decoding again because the cache %s is damaged (%s)", folder, _describe(err)
            )
            _discard(folder)
        else:
            logger.info("Loaded decoded images from the cache %s", folder)
            _warn_missing_classes(dataset.labels, layout.labels_path)
            return dataset

    _decode_to_cache(layout, folder, progress)
    dataset = _open_cache(root, folder)
    _warn_missing_classes(dataset.labels, layout.labels_path)
    return dataset


def _open_cache(root: Path, folder: Path) -> Dataset:
    meta = json.loads((folder / "meta.json").read_text())
    if meta["format_version"] != CACHE_FORMAT_VERSION:
        raise ValueError(
            f"format version {meta['format_version']}, expected {CACHE_FORMAT_VERSION}"
        )

    images = np.load(folder / "trainval.npy", mmap_mode="r")
    test_images = np.load(folder / "test.npy", mmap_mode="r")
    if len(images) != len(meta["ids"]) or len(test_images) != len(meta["test_ids"]):
        raise ValueError("the arrays and meta.json list different numbers of images")

    return Dataset(
        root=root,
        ids=np.array(meta["ids"], dtype=str),
        images=images,
        labels=np.array(meta["labels"], dtype=np.int64),
        test_ids=np.array(meta["test_ids"], dtype=str),
        test_images=test_images,
        num_classes=int(meta["num_classes"]),
        fingerprint=meta["fingerprint"],
    )


def _discard(folder: Path) -> None:
    # Rename first so that no other process finds a half-deleted folder under the cache's name.
    # Processes that already mapped the arrays keep reading them after the unlink.
    trash = folder.parent / f".{folder.name}.damaged-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _warn_missing_classes(labels: np.ndarray, labels_path: Path) -> None:
    num_classes = int(labels.max()) + 1
    missing = np.setdiff1d(np.arange(num_classes), labels)
    if len(missing) == 0:
        return

    listed = ", ".join(str(value) for value in missing[:20])
    if len(missing) > 20:
        listed += f" and {len(missing) - 20} more"
    warnings.warn(
        f"Classes {listed} never occur in {labels_path}, but num_classes = max(Category) + 1 = "
        f"{num_classes} includes them. Check labels.csv if these classes should have images.",
        stacklevel=3,
    )


# --- train/validation split --------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train and validation sets with the same class proportions.

    Each class gives count * val_fraction images, rounded half up, to validation, but at
    least 1 and at most count - 1, so every class is in both sets when val_fraction > 0.
    With val_fraction 0 the validation set is empty. Returns sorted int64 index arrays
    (train_idx, val_idx), the same for the same labels and seed.

    Raises ValueError for a val_fraction outside [0, 1), and DataError for a class with fewer
    than 2 images when val_fraction > 0.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}"
        )

    if val_fraction == 0:
        return np.arange(len(labels), dtype=np.int64), np.empty(0, dtype=np.int64)

    frame = pd.DataFrame({"label": labels})
    counts = frame.groupby("label").size()
    too_small = counts[counts < 2]
    if not too_small.empty:
        label, count = int(too_small.index[0]), int(too_small.iloc[0])
        raise DataError(
            f"Class {label} has {count} image, but a validation split needs at least 2 per class. "
            f"Add images of class {label} or set the validation fraction to 0."
        )

    # floor(x + 0.5) rounds halves up, unlike np.round's round-half-to-even.
    val_counts = np.floor(counts * val_fraction + 0.5).clip(lower=1, upper=counts - 1)

    # Each image gets a random key. Within each class, the images with the val_counts[label]
    # lowest keys go to validation.
    frame["key"] = np.random.default_rng(seed).random(len(labels))
    rank = frame.groupby("label")["key"].rank(method="first")
    is_val = (rank <= frame["label"].map(val_counts)).to_numpy()
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)
