"""Frame decoding: the decoders at hand, timed on the frames CVAT sends, and checked for pixels.

The Nuclio functions and the server get each frame as an encoded JPEG or PNG and need it as an
8-bit RGB PIL image (the engine resizes it with PIL, as upstream does). Decoders at hand: PIL
(libjpeg-turbo, zlib), `torchvision.io.decode_image` (its own libjpeg and libpng) and OpenCV's
`cv2.imdecode`, each to that image. A decoder is usable only if it gives PIL's very pixels.
Noisy full-HD frames (noise is the worst case for both codecs), the median of `--repeats` runs,
one thread (the functions' threads are for the model). Writes benchmarks/results/NAME.{json,txt}:

    python benchmarks/frame_decoding.py --repeats 60 --name decode-1080p-round1
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
import PIL.Image
import torch
import torchvision.io
from recording import record  # beside this file: run as a script


def _frames(width: int, height: int) -> dict[str, bytes]:
    """A noisy frame over smooth gradients, as JPEG (CVAT's default quality, 95 here) and PNG."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    base = (x * [1.0, 0.5, 0.2] + y * [0.0, 0.5, 0.8]) / 1.5
    pixels = np.clip(base + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    encoded = {}
    for name, options in [("jpeg", {"format": "JPEG", "quality": 95}), ("png", {"format": "PNG"})]:
        data = io.BytesIO()
        PIL.Image.fromarray(pixels).save(data, **options)
        encoded[name] = data.getvalue()
    return encoded


def pil(data: bytes) -> PIL.Image.Image:
    image = PIL.Image.open(io.BytesIO(data))
    image.load()  # what `lambda_envelope.request_image` does: RGB frames need no conversion
    return image if image.mode == "RGB" else image.convert("RGB")


def torchvision_decode(data: bytes) -> PIL.Image.Image:
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    decoded = torchvision.io.decode_image(tensor, mode=torchvision.io.ImageReadMode.RGB)
    return PIL.Image.fromarray(decoded.permute(1, 2, 0).numpy())  # (3, H, W) to PIL's layout


def opencv(data: bytes) -> PIL.Image.Image:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return PIL.Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


#: Each gives the frame as the engine takes it: an RGB PIL image (`tracker.engine.frames`).
DECODERS: dict[str, Callable[[bytes], PIL.Image.Image]] = {
    "PIL": pil,
    "torchvision.io": torchvision_decode,
    "OpenCV": opencv,
}


def _median_ms(decode: Callable[[bytes], PIL.Image.Image], data: bytes, repeats: int) -> float:
    decode(data)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decode(data)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--name", help="write benchmarks/results/NAME.{json,txt}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rows = []
    for codec, data in _frames(args.width, args.height).items():
        reference = np.asarray(pil(data))
        for name, decode in DECODERS.items():
            pixels = np.asarray(decode(data))
            differing = int(np.count_nonzero(pixels != reference))
            rows.append({"codec": codec, "decoder": name, "bytes": len(data),
                         "median_ms": round(_median_ms(decode, data, args.repeats), 2),
                         "same_pixels_as_pil": differing == 0,
                         "differing_values": differing})  # fmt: skip
    lines = [f"{args.width}x{args.height}, noisy, one thread, median of {args.repeats}",
             "codec decoder         ms     same pixels as PIL (differing values)"]  # fmt: skip
    for row in rows:
        lines.append(f"{row['codec']:<5} {row['decoder']:<15} {row['median_ms']:>6.2f} "
                     f"{row['same_pixels_as_pil']} ({row['differing_values']})")  # fmt: skip
    record(args.name, rows, lines)


if __name__ == "__main__":
    main()
