"""Data: degradation, paired HR/LR pipelines and loaders."""

from lrface_tf.data.datasets import (
    DataError,
    identity_folder,
    identity_folder_dataset,
    lfw_pairs,
    load_fashion_mnist,
    read_idx,
)
from lrface_tf.data.degrade import KERNELS, DegradationSpec, degrade, gaussian_blur
from lrface_tf.data.pipeline import (
    UNLABELLED,
    class_balanced_subset,
    paired_dataset,
    single_view_dataset,
)

__all__ = [
    "KERNELS",
    "UNLABELLED",
    "DataError",
    "DegradationSpec",
    "class_balanced_subset",
    "degrade",
    "gaussian_blur",
    "identity_folder",
    "identity_folder_dataset",
    "lfw_pairs",
    "load_fashion_mnist",
    "paired_dataset",
    "read_idx",
    "single_view_dataset",
]
