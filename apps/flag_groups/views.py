"""The K fixed augmented views per image (lrface_tf.data.views): --views and their ranges."""

from __future__ import annotations

from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_integer(
    "views",
    0,
    "K fixed augmented views per image (0: --augment per step); see lrface_tf.data.views.",
)
flags.DEFINE_bool("view_flip", True, "Views: view 1 is the mirror image; views 2.. flip at random.")
flags.DEFINE_float("view_shift", 0.0, "Views: largest shift, as a fraction of the side.")
flags.DEFINE_float("view_scale", 0.0, "Views: largest zoom change (fraction).")
flags.DEFINE_float("view_rotation", 0.0, "Views: largest rotation in degrees.")
flags.DEFINE_float("view_colour", 0.0, "Views: largest brightness / contrast / saturation change.")
flags.DEFINE_integer(
    "view_seed", 0, "Seed of the views (not --seed: runs of several seeds share one cache)."
)


def spec():
    """The `ViewSpec` of the flags, or None without --views."""
    from lrface_tf.data.views import ViewSpec

    if not FLAGS.views:
        return None
    return ViewSpec(
        count=FLAGS.views,
        flip=FLAGS.view_flip,
        shift=FLAGS.view_shift,
        scale=FLAGS.view_scale,
        rotation=FLAGS.view_rotation,
        colour=FLAGS.view_colour,
        seed=FLAGS.view_seed,
    )
