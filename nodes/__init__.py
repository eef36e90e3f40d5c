"""ComfyUI adapters: unpack inputs, call ipx2p_core, wrap outputs."""
from __future__ import annotations

from ._comfy import ComfyExtension, io

NODES: list[type[io.ComfyNode]] = []


class IPX2PExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> ComfyExtension:
    return IPX2PExtension()
