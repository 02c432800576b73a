"""Tests of the model family: output shapes, the three stems and the dropout head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainable.config import DEPTHS, STEMS
from trainable.model import build_model, dilated_stem_padding, head_features, kept_features

NUM_CLASSES = 7

# stem: (kernel_size, stride, padding, dilation) of the first convolution, max-pool kept
STEM_LAYOUT = {
    "torchvision": ((7, 7), (2, 2), (3, 3), (1, 1), True),
    "dilated": ((7, 7), (1, 1), (2, 2), (2, 2), True),
    "cifar": ((3, 3), (1, 1), (1, 1), (1, 1), False),
}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run torch on one intra-op thread, because the forward passes are tiny and two threads
    that wait on each other are several times slower when other processes load the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("size", [8, 40])
@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("depth", DEPTHS)
def test_build_model_output_shape(depth: int, stem: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(depth, stem, 0.5, NUM_CLASSES, image_size=size).eval()

    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))

    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("stem", STEMS)
def test_build_model_stem_first_convolution(stem: str) -> None:
    kernel_size, stride, padding, dilation, _ = STEM_LAYOUT[stem]

    conv = build_model(18, stem, 0.0, NUM_CLASSES, image_size=40).conv1

    assert isinstance(conv, nn.Conv2d)
    assert conv.in_channels == 3
    assert conv.out_channels == 64
    assert conv.kernel_size == kernel_size
    assert conv.stride == stride
    assert conv.padding == padding
    assert conv.dilation == dilation
    assert conv.bias is None


@pytest.mark.parametrize("stem", STEMS)
def test_build_model_stem_max_pool(stem: str) -> None:
    kept = STEM_LAYOUT[stem][4]

    maxpool = build_model(18, stem, 0.0, NUM_CLASSES, image_size=40).maxpool

    assert isinstance(maxpool, nn.MaxPool2d if kept else nn.Identity)


def test_build_model_dilated_default_padding() -> None:
    conv = build_model(18, "dilated", 0.0, NUM_CLASSES).conv1

    assert conv.padding == (2, 2)


@pytest.mark.parametrize(("depth", "features"), [(18, 512), (34, 512), (50, 2048)])
@pytest.mark.parametrize("dropout", [0.0, 0.2, 0.875])
def test_build_model_head_is_dropout_then_linear(depth: int, features: int, dropout: float) -> None:
    head = build_model(depth, "cifar", dropout, NUM_CLASSES).fc

    assert isinstance(head, nn.Sequential)
    assert len(head) == 2
    assert isinstance(head[0], nn.Dropout)
    assert head[0].p == dropout
    assert isinstance(head[1], nn.Linear)
    assert head[1].in_features == features
    assert head[1].out_features == NUM_CLASSES


def test_build_model_dropout_active_only_in_train_mode() -> None:
    torch.manual_seed(0)
    model = build_model(18, "cifar", 0.5, NUM_CLASSES)
    images = torch.randn(2, 3, 8, 8)

    with torch.no_grad():
        model.train()
        train_first, train_second = model(images), model(images)
        model.eval()
        eval_first, eval_second = model(images), model(images)

    assert not torch.equal(train_first, train_second)
    assert torch.equal(eval_first, eval_second)


@pytest.mark.parametrize(("depth", "stem"), [(20, "cifar"), (18, "imagenet")])
def test_build_model_unknown_architecture_raises(depth: int, stem: str) -> None:
    with pytest.raises(ValueError, match="not supported"):
        build_model(depth, stem, 0.0, NUM_CLASSES)


@pytest.mark.parametrize(
    ("size", "padding"), [(None, 2), (40, 2), (9, 2), (8, 3), (7, 3), (4, 5), (1, 6)]
)
def test_dilated_stem_padding(size: int | None, padding: int) -> None:
    assert dilated_stem_padding(size) == padding


@pytest.mark.parametrize("size", range(1, 10))
def test_dilated_stem_padding_leaves_nonempty_output(size: int) -> None:
    # The dilated 7x7 kernel spans 13 pixels.
    output_side = size + 2 * dilated_stem_padding(size) - 12

    assert output_side >= 1


@pytest.mark.parametrize(("depth", "features"), [(18, 512), (34, 512), (50, 2048)])
def test_head_features_matches_model(depth: int, features: int) -> None:
    model = build_model(depth, "cifar", 0.0, NUM_CLASSES)

    assert head_features(depth) == features
    assert model.fc[1].in_features == head_features(depth)


def test_kept_features_resnet34_equals_resnet50() -> None:
    # ResNet34 with p = 0.5 and ResNet50 with p = 0.875 both keep 256 features.
    assert kept_features(34, 0.5) == 256
    assert kept_features(50, 0.875) == 256
