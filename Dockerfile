# One image for both Nuclio functions (their spec.build.baseImage) and for the SAM2 server:
# PyTorch, sam2 and this package, installed with the README's set-up steps.
#
#   docker build -t cvat-sam2-tracker:gpu --build-arg VARIANT=cuda .   # NVIDIA GPUs
#   docker build -t cvat-sam2-tracker:cpu --build-arg VARIANT=cpu .    # CPU only (smaller)
#   docker build -t cvat-sam2-tracker:proxy --build-arg VARIANT=proxy . # Nuclio proxies only:
#       no PyTorch; the functions forward to a SAM2 server (SAM2_SERVER_URL)
#
# Weights: either fetched here into the image's Hugging Face cache, e.g.
#   --build-arg SAM2_MODEL_IDS="facebook/sam2.1-hiera-tiny facebook/sam2.1-hiera-large"
# or mounted at run time (a volume holding the .pt file, with SAM2_MODEL_ID=/models/<file>.pt,
# or a whole Hugging Face cache with HF_HOME=/that/cache and HF_HUB_OFFLINE=1).
# Without either, the first start downloads the model into /opt/hf (needs the internet).
FROM python:3.11-slim

ARG VARIANT=cuda
ARG SAM2_MODEL_IDS=""
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV HF_HOME=/opt/hf \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/cvat-sam2-tracker
COPY pyproject.toml README.md ./
COPY tracker ./tracker

# The README's set-up, less the test tools and redis-server (which only the tests use).
RUN pip install setuptools wheel \
    && if [ "$VARIANT" = proxy ]; then pip install "requests>=2.31" && pip install --no-deps . \
       && exit 0; fi \
    && if [ "$VARIANT" = cpu ]; then index="--index-url $TORCH_CPU_INDEX"; else index=""; fi \
    && pip install $index torch==2.14.1 torchvision==0.29.1 \
    && SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0 \
    && pip install ".[server]"

# A proxy image has no model code to fetch weights with, and needs none: the ids are ignored.
RUN if [ "$VARIANT" = proxy ]; then \
        if [ -n "$SAM2_MODEL_IDS" ]; then echo "VARIANT=proxy holds no weights: SAM2_MODEL_IDS ignored"; fi; \
        exit 0; \
    fi; \
    for id in $SAM2_MODEL_IDS; do \
        python -c "import sys; from huggingface_hub import hf_hub_download; \
from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES as files; \
hf_hub_download(sys.argv[1], files[sys.argv[1]][1])" "$id" || exit 1; \
    done
