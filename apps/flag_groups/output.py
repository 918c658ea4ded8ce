"""Where a run writes, and how much it says."""

from __future__ import annotations

import os

from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string("output_dir", None, "Run folder (default saved_models/<app>_<name>).")
flags.DEFINE_integer(
    "verbose",
    -1,
    "Keras progress: 0 silent, 1 bar, 2 a line per epoch; -1: 1 on a terminal, 2 else.",
)


def verbose():
    """--verbose, with -1 meaning a progress bar on a terminal and one line per epoch elsewhere."""
    import sys

    if FLAGS.verbose >= 0:
        return FLAGS.verbose
    return 1 if sys.stdout.isatty() else 2


def folder(default_name, strategy=None):
    """The run folder; a non-chief multi-worker process writes to `<folder>/worker_<i>`."""
    from lrface_tf.training import is_chief, worker_index

    base = FLAGS.output_dir or os.path.join("saved_models", default_name)
    if strategy is None or is_chief(strategy):
        return base
    return os.path.join(base, f"worker_{worker_index(strategy)}")
