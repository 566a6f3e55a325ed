"""Turn a PIL frame into SAM2's input tensor exactly as upstream's video loader does.

Upstream (`sam2.utils.misc._load_img_as_tensor` + `load_video_frames_from_jpg_images`) converts to
RGB, resizes with PIL's default filter to a square, divides by 255 in float64, stores float32 and
then normalises with ImageNet statistics. Doing the same steps in the same order gives bit-identical
tensors, which is the first condition for giving upstream's masks.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

IMAGE_MEAN = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
IMAGE_STD = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]


def to_model_input(image: PIL.Image.Image, image_size: int) -> torch.Tensor:
    """Return a normalised float32 tensor of shape (3, image_size, image_size) on the CPU."""
    pixels = np.array(image.convert("RGB").resize((image_size, image_size)))
    tensor = torch.from_numpy(pixels / 255.0).permute(2, 0, 1).to(torch.float32)
    return (tensor - IMAGE_MEAN) / IMAGE_STD
