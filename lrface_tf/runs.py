"""Run folders: one owner at a time, and a record of what each run did.

Every app run writes into its `--output_dir`:

    flags.cfg         the resolved flags as a flagfile (rerun it to reproduce)
    config.json       the resolved configuration (method defaults filled in)
    degradation.json  the LR protocol (`DegradationSpec`)
    metrics.json      history, results, data report, seconds, command, date

`RunFolder` owns the folder while a run lives: a second run started into the
same folder stops with one line naming the holder, instead of both writing and
the last one silently winning; a run that fails before writing anything leaves
no folder behind. The lock is an advisory `fcntl` lock on
`<folder>/.lock`, released by the operating system when the process ends, even
by SIGKILL, so a killed run never leaves the folder blocked.
"""

from __future__ import annotations

import os
import platform
import sys
import time

LOCK_FILE = ".lock"


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder."""


class RunFolderUnusable(ValueError):
    """The run folder cannot be created or written."""


class RunFolder:
    """Exclusive ownership of a run folder for the life of a run (a context manager).

    Args:
      path: the folder (created on entry).

    Raises on entry:
      RunFolderBusy: naming the folder and the process that holds it.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._fd = None
        self._created = False

    def __enter__(self):
        import fcntl

        self._created = not os.path.exists(self.path)
        lock = os.path.join(self.path, LOCK_FILE)
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFolderUnusable(
                f"cannot write the output folder {self.path} ({e.strerror}); pass a writable "
                "--output_dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderBusy(
                f"output folder {self.path} is in use by a live run ({holder}); wait for it "
                "to finish or pass another --output_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {platform.node()}, since {_now()}".encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None
        if exc_type is not None and self._created:
            # A run that failed before writing anything leaves no folder behind.
            try:
                if os.listdir(self.path) == [LOCK_FILE]:
                    os.remove(os.path.join(self.path, LOCK_FILE))
                    os.rmdir(self.path)
            except OSError:
                pass
        return False


def _now():
    return time.strftime("%Y-%m-%d %H:%M:%S")


def write_record(folder, *, metrics, config=None, flags_text=None, spec=None, command=None):
    """Write a run's record files into `folder`, each atomically, metrics.json last.

    A reader that finds metrics.json finds the whole record. `metrics` gets the
    command line, the date and the library versions added.
    """
    from lrface_tf.export.atomic import write_json, write_text

    os.makedirs(folder, exist_ok=True)
    if flags_text is not None:
        write_text(os.path.join(folder, "flags.cfg"), flags_text)
    if config is not None:
        write_json(os.path.join(folder, "config.json"), config)
    if spec is not None:
        write_json(os.path.join(folder, "degradation.json"), spec.to_dict())
    record = {**metrics, **provenance()}
    if command is not None:
        record["command"] = command
    write_json(os.path.join(folder, "metrics.json"), record)


def provenance():
    """Command line, date and versions: where a record came from."""
    import keras
    import tensorflow as tf

    import lrface_tf

    main = sys.modules.get("__main__")
    module = getattr(getattr(main, "__spec__", None), "name", None)
    program = f"python -m {module}" if module else os.path.basename(sys.argv[0] or "python")
    return {
        "command": " ".join([program, *sys.argv[1:]]),
        "date": _now(),
        "versions": {
            "lrface_tf": lrface_tf.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
    }
