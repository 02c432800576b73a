"""Tests of trainable.data on small generated image folders and on the embedded digits."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainable import data
from trainable.data import DataError, check_layout, load_dataset, stratified_split

CLASSES = 3
PER_CLASS = 6
TRAIN_COUNT = CLASSES * PER_CLASS
TEST_COUNT = 4
SIZE = (12, 12)  # width, height


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default cache at a temporary folder, so no test writes to ~/.cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(folder))
    return folder


def color_of_train_image(index: int) -> tuple[int, int, int]:
    return (10 * index, 10 * index + 1, 10 * index + 2)


def color_of_test_image(index: int) -> tuple[int, int, int]:
    return (200 + index, 210 + index, 220 + index)


def write_dataset(
    root: Path,
    *,
    extension: str = ".png",
    ids_with_extension: bool = True,
    nested: bool = False,
) -> Path:
    """Write 3 classes x 6 uniformly colored 12x12 trainval images and 4 test images.

    Image i of trainval has color color_of_train_image(i) and class i % 3, so decoded pixels
    can be checked exactly (with PNG).
    """
    train_dir = root / "trainval" / "trainval" if nested else root / "trainval"
    test_dir = root / "test" / "test" if nested else root / "test"
    train_dir.mkdir(parents=True)
    test_dir.mkdir(parents=True)

    rows = []
    for index in range(TRAIN_COUNT):
        stem = f"img_{index:02d}"
        Image.new("RGB", SIZE, color_of_train_image(index)).save(train_dir / f"{stem}{extension}")
        image_id = f"{stem}{extension}" if ids_with_extension else stem
        rows.append({"Id": image_id, "Category": index % CLASSES})
    for index in range(TEST_COUNT):
        Image.new("RGB", SIZE, color_of_test_image(index)).save(test_dir / f"t_{index}{extension}")

    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def dataset_folders(cache_dir: Path) -> list[str]:
    """List everything under cache_dir/datasets, hidden temporary folders included."""
    folder = cache_dir / "datasets"
    return sorted(os.listdir(folder)) if folder.exists() else []


# --- reading -----------------------------------------------------------------------------------


def test_load_dataset_reads_pixels_labels_and_ids(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data")

    dataset = load_dataset(root, progress=False)

    assert dataset.images.shape == (TRAIN_COUNT, 12, 12, 3)
    assert dataset.images.dtype == np.uint8
    assert dataset.test_images.shape == (TEST_COUNT, 12, 12, 3)
    assert dataset.labels.dtype == np.int64
    assert dataset.labels.tolist() == [index % CLASSES for index in range(TRAIN_COUNT)]
    assert dataset.ids[5] == "img_05.png"
    assert dataset.num_classes == CLASSES
    assert dataset.root == root
    for index in range(TRAIN_COUNT):
        assert tuple(dataset.images[index, 3, 4]) == color_of_train_image(index)
    for index in range(TEST_COUNT):
        assert tuple(dataset.test_images[index, 0, 0]) == color_of_test_image(index)


def test_load_dataset_test_ids_keep_extension(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data")

    dataset = load_dataset(root, progress=False)

    assert dataset.test_ids.tolist() == [f"t_{index}.png" for index in range(TEST_COUNT)]


def test_load_dataset_ids_without_extension(tmp_path: Path) -> None:
    # Upper-case extensions check that the lookup ignores the letter case of the extension.
    root = write_dataset(tmp_path / "data", extension=".PNG", ids_with_extension=False)

    dataset = load_dataset(root, progress=False)

    assert dataset.ids[3] == "img_03"
    assert tuple(dataset.images[3, 0, 0]) == color_of_train_image(3)
    assert dataset.test_ids.tolist() == [f"t_{index}" for index in range(TEST_COUNT)]


def test_load_dataset_reads_archive_nesting(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", nested=True)

    dataset = load_dataset(root, progress=False)

    assert len(dataset.images) == TRAIN_COUNT
    assert len(dataset.test_images) == TEST_COUNT
    assert tuple(dataset.images[7, 0, 0]) == color_of_train_image(7)


def test_load_dataset_reads_jpeg(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", extension=".jpg")

    dataset = load_dataset(root, progress=False)

    # JPEG is lossy, so compare with a tolerance.
    difference = np.abs(dataset.images[9, 6, 6].astype(int) - np.array(color_of_train_image(9)))
    assert difference.max() <= 3


def test_load_dataset_ignores_unlisted_and_non_image_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_dataset(tmp_path / "data")
    Image.new("RGB", SIZE).save(root / "trainval" / "unlabeled.png")
    (root / "test" / "notes.txt").write_text("not an image")
    (root / "test" / ".DS_Store").write_bytes(b"\0\1")

    with caplog.at_level(logging.WARNING, logger="trainable.data"):
        dataset = load_dataset(root, progress=False)

    assert len(dataset.images) == TRAIN_COUNT
    assert len(dataset.test_ids) == TEST_COUNT
    assert "Ignoring 1 images" in caplog.text
    assert "'notes.txt'" in caplog.text


def _palette_image(transparent: bool) -> Image.Image:
    image = Image.new("P", SIZE, 1)
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * (256 * 3 - 6))
    if transparent:
        image.info["transparency"] = 1
    return image


@pytest.mark.parametrize(
    ("make_image", "expected"),
    [
        pytest.param(lambda: Image.new("L", SIZE, 77), (77, 77, 77), id="grayscale"),
        pytest.param(lambda: Image.new("LA", SIZE, (90, 0)), (90, 90, 90), id="grayscale-alpha"),
        pytest.param(lambda: Image.new("RGBA", SIZE, (10, 20, 30, 0)), (10, 20, 30), id="rgba"),
        pytest.param(lambda: _palette_image(False), (200, 100, 50), id="palette"),
        pytest.param(lambda: _palette_image(True), (200, 100, 50), id="palette-transparent"),
        pytest.param(lambda: Image.new("1", SIZE, 1), (255, 255, 255), id="bilevel"),
        pytest.param(
            lambda: Image.fromarray(np.full((12, 12), 257 * 100, dtype=np.uint16)),
            (100, 100, 100),
            id="16-bit",
        ),
    ],
)
def test_load_dataset_converts_modes_to_rgb(
    tmp_path: Path, make_image: Callable[[], Image.Image], expected: tuple[int, int, int]
) -> None:
    root = write_dataset(tmp_path / "data")
    make_image().save(root / "trainval" / "img_04.png")

    dataset = load_dataset(root, progress=False)

    assert dataset.images.shape[-1] == 3
    assert np.all(dataset.images[4] == np.array(expected, dtype=np.uint8))


@pytest.mark.parametrize("odd_index", [0, 11], ids=["first-image", "later-image"])
def test_load_dataset_resizes_mixed_sizes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, odd_index: int
) -> None:
    root = write_dataset(tmp_path / "data")
    odd_file = root / "trainval" / f"img_{odd_index:02d}.png"
    Image.new("RGB", (20, 16), color_of_train_image(odd_index)).save(odd_file)

    with caplog.at_level(logging.WARNING, logger="trainable.data"):
        dataset = load_dataset(root, progress=False)

    assert dataset.images.shape == (TRAIN_COUNT, 12, 12, 3)
    # A uniform color keeps its value through bilinear resizing.
    assert np.all(
        dataset.images[odd_index] == np.array(color_of_train_image(odd_index), dtype=np.uint8)
    )
    assert tuple(dataset.images[1, 0, 0]) == color_of_train_image(1)
    assert f"1 of {TRAIN_COUNT + TEST_COUNT} are resized to 12x12" in caplog.text


def test_load_dataset_warns_missing_classes(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data")
    labels = pd.read_csv(root / "labels.csv")
    labels["Category"] = labels["Category"].replace({1: 4})
    labels.to_csv(root / "labels.csv", index=False)

    with pytest.warns(UserWarning, match=r"Classes 1, 3 never occur") as record:
        dataset = load_dataset(root, progress=False)

    assert dataset.num_classes == 5
    assert "num_classes = max(Category) + 1 = 5" in str(record[0].message)


def test_load_dataset_shows_progress_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_dataset(tmp_path / "data")

    load_dataset(root, progress=True)

    assert "Decoding images" in capsys.readouterr().err


def test_load_dataset_parallel_matches_serial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_dataset(tmp_path / "data")
    serial = load_dataset(root, cache_dir=tmp_path / "serial", progress=False)

    monkeypatch.setattr(data, "PARALLEL_MIN_IMAGES", 1)
    monkeypatch.setattr(data, "CHUNK_SIZE", 5)
    parallel = load_dataset(root, cache_dir=tmp_path / "parallel", progress=False)

    assert np.array_equal(parallel.images, serial.images)
    assert np.array_equal(parallel.test_images, serial.test_images)


# --- cache -------------------------------------------------------------------------------------


def test_load_dataset_writes_cache_files(tmp_path: Path, cache_dir: Path) -> None:
    root = write_dataset(tmp_path / "data")

    dataset = load_dataset(root, progress=False)

    folder = cache_dir / "datasets" / dataset.fingerprint
    assert dataset_folders(cache_dir) == [dataset.fingerprint]
    assert sorted(os.listdir(folder)) == ["meta.json", "test.npy", "trainval.npy"]
    assert np.load(folder / "trainval.npy").shape == (TRAIN_COUNT, 12, 12, 3)


def test_load_dataset_reuses_cache_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_dataset(tmp_path / "data")
    first = load_dataset(root, progress=False)

    def fail_decode(*args: object) -> None:
        raise AssertionError("decoded again although the cache matches")

    monkeypatch.setattr(data, "_decode_to_cache", fail_decode)
    second = load_dataset(root, progress=False)

    assert second.fingerprint == first.fingerprint
    assert isinstance(second.images, np.memmap)
    assert isinstance(second.test_images, np.memmap)
    assert not second.images.flags.writeable
    assert np.array_equal(second.images, first.images)
    assert second.ids.tolist() == first.ids.tolist()
    assert second.test_ids.tolist() == first.test_ids.tolist()


def test_load_dataset_cache_invalidated_by_image_change(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data")
    first = load_dataset(root, progress=False)

    changed = root / "trainval" / "img_02.png"
    Image.new("RGB", SIZE, (1, 2, 3)).save(changed)
    stat = changed.stat()
    # Guarantees a new modification time even on file systems with coarse timestamps.
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = load_dataset(root, progress=False)

    assert second.fingerprint != first.fingerprint
    assert tuple(second.images[2, 0, 0]) == (1, 2, 3)


def test_load_dataset_cache_invalidated_by_labels_change(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data")
    first = load_dataset(root, progress=False)

    labels = pd.read_csv(root / "labels.csv")
    labels.loc[0, "Category"] = 2
    labels.to_csv(root / "labels.csv", index=False)
    second = load_dataset(root, progress=False)

    assert second.fingerprint != first.fingerprint
    assert second.labels[0] == 2


def test_load_dataset_rebuilds_damaged_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_dataset(tmp_path / "data")
    first = load_dataset(root, progress=False)
    folder = Path(first.images.filename).parent
    del first
    (folder / "trainval.npy").unlink()

    with caplog.at_level(logging.WARNING, logger="trainable.data"):
        second = load_dataset(root, progress=False)

    assert "damaged" in caplog.text
    assert tuple(second.images[3, 0, 0]) == color_of_train_image(3)


# --- bad input ---------------------------------------------------------------------------------


def _write_labels(root: Path, text: str) -> None:
    (root / "labels.csv").write_text(text)


def _set_category(root: Path, row: int, value: str) -> None:
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    labels.loc[row, "Category"] = value
    labels.to_csv(root / "labels.csv", index=False)


def _duplicate_id(root: Path) -> None:
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    labels.loc[4, "Id"] = "img_01.png"
    labels.to_csv(root / "labels.csv", index=False)


def _empty_folder(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


def _rename_column(root: Path, old: str, new: str) -> None:
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    labels.rename(columns={old: new}).to_csv(root / "labels.csv", index=False)


def _two_files_for_one_id(root: Path) -> None:
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    labels["Id"] = labels["Id"].str.removesuffix(".png")
    labels.to_csv(root / "labels.csv", index=False)
    Image.new("RGB", SIZE).save(root / "trainval" / "img_03.jpg")


# Each case damages a valid 18-image dataset. Line 2 of labels.csv is the row of img_00.png.
BAD_INPUTS = [
    pytest.param(lambda root: shutil.rmtree(root), ["data not found"], id="missing-folder"),
    pytest.param(
        lambda root: (root / "labels.csv").unlink(), ["labels.csv not found"], id="missing-labels"
    ),
    pytest.param(
        lambda root: shutil.rmtree(root / "trainval"), ["trainval not found"], id="no-trainval"
    ),
    pytest.param(lambda root: shutil.rmtree(root / "test"), ["test not found"], id="no-test"),
    pytest.param(lambda root: _write_labels(root, ""), ["is empty"], id="empty-labels"),
    pytest.param(
        lambda root: _write_labels(root, "Id,Category\n"),
        ["has a header but no rows"],
        id="header-only",
    ),
    pytest.param(
        lambda root: _rename_column(root, "Id", "Name"),
        ["no 'Id' column", "'Name'"],
        id="no-id-column",
    ),
    pytest.param(
        lambda root: _rename_column(root, "Category", "Label"),
        ["no 'Category' column", "'Label'"],
        id="no-category-column",
    ),
    pytest.param(
        lambda root: _set_category(root, 3, "cat"),
        ["line 5", "'cat'", "'img_03.png'", "not an integer"],
        id="text-category",
    ),
    pytest.param(
        lambda root: _set_category(root, 2, "1.5"),
        ["line 4", "'1.5'", "not an integer"],
        id="fractional-category",
    ),
    pytest.param(
        lambda root: _set_category(root, 0, "-1"),
        ["line 2", "'-1'", "is negative"],
        id="negative-category",
    ),
    pytest.param(
        lambda root: _set_category(root, 1, "99999999999999999999999"),
        ["line 3", "larger than 1,000,000"],
        id="huge-category",
    ),
    pytest.param(
        lambda root: _set_category(root, 6, ""),
        ["line 8", "''", "not an integer"],
        id="blank-category",
    ),
    pytest.param(_duplicate_id, ["lines 3 and 6", "duplicate Id 'img_01.png'"], id="duplicate-id"),
    pytest.param(
        lambda root: [(root / "trainval" / f"img_{i:02d}.png").unlink() for i in (5, 9, 12)],
        ["line 7", "no image for Id 'img_05.png'", "(and 2 other Ids)"],
        id="missing-images",
    ),
    pytest.param(
        _two_files_for_one_id,
        ["Id 'img_03' matches several images", "img_03.jpg, img_03.png"],
        id="ambiguous-id",
    ),
    pytest.param(
        lambda root: _empty_folder(root / "trainval"),
        ["trainval contains no images"],
        id="empty-trainval",
    ),
    pytest.param(
        lambda root: _empty_folder(root / "test"), ["test contains no images"], id="empty-test"
    ),
]


@pytest.mark.parametrize(("damage", "fragments"), BAD_INPUTS)
def test_check_layout_rejects_bad_input(
    tmp_path: Path, cache_dir: Path, damage: Callable[[Path], object], fragments: list[str]
) -> None:
    root = write_dataset(tmp_path / "data")
    damage(root)

    with pytest.raises(DataError) as raised:
        check_layout(root)
    message = str(raised.value)

    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    with pytest.raises(DataError):
        load_dataset(root, progress=False)
    assert dataset_folders(cache_dir) == []


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an image")


def _truncate(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


@pytest.mark.parametrize(
    ("damage", "file_name", "parallel"),
    [
        pytest.param(_garbage, "trainval/img_00.jpg", False, id="garbage-trainval"),
        pytest.param(_garbage, "test/t_3.jpg", False, id="garbage-test"),
        pytest.param(_truncate, "trainval/img_07.jpg", False, id="truncated-trainval"),
        pytest.param(_truncate, "test/t_3.jpg", False, id="truncated-test"),
        # One parallel case is enough, because each one spawns worker processes.
        pytest.param(_truncate, "trainval/img_07.jpg", True, id="truncated-parallel"),
    ],
)
def test_load_dataset_rejects_corrupt_image(
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Path], None],
    file_name: str,
    parallel: bool,
) -> None:
    if parallel:
        monkeypatch.setattr(data, "PARALLEL_MIN_IMAGES", 1)
        monkeypatch.setattr(data, "CHUNK_SIZE", 4)
    root = write_dataset(tmp_path / "data", extension=".jpg")
    damage(root / file_name)

    with pytest.raises(DataError) as raised:
        load_dataset(root, progress=False)
    message = str(raised.value)

    assert str(root / file_name) in message
    assert "\n" not in message
    assert dataset_folders(cache_dir) == []


# --- stratified split --------------------------------------------------------------------------


def shuffled_labels(counts: dict[int, int], seed: int = 0) -> np.ndarray:
    labels = np.concatenate([np.full(count, label) for label, count in counts.items()])
    return np.random.default_rng(seed).permutation(labels).astype(np.int64)


def test_stratified_split_keeps_class_proportions() -> None:
    labels = shuffled_labels({0: 100, 1: 50, 2: 200})

    train_idx, val_idx = stratified_split(labels, 0.1, seed=0)

    assert np.bincount(labels[val_idx]).tolist() == [10, 5, 20]
    assert np.bincount(labels[train_idx]).tolist() == [90, 45, 180]


def test_stratified_split_gives_every_class_one_val_image() -> None:
    # 0.01 of 3 or 40 images rounds to 0, but each class still gets 1 validation image.
    labels = shuffled_labels({0: 3, 1: 40, 2: 500})

    _, val_idx = stratified_split(labels, 0.01, seed=0)

    assert np.bincount(labels[val_idx]).tolist() == [1, 1, 5]


def test_stratified_split_keeps_every_class_in_train() -> None:
    labels = shuffled_labels({0: 2, 1: 3, 2: 10})

    train_idx, _ = stratified_split(labels, 0.9, seed=0)

    assert np.bincount(labels[train_idx]).tolist() == [1, 1, 1]


def test_stratified_split_partitions_indices() -> None:
    labels = shuffled_labels({0: 30, 1: 31, 2: 7})

    train_idx, val_idx = stratified_split(labels, 0.2, seed=3)

    assert np.intersect1d(train_idx, val_idx).size == 0
    assert np.array_equal(np.union1d(train_idx, val_idx), np.arange(len(labels)))
    assert train_idx.dtype == np.int64
    assert val_idx.dtype == np.int64
    assert np.all(np.diff(train_idx) > 0)
    assert np.all(np.diff(val_idx) > 0)


def test_stratified_split_same_seed_same_split() -> None:
    labels = shuffled_labels({0: 40, 1: 40, 2: 40})

    first = stratified_split(labels, 0.25, seed=7)
    second = stratified_split(labels, 0.25, seed=7)

    assert np.array_equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])


def test_stratified_split_different_seeds_differ() -> None:
    labels = shuffled_labels({0: 40, 1: 40, 2: 40})

    _, val_a = stratified_split(labels, 0.25, seed=1)
    _, val_b = stratified_split(labels, 0.25, seed=2)

    assert not np.array_equal(val_a, val_b)


def test_stratified_split_zero_fraction_keeps_all() -> None:
    labels = shuffled_labels({0: 1, 1: 5})

    train_idx, val_idx = stratified_split(labels, 0.0, seed=0)

    assert train_idx.tolist() == list(range(6))
    assert val_idx.size == 0


def test_stratified_split_rejects_single_image_class() -> None:
    labels = shuffled_labels({0: 10, 1: 10, 2: 1})

    with pytest.raises(DataError) as raised:
        stratified_split(labels, 0.01, seed=0)
    message = str(raised.value)

    assert "Class 2 has 1 image" in message
    assert "set the validation fraction to 0" in message


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_stratified_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction must be in"):
        stratified_split(shuffled_labels({0: 10}), fraction, seed=0)


# --- cache folder and digits -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"RESNET_SEARCH_CACHE": "/x/cache", "XDG_CACHE_HOME": "/y"}, "/x/cache"),
        ({"RESNET_SEARCH_CACHE": "", "XDG_CACHE_HOME": "/y"}, "/y/resnet-search"),
        (
            {"RESNET_SEARCH_CACHE": "", "XDG_CACHE_HOME": "", "HOME": "/h"},
            "/h/.cache/resnet-search",
        ),
    ],
    ids=["explicit", "xdg", "home"],
)
def test_default_cache_dir_precedence(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    assert data.default_cache_dir() == Path(expected)


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("digits-cache")
    data.digits_root(cache)
    return cache


def test_digits_root_writes_competition_layout(digits_cache: Path) -> None:
    root = data.digits_root(digits_cache)
    labels = pd.read_csv(root / "labels.csv")

    assert root == digits_cache / "digits"
    assert len(os.listdir(root / "trainval")) == 1500
    assert len(os.listdir(root / "test")) == 297
    assert len(labels) == 1500
    assert sorted(labels["Category"].unique()) == list(range(10))


def test_digits_answers_path_outside_test(digits_cache: Path) -> None:
    answers_path = data.digits_answers_path(digits_cache)
    answers = pd.read_csv(answers_path)
    test_stems = sorted(Path(name).stem for name in os.listdir(answers_path.parent / "test"))

    assert answers_path == digits_cache / "digits" / "test_answers.csv"
    assert answers_path.is_file()
    assert sorted(answers["Id"]) == test_stems
    # Stratified: every digit appears among the test answers.
    assert sorted(answers["Category"].unique()) == list(range(10))


def test_load_dataset_defaults_to_digits(digits_cache: Path) -> None:
    dataset = load_dataset(cache_dir=digits_cache, progress=False)

    assert dataset.root == digits_cache / "digits"
    assert dataset.images.shape == (1500, 8, 8, 3)
    assert dataset.test_images.shape == (297, 8, 8, 3)
    assert dataset.num_classes == 10
    assert dataset.images.max() == 255
    assert dataset.images.min() == 0


def test_digits_root_survives_concurrent_writers(tmp_path: Path) -> None:
    cache = tmp_path / "race"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(data.digits_root(cache))) for _ in range(2)
    ]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [cache / "digits", cache / "digits"]
    assert os.listdir(cache) == ["digits"]
    assert len(os.listdir(cache / "digits" / "trainval")) == 1500
