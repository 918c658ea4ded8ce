"""Data: degradation, paired HR/LR pipelines and loaders."""

from lrface_tf.data.datasets import (
    DataError,
    flat_folder,
    identity_folder,
    identity_folder_dataset,
    lfw_pairs,
    load_fashion_mnist,
    read_idx,
)
from lrface_tf.data.degrade import KERNELS, DegradationSpec, LRAugment, degrade, gaussian_blur
from lrface_tf.data.images import check_image, image_format, list_images, read_image
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
    "LRAugment",
    "check_image",
    "class_balanced_subset",
    "degrade",
    "flat_folder",
    "gaussian_blur",
    "identity_folder",
    "identity_folder_dataset",
    "image_format",
    "lfw_pairs",
    "list_images",
    "load_fashion_mnist",
    "paired_dataset",
    "read_idx",
    "read_image",
    "single_view_dataset",
]
