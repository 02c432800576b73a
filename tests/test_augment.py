"""Tests of trainable.augment against torchvision's per-image transforms, on CPU."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from trainable.augment import (
    BLEND_OPS,
    IDENTITY,
    RANDAUGMENT_OPS,
    AugmentSpec,
    BatchAugment,
    normalize,
)

MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)


def _sample_images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Return uint8 (n, 3, H, W) images: noise, smooth gradients and two edge cases.

    The edge cases are an image with one constant channel, which AutoContrast leaves as it is,
    and an image with one dark pixel on gray. Equalize leaves a channel as it is when fewer than
    255 of its pixels are below its top level.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n, 3, height, width), generator=generator, dtype=torch.uint8)
    coarse = torch.randint(0, 256, (n, 3, 4, 4), generator=generator).float()
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    images = torch.where(
        torch.arange(n)[:, None, None, None] % 2 == 0, noise, smooth.round().byte()
    )
    images[0, 1] = 77
    images[1] = 200
    images[1, :, 0, 0] = 10
    return images


def _torchvision_single_op(name: str, negative: bool, magnitude: int) -> v2.RandAugment:
    """Return torchvision's RandAugment restricted to one op with a fixed sign.

    It reads torchvision's own magnitude table (a private attribute), so the tests compare
    against torchvision's ranges and not against a copy of them.
    """
    magnitudes_fn, signed = v2.RandAugment._AUGMENTATION_SPACE[name]
    if signed and negative:

        def fixed_sign_fn(bins: int, height: int, width: int) -> torch.Tensor:
            return -magnitudes_fn(bins, height, width)
    else:
        fixed_sign_fn = magnitudes_fn

    class SingleOp(v2.RandAugment):
        _AUGMENTATION_SPACE = {name: (fixed_sign_fn, False)}

    return SingleOp(num_ops=1, magnitude=magnitude)


# AugmentSpec


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("crop_padding", -1),
        ("randaugment_ops", -1),
        ("randaugment_magnitude", -1),
        ("randaugment_magnitude", 31),
        ("randaugment_magnitude", 9.5),
        ("crop_padding", 2.0),
        ("erasing_p", 1.5),
        ("erasing_p", -0.1),
        ("erasing_scale", (0.4, 0.2)),
        ("erasing_scale", (0.1, 1.5)),
        ("erasing_ratio", (0.0, 3.3)),
        ("erasing_ratio", (3.3, 0.3)),
    ],
)
def test_augment_spec_rejects_invalid_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        AugmentSpec(**{field: value})


@pytest.mark.parametrize(("height", "padding"), [(32, 4), (8, 1), (40, 5), (4, 1)])
def test_crop_padding_default_scales_with_height(height: int, padding: int) -> None:
    assert BatchAugment(AugmentSpec(), MEAN, STD).crop_padding(height) == padding


# normalize


def test_normalize_matches_torchvision() -> None:
    images = _sample_images(8, 16, 16)
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    output = normalize(images, MEAN, STD)
    assert output.dtype == torch.float32
    assert torch.allclose(output, reference(images), atol=1e-5)


def test_normalize_keeps_channels_last() -> None:
    images = _sample_images(4, 16, 16).contiguous(memory_format=torch.channels_last)
    output = normalize(images, MEAN, STD)
    assert output.is_contiguous(memory_format=torch.channels_last)


def test_normalize_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        normalize(torch.zeros(2, 3, 8, 8), MEAN, STD)


def test_batch_augment_rejects_wrong_std_length() -> None:
    with pytest.raises(ValueError, match="3 values"):
        BatchAugment(AugmentSpec(), MEAN, (0.2, 0.2))


# BatchAugment.__call__

FULL_SPEC = AugmentSpec(randaugment_ops=2, randaugment_magnitude=9, erasing_p=0.5)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_call_output_dtype_shape_device_format(memory_format: torch.memory_format) -> None:
    images = _sample_images(16, 12, 20).contiguous(memory_format=memory_format)
    output = BatchAugment(FULL_SPEC, MEAN, STD)(images, torch.Generator().manual_seed(0))
    assert output.dtype == torch.float32
    assert output.shape == images.shape
    assert output.device == images.device
    assert output.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (1, 3, 1, 1), (5, 3, 2, 2), (4, 3, 3, 7)])
def test_call_handles_empty_batch_and_tiny_images(shape: tuple[int, ...]) -> None:
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    output = BatchAugment(FULL_SPEC, MEAN, STD)(images, torch.Generator().manual_seed(0))
    assert output.shape == shape


def test_call_channels_last_gives_same_values() -> None:
    images = _sample_images(16, 12, 20)
    augment = BatchAugment(FULL_SPEC, MEAN, STD)
    contiguous = augment(images, torch.Generator().manual_seed(3))
    channels_last = augment(
        images.contiguous(memory_format=torch.channels_last), torch.Generator().manual_seed(3)
    )
    assert torch.equal(contiguous, channels_last)


def test_call_same_generator_state_same_output() -> None:
    images = _sample_images(32, 16, 16)
    augment = BatchAugment(FULL_SPEC, MEAN, STD)
    generator = torch.Generator().manual_seed(5)
    augment(images, generator)  # advance the generator, as an epoch in progress does
    state = generator.get_state()
    first = augment(images, generator)
    generator.set_state(state)
    second = augment(images, generator)
    assert torch.equal(first, second)


def test_call_different_generator_state_different_output() -> None:
    images = _sample_images(32, 16, 16)
    augment = BatchAugment(FULL_SPEC, MEAN, STD)
    first = augment(images, torch.Generator().manual_seed(1))
    second = augment(images, torch.Generator().manual_seed(2))
    assert not torch.equal(first, second)


# Each stage alone, so that no earlier stage makes the copy a later one might write into.
SPECS_BY_STAGE = [
    AugmentSpec(crop_flip=False),
    AugmentSpec(crop_padding=0),
    AugmentSpec(crop_flip=False, randaugment_ops=3),
    AugmentSpec(crop_flip=False, erasing_p=1.0),
    FULL_SPEC,
]


@pytest.mark.parametrize("spec", SPECS_BY_STAGE)
def test_call_leaves_input_unchanged(spec: AugmentSpec) -> None:
    images = _sample_images(32, 16, 16)
    original = images.clone()
    BatchAugment(spec, MEAN, STD)(images, torch.Generator().manual_seed(0))
    assert torch.equal(images, original)


@pytest.mark.parametrize("spec", SPECS_BY_STAGE)
def test_call_accepts_read_only_numpy_input_without_warnings(spec: AugmentSpec) -> None:
    array = _sample_images(32, 16, 16).numpy().copy()
    array.setflags(write=False)
    expected = array.copy()
    with warnings.catch_warnings():
        # torch.from_numpy warns about every read-only array, Ray's object store arrays
        # included. Only warnings from the augmentation count here.
        warnings.simplefilter("ignore")
        images = torch.from_numpy(array)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BatchAugment(spec, MEAN, STD)(images, torch.Generator().manual_seed(0))
    assert caught == []
    assert np.array_equal(array, expected)


def test_call_equals_stages_in_torchvision_order() -> None:
    images = _sample_images(32, 16, 16)
    augment = BatchAugment(FULL_SPEC, MEAN, STD)
    output = augment(images, torch.Generator().manual_seed(9))

    generator = torch.Generator().manual_seed(9)
    x = augment.crop_flip(images, generator)
    x = augment.apply_randaugment(x, generator)
    expected = augment.erase(normalize(x, MEAN, STD), generator)
    assert torch.allclose(output, expected, atol=1e-6)


def test_call_without_augmentation_equals_normalize() -> None:
    images = _sample_images(8, 16, 16)
    augment = BatchAugment(AugmentSpec(crop_flip=False), MEAN, STD)
    output = augment(images, torch.Generator().manual_seed(0))
    assert torch.equal(output, normalize(images, MEAN, STD))


def test_call_rejects_grayscale_images() -> None:
    augment = BatchAugment(AugmentSpec(), MEAN, STD)
    with pytest.raises(ValueError, match="shape"):
        augment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.Generator())


# crop and flip


def test_crop_flip_flips_about_half() -> None:
    images = _sample_images(4096, 8, 8)
    augment = BatchAugment(AugmentSpec(crop_padding=0), MEAN, STD)
    output = augment.crop_flip(images, torch.Generator().manual_seed(0))
    unchanged = (output == images).flatten(1).all(dim=1)
    flipped = (output == images.flip(-1)).flatten(1).all(dim=1)
    assert (unchanged | flipped).all()
    assert abs(flipped.float().mean().item() - 0.5) < 0.03


def test_crop_flip_outputs_are_windows_of_padded_image() -> None:
    height, width, padding = 16, 12, 2
    images = torch.randint(0, 256, (512, 3, height, width), dtype=torch.uint8)
    augment = BatchAugment(AugmentSpec(crop_padding=padding), MEAN, STD)
    output = augment.crop_flip(images, torch.Generator().manual_seed(0))

    # Compare each output to every window of the zero-padded original, flipped and not.
    padded = F.pad(images, (padding, padding, padding, padding))
    tops_found, lefts_found = set(), set()
    matched = torch.zeros(len(images), dtype=torch.bool)
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            window = padded[..., top : top + height, left : left + width]
            for candidate in (window, window.flip(-1)):
                hits = (output == candidate).flatten(1).all(dim=1)
                matched |= hits
                if hits.any():
                    tops_found.add(top)
                    lefts_found.add(left)

    assert matched.all()
    assert tops_found == set(range(2 * padding + 1))
    assert lefts_found == set(range(2 * padding + 1))


# RandomErasing


def _erased_boxes(erased: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (erased area fraction, box height, box width) per image of a bool (N, H, W) mask."""
    fraction = erased.flatten(1).float().mean(dim=1)
    box_height = erased.any(dim=2).sum(dim=1)
    box_width = erased.any(dim=1).sum(dim=1)
    return fraction, box_height, box_width


@functools.cache
def _erase_both(
    p: float, scale: tuple[float, float], n: int = 3000, size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the erased masks (N, H, W) of BatchAugment.erase and torchvision's RandomErasing."""
    ones = torch.ones(n, 3, size, size)
    augment = BatchAugment(AugmentSpec(erasing_p=p, erasing_scale=scale), MEAN, STD)
    ours = augment.erase(ones, torch.Generator().manual_seed(0))[:, 0] == 0

    torch.manual_seed(0)
    reference = v2.RandomErasing(p=p, scale=scale, ratio=(0.3, 3.3), value=0)
    theirs = torch.stack([reference(image) for image in ones])[:, 0] == 0
    return ours, theirs


# The default scale, where 99% of first attempts fit at 32x32 pixels, and a large scale, where
# 44% do, so that more than half of the images need retries and about 0.3% get no box.
ERASING_SCALES = [(0.02, 0.33), (0.3, 0.9)]


@pytest.mark.parametrize("scale", ERASING_SCALES)
@pytest.mark.parametrize("p", [0.25, 1.0])
def test_erase_rate_matches_torchvision(p: float, scale: tuple[float, float]) -> None:
    ours, theirs = _erase_both(p, scale)
    our_rate = ours.flatten(1).any(dim=1).float().mean().item()
    their_rate = theirs.flatten(1).any(dim=1).float().mean().item()
    assert abs(our_rate - p) < 0.025
    assert abs(our_rate - their_rate) < 0.035


@pytest.mark.parametrize("scale", ERASING_SCALES)
def test_erase_box_distribution_matches_torchvision(scale: tuple[float, float]) -> None:
    ours, theirs = _erase_both(1.0, scale)
    our_fraction, our_height, our_width = _erased_boxes(ours)
    their_fraction, their_height, their_width = _erased_boxes(theirs)

    # Every erased region is one rectangle, and the boxes reach every pixel, edges included.
    assert torch.equal(ours.flatten(1).sum(dim=1), our_height * our_width)
    assert ours.any(dim=0).all()

    # Erased area, including the images that got no box.
    assert abs(our_fraction.mean() - their_fraction.mean()) < 0.01
    for q in (0.1, 0.5, 0.9):
        assert abs(our_fraction.quantile(q) - their_fraction.quantile(q)) < 0.02, f"quantile {q}"

    # Aspect ratio (log of height / width) of the boxes.
    our_log_ratio = (our_height[our_height > 0].float() / our_width[our_width > 0]).log()
    their_log_ratio = (their_height[their_height > 0].float() / their_width[their_width > 0]).log()
    assert abs(our_log_ratio.mean() - their_log_ratio.mean()) < 0.05
    assert abs(our_log_ratio.std() - their_log_ratio.std()) < 0.05


def test_erase_writes_positive_zero() -> None:
    augment = BatchAugment(AugmentSpec(erasing_p=1.0), MEAN, STD)
    output = augment.erase(-torch.ones(64, 3, 16, 16), torch.Generator().manual_seed(0))
    erased = output == 0
    assert erased.any()
    assert not output[erased].signbit().any()


def test_erase_skips_images_where_no_box_fits() -> None:
    # At 2x2 pixels, a box of 90% or more of the area has a side of at least 2, which never fits.
    augment = BatchAugment(AugmentSpec(erasing_p=1.0, erasing_scale=(0.9, 1.0)), MEAN, STD)
    output = augment.erase(torch.ones(64, 3, 2, 2), torch.Generator().manual_seed(0))
    assert (output == 1).all()


# RandAugment


def test_draw_randaugment_ops_uniform_per_step() -> None:
    n = 14_000
    augment = BatchAugment(AugmentSpec(randaugment_ops=2), MEAN, STD)
    ops, negative = augment.draw_randaugment_ops(n, torch.Generator().manual_seed(0))
    assert ops.shape == (2, n)
    for step in range(2):
        counts = torch.bincount(ops[step], minlength=len(RANDAUGMENT_OPS))
        for op, count in enumerate(counts.tolist()):
            assert abs(count / n - 1 / 14) < 0.01, f"step {step} op {RANDAUGMENT_OPS[op]}"
    assert abs(negative.float().mean().item() - 0.5) < 0.02


@pytest.mark.parametrize("magnitude", [9, 30])
@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("op", range(len(RANDAUGMENT_OPS)), ids=RANDAUGMENT_OPS)
def test_randaugment_op_matches_torchvision(op: int, negative: bool, magnitude: int) -> None:
    images = _sample_images(12, 32, 28)
    augment = BatchAugment(AugmentSpec(randaugment_magnitude=magnitude), MEAN, STD)
    output = augment.apply_randaugment_op(images, op, torch.full((len(images),), negative))

    reference = _torchvision_single_op(RANDAUGMENT_OPS[op], negative, magnitude)
    expected = torch.stack([reference(image) for image in images])
    difference = (output.int() - expected.int()).abs().max().item()
    if op in BLEND_OPS:
        # Blends compute in float32 and truncate to uint8, so another summation order (a small
        # image's mean in Contrast, another CPU's vector code) can move a pixel by 1.
        assert difference <= 1
    else:
        assert difference == 0
    # Only Identity leaves the whole batch as it is.
    assert torch.equal(output, images) == (op == IDENTITY)


def test_apply_randaugment_matches_per_image_torchvision() -> None:
    images = _sample_images(96, 24, 24)
    spec = AugmentSpec(randaugment_ops=2, randaugment_magnitude=12)
    augment = BatchAugment(spec, MEAN, STD)
    generator = torch.Generator().manual_seed(4)
    draw_generator = torch.Generator()
    draw_generator.set_state(generator.get_state())
    ops, negative = augment.draw_randaugment_ops(len(images), draw_generator)
    output = augment.apply_randaugment(images, generator)

    # Each image through torchvision's ops one at a time, with the ops and signs it drew.
    expected = []
    for index, image in enumerate(images):
        for step in range(spec.randaugment_ops):
            name = RANDAUGMENT_OPS[ops[step, index]]
            reference = _torchvision_single_op(name, bool(negative[step, index]), 12)
            image = reference(image)
        expected.append(image)
    expected = torch.stack(expected)

    # A difference of 1 after a blend op can grow in the second op (at the Solarize threshold,
    # for example), so the check allows a few pixels. An op applied to the wrong image changes
    # thousands.
    mismatched = (output != expected).float().mean().item()
    assert mismatched < 1e-3


def test_apply_randaugment_draws_ops_per_image() -> None:
    images = _sample_images(64, 16, 16)
    augment = BatchAugment(AugmentSpec(randaugment_ops=1), MEAN, STD)
    ops, _ = augment.draw_randaugment_ops(len(images), torch.Generator().manual_seed(0))
    # With one op for the whole batch, all 64 draws would be equal.
    assert len(set(ops[0].tolist())) > 7
