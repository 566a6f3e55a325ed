"""SAM2 tracker for CVAT: tracks masks, polygons and rectangles through a video.

Register it:  cvat-cli function create-native "SAM2" --function-file=ai-models/tracker/sam2/func.py
                  -p model_id=str:facebook/sam2.1-hiera-tiny
Serve it:     cvat-cli function run-agent ID --function-file=ai-models/tracker/sam2/func.py
                  -p model_id=str:facebook/sam2.1-hiera-tiny -p device=str:cuda
Parameters are documented in the repository's README.
"""

from tracker.cvat.agent.tracking import create

__all__ = ["create"]
