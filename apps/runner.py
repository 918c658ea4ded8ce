"""Running an app: absl's `app.run` with bad input turned into one-line errors, and the
run record written from the flags the app defines."""

from __future__ import annotations

import os
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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find_flagfile(path, including=None):
    """A flagfile path as given, next to the file that names it, or under the repository."""
    candidates = [path]
    if including:
        candidates.append(os.path.join(os.path.dirname(including), path))
    candidates.append(os.path.join(ROOT, path))
    for c in candidates:
        if os.path.isfile(c):
            return c
    where = f" (named in {including})" if including else ""
    fail(f"flagfile {path}{where} not found, also not under {ROOT}; check the path")


def _flatten(path, including=None, seen=()):
    """The flag lines of a flagfile with its nested flagfiles inlined, wherever it runs from."""
    path = _find_flagfile(path, including)
    if os.path.abspath(path) in seen:
        fail(f"flagfile {path} includes itself")
    lines = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("--flagfile="):
                lines += _flatten(line.split("=", 1)[1], path, (*seen, os.path.abspath(path)))
            elif line and not line.startswith(("#", "//")):
                lines.append(line)
    return lines


def resolve_flagfiles(argv):
    """argv with every --flagfile expanded into one temporary flat flagfile, so nested
    flagfiles resolve from any working directory (as given, next to the file that
    names them, or under the repository root)."""
    import atexit
    import tempfile

    out = []
    for arg in argv:
        if arg.startswith("--flagfile="):
            lines = _flatten(arg.split("=", 1)[1])
            f = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
            f.write("\n".join(lines) + "\n")
            f.close()
            atexit.register(os.remove, f.name)
            out.append(f"--flagfile={f.name}")
        else:
            out.append(arg)
    return out


def run(main, adopt=()):
    """`app.run(main)` with one-line errors for bad input; `adopt`: flag-group modules
    whose flags `--help` lists with the app's own."""
    for module in adopt:
        flags.adopt_module_key_flags(module)
    global _COMMAND
    _COMMAND = list(sys.argv)
    sys.argv = resolve_flagfiles(sys.argv)

    def wrapped(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; every option is a --flag")
        import tensorflow as tf

        from lrface_tf.data.datasets import DataError
        from lrface_tf.runs import RunFolderBusy
        from lrface_tf.training import RunInterrupted

        try:
            return main(argv)
        except RunInterrupted as e:
            print(f"stopped: {e}", file=sys.stderr)
            sys.exit(143)
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
        except (OSError, tf.errors.OpError) as e:
            # A disk that fills, a file that breaks mid-stream, a model LiteRT cannot convert.
            fail(f"{type(e).__name__}: {_one_line(e)}")
        except Exception as e:
            if type(e).__name__ != "ConverterError":
                raise
            fail(f"TFLite conversion failed: {_one_line(e)}")

    app.run(wrapped)


_COMMAND = None  # the command line as typed (before flagfiles were flattened)


def command():
    """The command line as the user typed it: `python -m apps.<app> ...`."""
    argv = _COMMAND or sys.argv
    main = sys.modules.get("__main__")
    module = getattr(getattr(main, "__spec__", None), "name", None)
    program = f"python -m {module}" if module else os.path.basename(argv[0] or "python")
    return " ".join([program, *argv[1:]])


def flags_text():
    """The flags of the apps' modules as a flagfile (rerun it to reproduce the run)."""
    lines = {}
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        if module.startswith("apps") or module == sys.argv[0]:
            for f in module_flags:
                if f.value is not None:
                    lines[f.name] = f.serialize()
    return "\n".join(lines[k] for k in sorted(lines)) + "\n"
