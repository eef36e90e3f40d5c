"""Tensor layouts of the Stable Diffusion families' single-file (LDM / sgm) checkpoints: SD1.5,
SD2.x and SDXL UNets, OpenCLIP text towers as those files store them, and whole checkpoints.

Each function returns an ordered list of (key, shape); tests check them against the host's own
model classes. sd15_layout holds the SD1.5 pieces these build on (CLIP-L, the VAE, ControlNet).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import sd15_layout
from .sd15_layout import Layout, _conv, _linear, _norm


@dataclass(frozen=True)
class UNetSpec:
    """The hyper-parameters that decide an openaimodel UNet's tensor shapes."""

    in_channels: int = 8
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    depth: tuple[int, ...] = (1, 1, 1, 0)  # transformer blocks per attention layer, per level (0: none)
    middle_depth: int = 1
    context_dim: int = 768
    linear_proj: bool = False  # proj_in / proj_out as Linear (SD2, SDXL) or 1x1 Conv (SD1)
    adm_in_channels: int | None = None  # SDXL's pooled text + size embedding
    num_res_blocks: int = 2


SD15_UNET = UNetSpec()


def _resblock(name: str, in_c: int, out_c: int, time_dim: int) -> Layout:
    entries = (
        _norm(f"{name}.in_layers.0", in_c) + _conv(f"{name}.in_layers.2", out_c, in_c, 3)
        + _linear(f"{name}.emb_layers.1", out_c, time_dim)
        + _norm(f"{name}.out_layers.0", out_c) + _conv(f"{name}.out_layers.3", out_c, out_c, 3)
    )
    if in_c != out_c:
        entries += _conv(f"{name}.skip_connection", out_c, in_c, 1)
    return entries


def _proj(name: str, channels: int, linear: bool) -> Layout:
    return _linear(name, channels, channels) if linear else _conv(name, channels, channels, 1)


def _transformer(name: str, channels: int, depth: int, spec: UNetSpec) -> Layout:
    entries = _norm(f"{name}.norm", channels) + _proj(f"{name}.proj_in", channels, spec.linear_proj)
    for index in range(depth):
        block = f"{name}.transformer_blocks.{index}"
        for attn, kv_dim in (("attn1", channels), ("attn2", spec.context_dim)):
            entries += _linear(f"{block}.{attn}.to_q", channels, channels, bias=False)
            entries += _linear(f"{block}.{attn}.to_k", channels, kv_dim, bias=False)
            entries += _linear(f"{block}.{attn}.to_v", channels, kv_dim, bias=False)
            entries += _linear(f"{block}.{attn}.to_out.0", channels, channels)
        entries += _linear(f"{block}.ff.net.0.proj", channels * 8, channels)  # GEGLU: value and gate
        entries += _linear(f"{block}.ff.net.2", channels, channels * 4)
        for norm in ("norm1", "norm2", "norm3"):
            entries += _norm(f"{block}.{norm}", channels)
    entries += _proj(f"{name}.proj_out", channels, spec.linear_proj)
    return entries


def unet_layout(spec: UNetSpec, prefix: str = sd15_layout.UNET_PREFIX) -> Layout:
    """An openaimodel UNet as LDM / sgm checkpoints store it."""
    base, time_dim = spec.model_channels, spec.model_channels * 4
    entries = _linear(f"{prefix}time_embed.0", time_dim, base) + _linear(f"{prefix}time_embed.2", time_dim, time_dim)
    if spec.adm_in_channels:
        entries += _linear(f"{prefix}label_emb.0.0", time_dim, spec.adm_in_channels)
        entries += _linear(f"{prefix}label_emb.0.2", time_dim, time_dim)
    entries += _conv(f"{prefix}input_blocks.0.0", base, spec.in_channels, 3)
    skips, channels, index = [base], base, 1
    last = len(spec.channel_mult) - 1
    for level, mult in enumerate(spec.channel_mult):
        for _ in range(spec.num_res_blocks):
            out_c = base * mult
            entries += _resblock(f"{prefix}input_blocks.{index}.0", channels, out_c, time_dim)
            channels = out_c
            if spec.depth[level]:
                entries += _transformer(f"{prefix}input_blocks.{index}.1", channels, spec.depth[level], spec)
            skips.append(channels)
            index += 1
        if level != last:
            entries += _conv(f"{prefix}input_blocks.{index}.0.op", channels, channels, 3)
            skips.append(channels)
            index += 1
    entries += _resblock(f"{prefix}middle_block.0", channels, channels, time_dim)
    entries += _transformer(f"{prefix}middle_block.1", channels, spec.middle_depth, spec)
    entries += _resblock(f"{prefix}middle_block.2", channels, channels, time_dim)
    index = 0
    for level, mult in reversed(list(enumerate(spec.channel_mult))):
        for block in range(spec.num_res_blocks + 1):
            out_c = base * mult
            entries += _resblock(f"{prefix}output_blocks.{index}.0", channels + skips.pop(), out_c, time_dim)
            channels, layer = out_c, 1
            if spec.depth[level]:
                entries += _transformer(f"{prefix}output_blocks.{index}.1", channels, spec.depth[level], spec)
                layer = 2
            if level != 0 and block == spec.num_res_blocks:
                entries += _conv(f"{prefix}output_blocks.{index}.{layer}.conv", channels, channels, 3)
            index += 1
    entries += _norm(f"{prefix}out.0", channels) + _conv(f"{prefix}out.2", 4, channels, 3)
    return entries


@dataclass(frozen=True)
class OpenClipSpec:
    width: int
    layers: int
    projection: int


OPENCLIP_H = OpenClipSpec(width=1024, layers=24, projection=1024)  # SD2.x's text encoder
OPENCLIP_BIGG = OpenClipSpec(width=1280, layers=32, projection=1280)  # SDXL's second text encoder


def openclip_text_layout(prefix: str, spec: OpenClipSpec) -> Layout:
    """An OpenCLIP text tower in OpenCLIP's own naming (fused q/k/v), as SD2 and SDXL files keep it."""
    width = spec.width
    entries: Layout = [(f"{prefix}token_embedding.weight", (49408, width)), (f"{prefix}positional_embedding", (77, width))]
    for layer in range(spec.layers):
        name = f"{prefix}transformer.resblocks.{layer}"
        entries += _norm(f"{name}.ln_1", width)
        entries += [(f"{name}.attn.in_proj_weight", (3 * width, width)), (f"{name}.attn.in_proj_bias", (3 * width,))]
        entries += _linear(f"{name}.attn.out_proj", width, width)
        entries += _norm(f"{name}.ln_2", width)
        entries += _linear(f"{name}.mlp.c_fc", width * 4, width) + _linear(f"{name}.mlp.c_proj", width, width * 4)
    entries += _norm(f"{prefix}ln_final", width)
    entries += [(f"{prefix}text_projection", (width, spec.projection)), (f"{prefix}logit_scale", ())]
    return entries


SD2_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."


def sd21_checkpoint_layout(unet_in_channels: int = 8) -> Layout:
    """SD2.x single file: UNet (context 1024, linear projections), OpenCLIP ViT-H text, VAE."""
    return (unet_layout(UNetSpec(in_channels=unet_in_channels, context_dim=1024, linear_proj=True))
            + openclip_text_layout(SD2_CLIP_PREFIX, OPENCLIP_H) + sd15_layout.vae_layout())


def sdxl_checkpoint_layout(unet_in_channels: int = 8) -> Layout:
    """SDXL single file (sgm naming): UNet, CLIP-L (Hugging Face naming), OpenCLIP bigG, VAE."""
    spec = UNetSpec(in_channels=unet_in_channels, channel_mult=(1, 2, 4), depth=(0, 2, 10), middle_depth=10,
                    context_dim=2048, linear_proj=True, adm_in_channels=2816)
    return (unet_layout(spec) + sd15_layout.clip_l_layout(SDXL_CLIP_L_PREFIX)
            + openclip_text_layout(SDXL_CLIP_G_PREFIX, OPENCLIP_BIGG) + sd15_layout.vae_layout())


# CosXL Edit marks its EDM v-prediction with these two scalars (values of Stability's file).
COSXL_EDM_KEYS = {"edm_vpred.sigma_max": 120.0, "edm_vpred.sigma_min": 0.002}
