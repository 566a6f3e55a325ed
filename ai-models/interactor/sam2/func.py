"""SAM2 interactor for CVAT: clicks and/or a box on a frame become a mask.

Register it:  cvat-cli function create-native "SAM2 interactor"
                  --function-file=ai-models/interactor/sam2/func.py
Serve it:     cvat-cli function run-agent ID --function-file=ai-models/interactor/sam2/func.py
                  -p model_id=str:facebook/sam2.1-hiera-large -p device=str:cuda
Parameters are documented in the repository's README.
"""

from tracker.cvat.agent.interaction import create

__all__ = ["create"]
