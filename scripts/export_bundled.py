"""Exports a trained run as a bundled model: float16 weights and its JSON files, into the package.

    .venv/bin/python scripts/export_bundled.py RUN_DIR NAME [--force] [--tunes FILE.abc]
                                               [--dest FOLDER] [--tolerance NATS]
                                               [--why TEXT]

Takes the run's best checkpoint (its last when it has none), writes `musicgen/bundled_models/NAME/`
(or `FOLDER/NAME`, or `$MUSICGEN_BUNDLED_DIR/NAME` when that is set), and refuses when the float16
model's logits on real tunes (the run's first validation tunes, or those of --tunes) stray further
than the tolerance from the float32 model's. What it does is `musicgen.training.export.export_bundled`.
Errors are one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by musicgen train")
    parser.add_argument("name", help="the bundled model's name, e.g. folk-lstm")
    parser.add_argument("--force", action="store_true", help="replace a model of that name")
    parser.add_argument("--dest", type=Path, default=None, help="the folder of bundled models")
    parser.add_argument("--tunes", type=Path, default=None, help="an .abc file to check against")
    parser.add_argument("--tolerance", type=float, default=None, help="largest logit difference")
    parser.add_argument("--why", default=None, help="why this model (the card's `why`)")
    args = parser.parse_args(argv)

    from musicgen.errors import MusicgenError
    from musicgen.training.export import LOGIT_TOLERANCE, export_bundled

    def warn(message: str) -> None:
        print(f"export_bundled: {message}", file=sys.stderr, flush=True)

    try:
        tunes = None
        if args.tunes is not None:
            from musicgen.data.corpus import load_corpus

            tunes = [tune.text for tune in load_corpus([args.tunes])[0]]
        tolerance = LOGIT_TOLERANCE if args.tolerance is None else args.tolerance
        result = export_bundled(
            args.run_dir, args.name, root=args.dest, force=args.force, tunes=tunes,
            tolerance=tolerance, warn=warn, why=args.why,
        )  # fmt: skip
    except (MusicgenError, OSError) as exc:
        print(f"export_bundled: error: {exc}", file=sys.stderr)
        return 1
    check = result.check
    print(
        f"wrote {result.folder}: the {result.checkpoint} checkpoint (step {result.step}), "
        f"{result.weights_bytes / 2**20:.1f} MB of float16 weights; logits within "
        f"{check['max_logit_difference']:.4f} of float32's on {check['tunes']} real tunes "
        f"(bits/char {check['bits_per_char_float32']:.4f} -> {check['bits_per_char_float16']:.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
