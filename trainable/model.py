"""The model family: torchvision ResNet 18/34/50 with a choice of stem and a dropout head."""

from __future__ import annotations

from torch import nn
from torchvision import models

_CONSTRUCTORS = {18: models.resnet18, 34: models.resnet34, 50: models.resnet50}


def build_model(
    depth: int, stem: str, dropout: float, num_classes: int, image_size: int | None = None
) -> nn.Module:
    """Build a randomly initialized ResNet of the family.

    Stems (first convolution, then the max-pool):
    - ``torchvision``: 7x7, stride 2, padding 3, max-pool kept (the ImageNet network unchanged);
    - ``dilated``: 7x7, stride 1, padding 2, dilation 2, max-pool kept (padding grows for
      images under 9 px, where padding 2 would leave an empty feature map);
    - ``cifar``: 3x3, stride 1, padding 1, max-pool removed (for small images).
    The head is Dropout(dropout) then Linear(features, num_classes).
    """
    if depth not in _CONSTRUCTORS:
        raise ValueError(f"depth {depth} is not supported; use one of {sorted(_CONSTRUCTORS)}")
    model = _CONSTRUCTORS[depth](weights=None, num_classes=num_classes)

    if stem == "dilated":
        padding = dilated_stem_padding(image_size)
        model.conv1 = nn.Conv2d(
            3, 64, kernel_size=7, stride=1, padding=padding, dilation=2, bias=False
        )
    elif stem == "cifar":
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif stem != "torchvision":
        raise ValueError(f"stem {stem!r} is not supported; use torchvision, dilated or cifar")
    if stem != "torchvision":
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")

    features = model.fc.in_features
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))
    return model


def dilated_stem_padding(image_size: int | None) -> int:
    """Return the padding of the dilated stem: the report's 2, or more for tiny images.

    The dilated 7x7 kernel spans 13 pixels, so the output side is ``size + 2 * padding - 12``.
    """
    if image_size is None or image_size + 4 - 12 >= 1:
        return 2
    return -(-(13 - image_size) // 2)


def kept_features(depth: int, dropout: float) -> float:
    """Return the expected number of head features that survive dropout.

    The reference report kept it at 256 when moving from ResNet34 (512 features, p = 0.5)
    to ResNet50 (2048 features, p = 0.875).
    """
    return head_features(depth) * (1.0 - dropout)


def head_features(depth: int) -> int:
    """Return the width of the pooled features that feed the head."""
    return 2048 if depth == 50 else 512
