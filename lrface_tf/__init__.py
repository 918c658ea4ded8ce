"""lrface_tf: low-resolution recognition by cross-resolution knowledge distillation.

The public names most code needs; everything else lives in its subpackage
(`lrface_tf.losses`, `lrface_tf.eval`, `lrface_tf.export`, ...).
"""

from lrface_tf.data import DegradationSpec, degrade, paired_dataset
from lrface_tf.methods import METHODS, method_terms, resolve
from lrface_tf.models import Distiller, DistillTerm, build_recognizer

__version__ = "0.2.0"

__all__ = [
    "METHODS",
    "DegradationSpec",
    "DistillTerm",
    "Distiller",
    "build_recognizer",
    "degrade",
    "method_terms",
    "paired_dataset",
    "resolve",
]
