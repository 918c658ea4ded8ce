"""Running an app: absl's `app.run` with bad input turned into one-line errors, and the
run record written from the flags the app defines."""

from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS


def fail(message):
    """One-line error on stderr and exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _one_line(error):
    """The message of an error on one line: its lines joined, Keras' call-stack noise dropped."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    keep = [
        ln
        for ln in lines
        if not ln.startswith(
            ("Exception encountered", "Arguments received", "•", "File ", "Traceback")
        )
    ]
    text = " ".join(keep or lines) or type(error).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def run(main, adopt=()):
    """`app.run(main)` with one-line errors for bad input; `adopt`: flag-group modules
    whose flags `--help` lists with the app's own."""
    for module in adopt:
        flags.adopt_module_key_flags(module)

    def wrapped(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; every option is a --flag")
        from lrface_tf.data.datasets import DataError
        from lrface_tf.runs import RunFolderBusy

        try:
            return main(argv)
        except (
            ValueError,
            DataError,
            FileNotFoundError,
            FloatingPointError,
            RunFolderBusy,
            NotADirectoryError,
            PermissionError,
        ) as e:
            fail(_one_line(e))

    app.run(wrapped)


def flags_text():
    """The flags of the apps' modules as a flagfile (rerun it to reproduce the run)."""
    lines = {}
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        if module.startswith("apps") or module == sys.argv[0]:
            for f in module_flags:
                if f.value is not None:
                    lines[f.name] = f.serialize()
    return "\n".join(lines[k] for k in sorted(lines)) + "\n"
