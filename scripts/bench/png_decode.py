"""A PNG's decode in the image check: Pillow alone, ISA-L's inflate + Pillow, and ISA-L's
inflate + libspng's unfiltering where the PNG is plain enough (what it gets now).

    PYTHONPATH=TREE python scripts/bench/png_decode.py [--images 2000] [--rounds 3]

Takes the PNGs of scripts/bench/throughput.py's corpus (same seed and size, generated under
--workdir when missing) and decodes each every way, rotating which goes first per file and
per round, on this thread's CPU clock: `media._decode` of the header Pillow parsed (what
every PNG got before builder/png_inflate.py), Pillow's decode of `png_inflate.restored`'s
stored copy (before builder/png_pixels.py) and `media._decode_png` (what it gets now).
Alternating per file keeps the machine's drift out of the ratio.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from PIL import PngImagePlugin

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import make_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cleanset-cpu-bench"))
    args = parser.parse_args()

    from builder import media

    make_corpus(args.workdir, args.images, args.seed)
    files = [path.read_bytes() for path in sorted((args.workdir / "img").glob("*.png"))]
    from builder.png_inflate import restored

    spent = {"Pillow alone": 0.0, "ISA-L + Pillow": 0.0, "ISA-L + libspng": 0.0}
    ways = list(spent)
    for round_ in range(args.rounds):
        for n, data in enumerate(files):
            order = ways[(n + round_) % 3:] + ways[:(n + round_) % 3]
            for way in (order if (n + round_) % 2 == 0 else order[::-1]):
                header = PngImagePlugin.PngImageFile(io.BytesIO(data))
                start = time.thread_time()
                if way == "Pillow alone":
                    media._decode(header, "png", want_reduced=False)
                elif way == "ISA-L + Pillow":
                    stored = restored(data)
                    assert stored is not None
                    media._decode(PngImagePlugin.PngImageFile(io.BytesIO(stored)), "png",
                                  want_reduced=False)
                else:
                    media._decode_png(data, header)
                spent[way] += time.thread_time() - start
    count = args.rounds * len(files)
    mean_kb = sum(len(f) for f in files) / len(files) / 1e3
    print(f"{len(files)} PNGs, mean {mean_kb:.0f} KB, {args.rounds} rounds; CPU ms per decode:")
    for way, seconds in spent.items():
        print(f"  {way:16s} {seconds / count * 1e3:6.2f}  "
              f"{seconds / spent['Pillow alone']:4.2f}x Pillow alone")


if __name__ == "__main__":
    main()
