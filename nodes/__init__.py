"""ComfyUI adapters: unpack inputs, call ipx2p_core, wrap outputs."""
from __future__ import annotations

from ._comfy import ComfyExtension, io
from .encode import Conditioning, EncodeImage
from .edit import Edit
from .guider import Guider
from .instructions import EncodeInstructions
from .loader import CheckpointLoader, DiffusersLoader
from .merge import MakeEditable
from .paste import CropForEdit, PasteBack, StitchEdit
from .schedule import GuidanceScheduleNode
from .sweep import GuidanceSweep

# Order is the order in the node menu. Node ids are a contract (saved workflows store them).
NODES: list[type[io.ComfyNode]] = [
    CheckpointLoader, DiffusersLoader, EncodeImage, Conditioning, Guider, Edit, EncodeInstructions, GuidanceSweep,
    GuidanceScheduleNode,
    CropForEdit, StitchEdit, PasteBack, MakeEditable,
]


class IPX2PExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> ComfyExtension:
    return IPX2PExtension()
