"""Tensor layouts of Stable Diffusion 1.5 family single-file checkpoints (LDM/"original" format).

Each function returns an ordered list of (key, shape). The names and shapes follow the CompVis
`ldm` modules (openaimodel UNet, AutoencoderKL) and Hugging Face's CLIPTextModel, which is how
SD1.5, instruct-pix2pix and ControlNet 1.x files are written; tests check them against the host's
own model classes. Used to build random-weight test checkpoints.
"""
from __future__ import annotations

Layout = list[tuple[str, tuple[int, ...]]]

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
VAE_PREFIX = "first_stage_model."
CONTROLNET_PREFIX = "control_model."

# SD1.5 UNet hyper-parameters (v1-inference.yaml).
MODEL_CHANNELS = 320
CHANNEL_MULT = (1, 2, 4, 4)
NUM_RES_BLOCKS = 2
ATTENTION_LEVELS = (0, 1, 2)  # attention_resolutions 4, 2, 1
CONTEXT_DIM = 768
TIME_EMBED_DIM = MODEL_CHANNELS * 4


def _linear(name: str, out_f: int, in_f: int, bias: bool = True) -> Layout:
    entries: Layout = [(f"{name}.weight", (out_f, in_f))]
    if bias:
        entries.append((f"{name}.bias", (out_f,)))
    return entries


def _conv(name: str, out_c: int, in_c: int, kernel: int) -> Layout:
    return [(f"{name}.weight", (out_c, in_c, kernel, kernel)), (f"{name}.bias", (out_c,))]


def _norm(name: str, channels: int) -> Layout:
    return [(f"{name}.weight", (channels,)), (f"{name}.bias", (channels,))]


def _unet_resblock(name: str, in_c: int, out_c: int) -> Layout:
    entries = (
        _norm(f"{name}.in_layers.0", in_c)
        + _conv(f"{name}.in_layers.2", out_c, in_c, 3)
        + _linear(f"{name}.emb_layers.1", out_c, TIME_EMBED_DIM)
        + _norm(f"{name}.out_layers.0", out_c)
        + _conv(f"{name}.out_layers.3", out_c, out_c, 3)
    )
    if in_c != out_c:
        entries += _conv(f"{name}.skip_connection", out_c, in_c, 1)
    return entries


def _spatial_transformer(name: str, channels: int) -> Layout:
    block = f"{name}.transformer_blocks.0"
    entries = _norm(f"{name}.norm", channels) + _conv(f"{name}.proj_in", channels, channels, 1)
    for attn, kv_dim in (("attn1", channels), ("attn2", CONTEXT_DIM)):
        entries += _linear(f"{block}.{attn}.to_q", channels, channels, bias=False)
        entries += _linear(f"{block}.{attn}.to_k", channels, kv_dim, bias=False)
        entries += _linear(f"{block}.{attn}.to_v", channels, kv_dim, bias=False)
        entries += _linear(f"{block}.{attn}.to_out.0", channels, channels)
    # GEGLU feed-forward: the projection produces value and gate, hence 2 x 4 x channels.
    entries += _linear(f"{block}.ff.net.0.proj", channels * 8, channels)
    entries += _linear(f"{block}.ff.net.2", channels, channels * 4)
    for norm in ("norm1", "norm2", "norm3"):
        entries += _norm(f"{block}.{norm}", channels)
    entries += _conv(f"{name}.proj_out", channels, channels, 1)
    return entries


def _unet_encoder(prefix: str, in_channels: int) -> tuple[Layout, list[int]]:
    """time_embed, input_blocks and middle_block; also the skip channels each input block emits."""
    entries = _linear(f"{prefix}time_embed.0", TIME_EMBED_DIM, MODEL_CHANNELS)
    entries += _linear(f"{prefix}time_embed.2", TIME_EMBED_DIM, TIME_EMBED_DIM)
    entries += _conv(f"{prefix}input_blocks.0.0", MODEL_CHANNELS, in_channels, 3)
    skip_channels = [MODEL_CHANNELS]
    channels = MODEL_CHANNELS
    index = 1
    for level, mult in enumerate(CHANNEL_MULT):
        for _ in range(NUM_RES_BLOCKS):
            out_c = MODEL_CHANNELS * mult
            entries += _unet_resblock(f"{prefix}input_blocks.{index}.0", channels, out_c)
            channels = out_c
            if level in ATTENTION_LEVELS:
                entries += _spatial_transformer(f"{prefix}input_blocks.{index}.1", channels)
            skip_channels.append(channels)
            index += 1
        if level != len(CHANNEL_MULT) - 1:
            entries += _conv(f"{prefix}input_blocks.{index}.0.op", channels, channels, 3)
            skip_channels.append(channels)
            index += 1
    entries += _unet_resblock(f"{prefix}middle_block.0", channels, channels)
    entries += _spatial_transformer(f"{prefix}middle_block.1", channels)
    entries += _unet_resblock(f"{prefix}middle_block.2", channels, channels)
    return entries, skip_channels


def unet_layout(in_channels: int = 8, prefix: str = UNET_PREFIX) -> Layout:
    """SD1.5 UNet; in_channels 8 for InstructPix2Pix, 4 for text-to-image SD1.5."""
    entries, skip_channels = _unet_encoder(prefix, in_channels)
    channels = skip_channels[-1]
    index = 0
    for level, mult in reversed(list(enumerate(CHANNEL_MULT))):
        for i in range(NUM_RES_BLOCKS + 1):
            out_c = MODEL_CHANNELS * mult
            entries += _unet_resblock(f"{prefix}output_blocks.{index}.0", channels + skip_channels.pop(), out_c)
            channels = out_c
            layer = 1
            if level in ATTENTION_LEVELS:
                entries += _spatial_transformer(f"{prefix}output_blocks.{index}.1", channels)
                layer = 2
            if level != 0 and i == NUM_RES_BLOCKS:
                entries += _conv(f"{prefix}output_blocks.{index}.{layer}.conv", channels, channels, 3)
            index += 1
    entries += _norm(f"{prefix}out.0", channels)
    entries += _conv(f"{prefix}out.2", 4, channels, 3)
    return entries


def clip_l_layout(prefix: str = CLIP_PREFIX) -> Layout:
    """CLIP ViT-L/14 text encoder (12 layers, width 768), as SD1.5 checkpoints store it."""
    width, layers = 768, 12
    entries: Layout = [
        (f"{prefix}embeddings.token_embedding.weight", (49408, width)),
        (f"{prefix}embeddings.position_embedding.weight", (77, width)),
    ]
    for layer in range(layers):
        name = f"{prefix}encoder.layers.{layer}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            entries += _linear(f"{name}.self_attn.{proj}", width, width)
        entries += _norm(f"{name}.layer_norm1", width)
        entries += _linear(f"{name}.mlp.fc1", width * 4, width)
        entries += _linear(f"{name}.mlp.fc2", width, width * 4)
        entries += _norm(f"{name}.layer_norm2", width)
    entries += _norm(f"{prefix}final_layer_norm", width)
    return entries


def _vae_resnet(name: str, in_c: int, out_c: int) -> Layout:
    entries = (
        _norm(f"{name}.norm1", in_c)
        + _conv(f"{name}.conv1", out_c, in_c, 3)
        + _norm(f"{name}.norm2", out_c)
        + _conv(f"{name}.conv2", out_c, out_c, 3)
    )
    if in_c != out_c:
        entries += _conv(f"{name}.nin_shortcut", out_c, in_c, 1)
    return entries


def _vae_mid(name: str, channels: int) -> Layout:
    entries = _vae_resnet(f"{name}.block_1", channels, channels)
    entries += _norm(f"{name}.attn_1.norm", channels)
    for proj in ("q", "k", "v", "proj_out"):
        entries += _conv(f"{name}.attn_1.{proj}", channels, channels, 1)
    entries += _vae_resnet(f"{name}.block_2", channels, channels)
    return entries


def vae_layout(prefix: str = VAE_PREFIX) -> Layout:
    """SD1.5 AutoencoderKL (f=8, 4 latent channels)."""
    base, mults, latent = 128, (1, 2, 4, 4), 4
    entries = _conv(f"{prefix}encoder.conv_in", base, 3, 3)
    channels = base
    for level, mult in enumerate(mults):
        out_c = base * mult
        for block in range(2):
            entries += _vae_resnet(f"{prefix}encoder.down.{level}.block.{block}", channels, out_c)
            channels = out_c
        if level != len(mults) - 1:
            entries += _conv(f"{prefix}encoder.down.{level}.downsample.conv", channels, channels, 3)
    entries += _vae_mid(f"{prefix}encoder.mid", channels)
    entries += _norm(f"{prefix}encoder.norm_out", channels)
    entries += _conv(f"{prefix}encoder.conv_out", 2 * latent, channels, 3)

    entries += _conv(f"{prefix}decoder.conv_in", channels, latent, 3)
    entries += _vae_mid(f"{prefix}decoder.mid", channels)
    for level in reversed(range(len(mults))):
        out_c = base * mults[level]
        for block in range(3):
            entries += _vae_resnet(f"{prefix}decoder.up.{level}.block.{block}", channels, out_c)
            channels = out_c
        if level != 0:
            entries += _conv(f"{prefix}decoder.up.{level}.upsample.conv", channels, channels, 3)
    entries += _norm(f"{prefix}decoder.norm_out", channels)
    entries += _conv(f"{prefix}decoder.conv_out", 3, channels, 3)

    entries += _conv(f"{prefix}quant_conv", 2 * latent, 2 * latent, 1)
    entries += _conv(f"{prefix}post_quant_conv", latent, latent, 1)
    return entries


def controlnet_layout(prefix: str = CONTROLNET_PREFIX) -> Layout:
    """SD1.5 ControlNet 1.x (cldm): the UNet encoder, the hint encoder and the zero convolutions."""
    entries, skip_channels = _unet_encoder(prefix, in_channels=4)
    hint = [(3, 16), (16, 16), (16, 32), (32, 32), (32, 96), (96, 96), (96, 256), (256, MODEL_CHANNELS)]
    for i, (in_c, out_c) in enumerate(hint):
        entries += _conv(f"{prefix}input_hint_block.{2 * i}", out_c, in_c, 3)
    for i, channels in enumerate(skip_channels):
        entries += _conv(f"{prefix}zero_convs.{i}.0", channels, channels, 1)
    entries += _conv(f"{prefix}middle_block_out.0", skip_channels[-1], skip_channels[-1], 1)
    return entries


def sd15_checkpoint_layout(unet_in_channels: int = 8) -> Layout:
    """A whole SD1.5-family checkpoint: UNet, CLIP-L text encoder, VAE."""
    return unet_layout(unet_in_channels) + clip_l_layout() + vae_layout()
