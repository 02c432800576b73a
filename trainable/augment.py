"""Batched image augmentation on tensors, with random parameters drawn per image.

`BatchAugment` applies torchvision's usual training pipeline to a whole uint8 batch on the
batch's own device (CUDA in a GPU trial, CPU in tests): random crop with zero padding and
horizontal flip, RandAugment, conversion to float32 with normalization, then RandomErasing.
Each image draws its own crop offset, flip, RandAugment ops and signs, and erasing box, as the
per-image torchvision transforms do, but the work runs as a few batched tensor operations
instead of one Python call per image. All randomness comes from the generator passed to each
call, so restoring that generator's state reproduces the output exactly.

NOTE: the tests run on CPU only. The same code runs on CUDA, but its speed there and its
agreement with torchvision's CUDA kernels have not been measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

# The 14 ops of torchvision's RandAugment, in torchvision's order. Op indices refer to this tuple.
RANDAUGMENT_OPS: tuple[str, ...] = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
IDENTITY, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE = range(6)
BRIGHTNESS, COLOR, CONTRAST, SHARPNESS, POSTERIZE, SOLARIZE, AUTOCONTRAST, EQUALIZE = range(6, 14)

# The geometric and the blend ops are the signed ops: each image draws a random sign for their
# magnitude, as in torchvision's RandAugment. The other ops have no sign.
GEOMETRIC_OPS = range(SHEAR_X, ROTATE + 1)
BLEND_OPS = range(BRIGHTNESS, SHARPNESS + 1)

NUM_MAGNITUDE_BINS = 31  # torchvision's RandAugment default, so magnitude bins are 0..30

# Magnitude at bin 0 and at bin 30 of the ops with a linear magnitude scale, as in torchvision
# 0.29's RandAugment. Shear is the shear factor, rotation is in degrees, the four blend ops add
# the magnitude to a blend factor of 1, and Solarize is the threshold as a fraction of 255.
_LINEAR_MAGNITUDE_RANGES = {
    SHEAR_X: (0.0, 0.3),
    SHEAR_Y: (0.0, 0.3),
    ROTATE: (0.0, 30.0),
    BRIGHTNESS: (0.0, 0.9),
    COLOR: (0.0, 0.9),
    CONTRAST: (0.0, 0.9),
    SHARPNESS: (0.0, 0.9),
    SOLARIZE: (1.0, 0.0),
}
# Translation at bin 30, as a fraction of the image width (TranslateX) or height (TranslateY),
# the value in torchvision 0.29's RandAugment.
_MAX_TRANSLATE_FRACTION = 150.0 / 331.0

# RandomErasing draws up to this many boxes per image and erases nothing if none fits,
# as torchvision's RandomErasing does.
_ERASING_ATTEMPTS = 10


@dataclass(frozen=True)
class AugmentSpec:
    """Training augmentation of one trial. The defaults give random crop and flip only."""

    crop_flip: bool = True  # random crop with zero padding, then horizontal flip with p = 0.5
    crop_padding: int | None = None  # pixels per side, or None for max(1, round(height / 8))
    randaugment_ops: int = 0  # RandAugment num_ops, where 0 turns RandAugment off
    randaugment_magnitude: int = 9  # bin 0..30 of torchvision's RandAugment magnitude scale
    erasing_p: float = 0.0  # RandomErasing probability per image, where 0 turns it off
    erasing_scale: tuple[float, float] = (0.02, 0.33)  # erased fraction of the image area
    erasing_ratio: tuple[float, float] = (0.3, 3.3)  # erased box height / width

    def __post_init__(self) -> None:
        for name in ("crop_padding", "randaugment_ops", "randaugment_magnitude"):
            value = getattr(self, name)
            if not (isinstance(value, int) or (name == "crop_padding" and value is None)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.crop_padding is not None and self.crop_padding < 0:
            raise ValueError(f"crop_padding must be None or >= 0, got {self.crop_padding}")
        if self.randaugment_ops < 0:
            raise ValueError(f"randaugment_ops must be >= 0, got {self.randaugment_ops}")
        if not 0 <= self.randaugment_magnitude < NUM_MAGNITUDE_BINS:
            raise ValueError(
                f"randaugment_magnitude must be in 0..{NUM_MAGNITUDE_BINS - 1}, "
                f"got {self.randaugment_magnitude}"
            )
        if not 0.0 <= self.erasing_p <= 1.0:
            raise ValueError(f"erasing_p must be in [0, 1], got {self.erasing_p}")
        low, high = self.erasing_scale
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(
                f"erasing_scale must be (min, max) with 0 <= min <= max <= 1, "
                f"got {self.erasing_scale}"
            )
        low, high = self.erasing_ratio
        if not 0.0 < low <= high:
            raise ValueError(
                f"erasing_ratio must be (min, max) with 0 < min <= max, got {self.erasing_ratio}"
            )


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Convert uint8 (N, 3, H, W) images to float32 and normalize them, without augmentation.

    mean and std are per channel, in units of the 0..1 pixel range (as torchvision's Normalize
    after ToDtype(scale=True)). The output keeps the input's device and memory format.
    """
    _check_images(images)
    scale, shift = _normalization_constants(mean, std, images.device)
    return _normalize_with(images, scale, shift)


@dataclass(frozen=True)
class _OpTables:
    """Per-image-size constants of RandAugment at one magnitude bin, on one device."""

    magnitudes: list[float]  # unsigned magnitude of each op, see _op_magnitudes
    source_pixels: torch.Tensor  # long (14, 2, H * W), see _geometric_source_pixels


class BatchAugment:
    """Training augmentation of uint8 image batches, applied per image on the batch's device.

    The order is torchvision's usual one: crop and flip, RandAugment on uint8, conversion to
    float32 with normalization, then RandomErasing with value 0 on the normalized tensor.
    """

    def __init__(self, spec: AugmentSpec, mean: Sequence[float], std: Sequence[float]) -> None:
        self.spec = spec
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        _normalization_constants(self.mean, self.std, torch.device("cpu"))  # validates them
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._op_tables: dict[tuple[int, int, torch.device], _OpTables] = {}

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment and normalize a batch.

        images: uint8 (N, 3, H, W) on any device, contiguous or channels_last, left unchanged.
        generator: a torch.Generator on the same device, the only source of randomness.
        Returns float32 (N, 3, H, W) on the same device and in the same memory format.
        """
        _check_images(images)
        _check_generator(images, generator)
        memory_format = _memory_format(images)

        x = images
        if self.spec.crop_flip:
            x = self.crop_flip(x, generator)
        if self.spec.randaugment_ops > 0:
            x = self.apply_randaugment(x, generator)
        x = x.contiguous(memory_format=memory_format)

        if images.device not in self._constants:
            self._constants[images.device] = _normalization_constants(
                self.mean, self.std, images.device
            )
        scale, shift = self._constants[images.device]
        x = _normalize_with(x, scale, shift)

        if self.spec.erasing_p > 0.0:
            self._erase_in_place(x, generator)
        return x

    def crop_padding(self, height: int) -> int:
        """Return the crop padding in pixels for images of this height."""
        if self.spec.crop_padding is not None:
            return self.spec.crop_padding
        return max(1, round(height / 8))

    def crop_flip(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Crop each uint8 image at a random offset of its zero-padded copy, then flip half.

        Like torchvision's RandomCrop(size, padding) followed by RandomHorizontalFlip(0.5), with
        offsets and flips drawn per image. Returns a new uint8 tensor of the input's shape.
        """
        n, channels, height, width = images.shape
        padding = self.crop_padding(height)
        device = images.device
        top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
        left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
        flip = torch.rand(n, generator=generator, device=device) < 0.5

        # Source row and column of every output pixel in the padded image. A flip reverses the
        # columns inside the crop window, which equals flipping the cropped image.
        rows = top[:, None] + torch.arange(height, device=device)
        columns = torch.arange(width, device=device).expand(n, width)
        columns = torch.where(flip[:, None], columns.flip(1), columns) + left[:, None]
        padded_width = width + 2 * padding
        padded_pixels = (height + 2 * padding) * padded_width
        source = rows[:, :, None] * padded_width + columns[:, None, :]

        # One gather over the flattened padded images, in the input's memory format so that a
        # channels_last batch stays channels_last without a copy.
        padded = F.pad(images, (padding, padding, padding, padding))
        if _memory_format(images) == torch.channels_last:
            padded = padded.permute(0, 2, 3, 1).reshape(n, padded_pixels, channels)
            source = source.view(n, height * width, 1).expand(n, height * width, channels)
            cropped = padded.gather(1, source)
            return cropped.view(n, height, width, channels).permute(0, 3, 1, 2)
        padded = padded.reshape(n, channels, padded_pixels)
        source = source.view(n, 1, height * width).expand(n, channels, height * width)
        cropped = padded.gather(2, source)
        return cropped.view(n, channels, height, width)

    def draw_randaugment_ops(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the RandAugment ops of a batch on the generator's device.

        Returns (ops, negative), both of shape (randaugment_ops, batch_size). Row k contains the
        index into RANDAUGMENT_OPS of each image's k-th op, uniform over the 14 ops, and whether
        that op uses the negative magnitude (p = 0.5, ignored by unsigned ops).
        `apply_randaugment` draws with this method, so the same generator state gives the same
        ops.
        """
        shape = (self.spec.randaugment_ops, batch_size)
        device = generator.device
        ops = torch.randint(0, len(RANDAUGMENT_OPS), shape, generator=generator, device=device)
        negative = torch.rand(shape, generator=generator, device=device) < 0.5
        return ops, negative

    def apply_randaugment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Apply RandAugment to uint8 images, with ops and signs drawn per image.

        Each step sorts the batch by op, so that every op runs once on the contiguous group of
        images that drew it, and the end restores the original image order. Returns a new
        uint8 tensor in contiguous memory format.
        """
        n = images.shape[0]
        ops, negative = self.draw_randaugment_ops(n, generator)
        tables = self._tables_for(images)

        # One host sync for all steps, because the group sizes decide the slices below.
        op_range = torch.arange(len(RANDAUGMENT_OPS), device=images.device)
        group_sizes = (ops[:, :, None] == op_range).sum(dim=1).tolist()

        x = images
        positions = torch.arange(n, device=images.device)  # original index of each row of x
        for step in range(self.spec.randaugment_ops):
            order = torch.argsort(ops[step, positions], stable=True)
            positions = positions[order]
            # index_select copies, so the in-place group updates never write into images.
            x = x.index_select(0, order).contiguous()
            _apply_grouped_ops(
                x, ops[step, positions], negative[step, positions], group_sizes[step], tables
            )

        # index_select with the inverse permutation is several times faster on CPU than
        # index_copy_ with the permutation itself.
        return x.index_select(0, torch.argsort(positions))

    def apply_randaugment_op(
        self, images: torch.Tensor, op: int, negative: torch.Tensor
    ) -> torch.Tensor:
        """Apply one RandAugment op at the spec's magnitude to every uint8 image.

        op: index into RANDAUGMENT_OPS. negative: bool (N,), which images use the negative
        magnitude (ignored by unsigned ops). Returns a new uint8 tensor.
        """
        n = images.shape[0]
        ops = torch.full((n,), op, dtype=torch.long, device=images.device)
        group_sizes = [n if index == op else 0 for index in range(len(RANDAUGMENT_OPS))]
        x = images.contiguous().clone()
        _apply_grouped_ops(
            x, ops, negative.to(images.device), group_sizes, self._tables_for(images)
        )
        return x

    def erase(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return a copy of images where each image has one random box set to 0 with
        probability erasing_p.

        Boxes are drawn as torchvision's RandomErasing draws them: area uniform in erasing_scale
        times the image area, aspect ratio log-uniform in erasing_ratio, side lengths rounded,
        the first of 10 attempts that fits inside the image, else no box. Returns a new tensor.
        """
        erased = images.clone()
        self._erase_in_place(erased, generator)
        return erased

    def _erase_in_place(self, images: torch.Tensor, generator: torch.Generator) -> None:
        n, _, height, width = images.shape
        device = images.device
        spec = self.spec
        attempts = (n, _ERASING_ATTEMPTS)

        # Box sizes of all attempts.
        apply = torch.rand(n, generator=generator, device=device) < spec.erasing_p
        area = torch.empty(attempts, device=device).uniform_(
            *spec.erasing_scale, generator=generator
        )
        area = area * (height * width)
        log_ratio = torch.empty(attempts, device=device).uniform_(
            math.log(spec.erasing_ratio[0]), math.log(spec.erasing_ratio[1]), generator=generator
        )
        ratio = torch.exp(log_ratio)
        box_heights = torch.sqrt(area * ratio).round().long()
        box_widths = torch.sqrt(area / ratio).round().long()

        # argmax returns the first maximal index, so this picks the first attempt that fits.
        fits = (box_heights < height) & (box_widths < width)
        first_fit = fits.int().argmax(dim=1, keepdim=True)
        box_height = box_heights.gather(1, first_fit).squeeze(1)
        box_width = box_widths.gather(1, first_fit).squeeze(1)
        apply = apply & fits.any(dim=1)

        # Box position, uniform over the positions that keep the box inside the image.
        unit = torch.rand((2, n), generator=generator, device=device)
        top = (unit[0] * (height - box_height + 1)).long().clamp_(max=height - box_height)
        left = (unit[1] * (width - box_width + 1)).long().clamp_(max=width - box_width)

        # Rows and columns inside each box, none for images that keep all their pixels.
        rows = torch.arange(height, device=device)
        columns = torch.arange(width, device=device)
        in_rows = (rows >= top[:, None]) & (rows < (top + box_height)[:, None]) & apply[:, None]
        in_columns = (columns >= left[:, None]) & (columns < (left + box_width)[:, None])

        # Multiplying by a 0/1 mask is several times faster on CPU than masked_fill with a
        # broadcast mask. It leaves -0.0 where a value was negative, so adding 0.0 makes it 0.0.
        erased = in_rows.float()[:, None, :, None] * in_columns.float()[:, None, None, :]
        images.mul_(1.0 - erased).add_(0.0)

    def _tables_for(self, images: torch.Tensor) -> _OpTables:
        height, width = images.shape[-2:]
        key = (height, width, images.device)
        if key not in self._op_tables:
            magnitudes = _op_magnitudes(self.spec.randaugment_magnitude, height, width)
            source_pixels = _geometric_source_pixels(magnitudes, height, width)
            self._op_tables[key] = _OpTables(magnitudes, source_pixels.to(images.device))
        return self._op_tables[key]


def _apply_grouped_ops(
    x: torch.Tensor,
    ops: torch.Tensor,
    negative: torch.Tensor,
    group_sizes: list[int],
    tables: _OpTables,
) -> None:
    """Apply each image's op in place, where images are sorted by op.

    x: contiguous uint8 (N, 3, H, W). ops: (N,) op index per image, ascending. negative: bool
    (N,) sign of each image's magnitude. group_sizes: number of images per op, in
    RANDAUGMENT_OPS order.
    """
    starts = [0]
    for size in group_sizes:
        starts.append(starts[-1] + size)

    # The five geometric ops are adjacent in the sort order, so one gather serves them all.
    geometric = slice(starts[GEOMETRIC_OPS.start], starts[GEOMETRIC_OPS.stop])
    if geometric.stop > geometric.start:
        source_pixels = tables.source_pixels[ops[geometric], negative[geometric].long()]
        x[geometric] = _remap_pixels(x[geometric], source_pixels)

    for op in BLEND_OPS:
        group = slice(starts[op], starts[op + 1])
        if group.stop > group.start:
            # Both blend weights go through float64 first, as torchvision derives them from a
            # Python float, so that truncation to uint8 picks the same value as torchvision.
            signs = 1.0 - 2.0 * negative[group].double()
            factors = 1.0 + tables.magnitudes[op] * signs
            weights = torch.stack([factors, 1.0 - factors]).float().view(2, -1, 1, 1, 1)
            x[group] = _BLEND_FUNCTIONS[op](x[group], weights[0], weights[1])

    for op in (POSTERIZE, SOLARIZE, AUTOCONTRAST, EQUALIZE):
        group = slice(starts[op], starts[op + 1])
        if group.stop > group.start:
            x[group] = _apply_unsigned_op(x[group], op, tables.magnitudes[op])


def _op_magnitudes(magnitude_bin: int, height: int, width: int) -> list[float]:
    """Return the unsigned magnitude of each op in RANDAUGMENT_OPS at this bin (0 if it has none).

    Values come from float32 linspace tables, as torchvision computes them, so that values at
    rounding boundaries round the same way. Posterize gives the bits kept, Solarize the
    threshold in 0..255 pixel units, and the translations whole pixels (truncated toward 0).
    """
    magnitudes = [0.0] * len(RANDAUGMENT_OPS)
    for op, (low, high) in _LINEAR_MAGNITUDE_RANGES.items():
        magnitudes[op] = float(torch.linspace(low, high, NUM_MAGNITUDE_BINS)[magnitude_bin])
    for op, size in ((TRANSLATE_X, width), (TRANSLATE_Y, height)):
        max_shift = _MAX_TRANSLATE_FRACTION * size
        shift = float(torch.linspace(0.0, max_shift, NUM_MAGNITUDE_BINS)[magnitude_bin])
        magnitudes[op] = float(int(shift))
    # Bits kept fall from 8 at bin 0 to 4 at bin 30.
    magnitudes[POSTERIZE] = float(round(8 - magnitude_bin / ((NUM_MAGNITUDE_BINS - 1) / 4)))
    magnitudes[SOLARIZE] *= 255.0
    return magnitudes


def _inverse_affine_matrix(op: int, magnitude: float, height: int, width: int) -> list[float]:
    """Return the 2x3 matrix that maps an output pixel to its source pixel for a geometric op.

    Coordinates are in pixels from the image center, as in torchvision's tensor affine. Shears
    are about the top-left corner, translations by whole pixels, rotations counterclockwise.
    """
    if op == SHEAR_X:
        return [1.0, magnitude, magnitude * height / 2, 0.0, 1.0, 0.0]
    if op == SHEAR_Y:
        return [1.0, 0.0, 0.0, magnitude, 1.0, magnitude * width / 2]
    if op == TRANSLATE_X:
        return [1.0, 0.0, -magnitude, 0.0, 1.0, 0.0]
    if op == TRANSLATE_Y:
        return [1.0, 0.0, 0.0, 0.0, 1.0, -magnitude]
    if op == ROTATE:
        angle = math.radians(magnitude)
        cos, sin = math.cos(angle), math.sin(angle)
        return [cos, -sin, 0.0, sin, cos, 0.0]
    return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _geometric_source_pixels(magnitudes: list[float], height: int, width: int) -> torch.Tensor:
    """Return the flat source pixel of every output pixel, per op and sign, on the CPU.

    Shape (14, 2, H * W), indexed [op, negative, output pixel], long. The value H * W marks a
    pixel mapped outside the image, which is filled with 0. Ops without geometry map each pixel
    to itself. The magnitude is fixed per spec, so each op and sign needs only one map.
    """
    if height * width >= 2**24:
        raise ValueError(
            f"images of {height}x{width} pixels are too large for RandAugment's geometric ops, "
            f"which index pixels through float32 (at most 2**24 pixels)"
        )
    matrices = [
        _inverse_affine_matrix(op, sign * magnitudes[op], height, width)
        for op in range(len(RANDAUGMENT_OPS))
        for sign in (1.0, -1.0)
    ]
    theta = torch.tensor(matrices, dtype=torch.float32).view(-1, 2, 3)

    # The sampling grid as torchvision builds it: pixel centers from the image center, mapped by
    # the matrix, then scaled to grid_sample's -1..1 range (align_corners=False).
    xs = torch.linspace((1.0 - width) / 2, (width - 1.0) / 2, width)
    ys = torch.linspace((1.0 - height) / 2, (height - 1.0) / 2, height)
    base = torch.stack(
        [xs.expand(height, width), ys[:, None].expand(height, width), torch.ones(height, width)],
        dim=-1,
    ).view(1, height * width, 3)
    half_size = torch.tensor([width / 2, height / 2])
    grid = base.expand(len(matrices), -1, -1).bmm(theta.transpose(1, 2) / half_size)

    # Nearest sampling of an image whose values are the pixel indices + 1 gives the source pixel
    # that grid_sample would pick, and 0 where it would fill.
    pixel_numbers = torch.arange(1, height * width + 1, dtype=torch.float32).view(
        1, 1, height, width
    )
    sampled = F.grid_sample(
        pixel_numbers.expand(len(matrices), -1, -1, -1),
        grid.view(-1, height, width, 2),
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )
    source = sampled.view(len(RANDAUGMENT_OPS), 2, height * width).long() - 1
    return torch.where(source < 0, height * width, source)


def _remap_pixels(x: torch.Tensor, source_pixels: torch.Tensor) -> torch.Tensor:
    """Return x with each output pixel taken from its source pixel, or 0 where that is H * W.

    x: contiguous uint8 (N, C, H, W). source_pixels: long (N, H * W).
    """
    n, channels, height, width = x.shape
    flat = F.pad(x.view(n, channels, height * width), (0, 1))  # the extra last pixel is 0
    remapped = flat.gather(2, source_pixels[:, None, :].expand(-1, channels, -1))
    return remapped.view(n, channels, height, width)


# The blend ops take per-image weights of shape (N, 1, 1, 1): factors for the image and
# complements (1 - factors) for the degenerate image it is blended with, both float32.


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """Return the floored ITU-R 601-2 luma of uint8 RGB images as float32 (N, 1, H, W)."""
    red, green, blue = x.unbind(dim=1)
    luma = red.mul(0.2989).add_(green, alpha=0.587).add_(blue, alpha=0.114)
    return luma.floor_().unsqueeze(1)


def _blend(
    x: torch.Tensor, degenerate: torch.Tensor, factors: torch.Tensor, complements: torch.Tensor
) -> torch.Tensor:
    blended = x.mul(factors).addcmul_(degenerate, complements)
    return blended.clamp_(0, 255).to(torch.uint8)


def _adjust_brightness(
    x: torch.Tensor, factors: torch.Tensor, complements: torch.Tensor
) -> torch.Tensor:
    return x.mul(factors).clamp_(0, 255).to(torch.uint8)


def _adjust_color(
    x: torch.Tensor, factors: torch.Tensor, complements: torch.Tensor
) -> torch.Tensor:
    return _blend(x, _grayscale(x), factors, complements)


def _adjust_contrast(
    x: torch.Tensor, factors: torch.Tensor, complements: torch.Tensor
) -> torch.Tensor:
    mean_luma = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean_luma, factors, complements)


def _adjust_sharpness(
    x: torch.Tensor, factors: torch.Tensor, complements: torch.Tensor
) -> torch.Tensor:
    """Blend each image's interior with a smoothed copy. The one-pixel border stays as it is.

    The smoothing kernel is torchvision's: weight 5/13 at the center and 1/13 around it. The
    sums below are exact integers in float32, and (sum / 13) is never within 0.03 of a
    rounding tie, so the rounded result equals torchvision's convolution.
    """
    height, width = x.shape[-2:]
    if height <= 2 or width <= 2:
        return x.clone()
    output = x.float()
    row_sums = output[..., :-2] + output[..., 1:-1] + output[..., 2:]
    window_sums = row_sums[..., :-2, :] + row_sums[..., 1:-1, :] + row_sums[..., 2:, :]
    interior = output[..., 1:-1, 1:-1]
    smoothed = window_sums.add_(interior, alpha=4.0).div_(13.0).round_()
    interior.addcmul_(smoothed.sub_(interior), complements)
    return output.clamp_(0, 255).to(torch.uint8)


_BLEND_FUNCTIONS = {
    BRIGHTNESS: _adjust_brightness,
    COLOR: _adjust_color,
    CONTRAST: _adjust_contrast,
    SHARPNESS: _adjust_sharpness,
}


def _apply_unsigned_op(x: torch.Tensor, op: int, magnitude: float) -> torch.Tensor:
    # torchvision's v2 functionals treat every leading dimension as a batch, and their
    # autocontrast and equalize compute the statistics of each image and channel separately.
    if op == POSTERIZE:
        return TF.posterize(x, bits=int(magnitude))
    if op == SOLARIZE:
        # The result equals TF.solarize, because x >= t equals x >= ceil(t) for integer pixels
        # and XOR with 255 inverts a uint8 pixel. On CPU this is 4x faster than TF.solarize,
        # which compares in float and selects with torch.where.
        inverted = (x >= math.ceil(magnitude)).to(torch.uint8).mul_(255)
        return x.bitwise_xor(inverted)
    if op == AUTOCONTRAST:
        return TF.autocontrast(x)
    if op == EQUALIZE:
        return TF.equalize(x)
    raise ValueError(f"op {op} ({RANDAUGMENT_OPS[op]}) is not an unsigned RandAugment op")


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")


def _check_generator(images: torch.Tensor, generator: torch.Generator) -> None:
    if generator.device.type != images.device.type:
        raise ValueError(
            f"generator is on {generator.device} but images are on {images.device}. "
            f"Create the generator with torch.Generator(device=images.device)"
        )


def _memory_format(images: torch.Tensor) -> torch.memory_format:
    if not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _normalization_constants(
    mean: Sequence[float], std: Sequence[float], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (scale, shift) such that uint8 * scale + shift == (uint8 / 255 - mean) / std."""
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std must have 3 values each, got {mean} and {std}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be > 0, got {std}")
    mean_t = torch.tensor(mean, dtype=torch.float64)
    std_t = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * std_t)).float().view(1, 3, 1, 1).to(device)
    shift = (-mean_t / std_t).float().view(1, 3, 1, 1).to(device)
    return scale, shift


def _normalize_with(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return images.float().mul_(scale).add_(shift)
