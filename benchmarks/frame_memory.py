"""Peak memory of bringing one large frame to SAM2's input, as the Nuclio functions do.

A 16-bit greyscale PNG (aerial and thermal footage) is decoded from its bytes and turned into
the model's input; each measurement runs in a fresh process and reports the growth of its peak
resident memory (`ru_maxrss`) over the same process before decoding, so that imports are left out:

    python benchmarks/frame_memory.py --width 8000 --height 6000 --name frame-memory-48mp
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image

RESULTS = Path(__file__).parent / "results"


def _measure(path: str, image_size: int) -> dict:
    from tracker.engine.frames import to_model_input

    data = Path(path).read_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = PIL.Image.open(io.BytesIO(data))
    image.load()
    to_model_input(image, image_size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": image.mode, "peak_growth_mb": (peak - before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--name", help="write benchmarks/results/NAME.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.image_size)))
        return
    rows = np.linspace(0, 60000, args.height, dtype=np.uint16)[:, None]
    noise = np.random.default_rng(0).integers(0, 4000, (args.height, args.width), np.uint16)
    path = Path(f"/tmp/frame-memory-{args.width}x{args.height}.png")
    PIL.Image.fromarray(rows + noise).save(path)
    child = [sys.executable, __file__, "--child", str(path), "--image-size", str(args.image_size)]
    result = json.loads(subprocess.run(child, capture_output=True, text=True, check=True).stdout)
    megapixels = args.width * args.height / 1e6
    result.update(width=args.width, height=args.height, megapixels=megapixels,
                  decoded_mb=args.width * args.height * 2 / 2**20)  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.name:
        (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
