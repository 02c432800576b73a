"""Named search spaces of the ResNet family and the reference report's runs as configs."""

from spaces import finetune, report, resnet_family  # noqa: F401  (each module registers its space)
from spaces.registry import (
    SearchSpace,
    SpaceContext,
    UnknownSpaceError,
    all_spaces,
    get_space,
    sample_configs,
)

__all__ = [
    "SearchSpace",
    "SpaceContext",
    "UnknownSpaceError",
    "all_spaces",
    "get_space",
    "sample_configs",
]
