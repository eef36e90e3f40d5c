"""Synthetic photo-like pictures and edits for tests and measurements (no photos ship with the repo).

A photo-like picture has natural images' 1/f amplitude spectrum (structure at every scale), a few
hard-edged shapes and fine texture; a synthetic edit recolours a known region and, like the VAE,
blurs everything a little, so change detection can be scored against the truth.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def photo_like(height: int, width: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """IMAGE [batch,height,width,3] float 0..1 with a 1/f spectrum, shapes and grain."""
    generator = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(height).view(-1, 1)
    fx = torch.fft.rfftfreq(width).view(1, -1)
    radius = torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / max(height, width))
    amplitude = 1.0 / radius
    spectrum = torch.randn((batch, 3, height, width // 2 + 1), generator=generator, dtype=torch.complex64) * amplitude
    field = torch.fft.irfftn(spectrum, s=(height, width), dim=(-2, -1))
    # Correlated channels, as in photos (mostly luminance, some colour).
    luminance = field[:, :1]
    field = 0.8 * luminance + 0.35 * field
    field = (field - field.mean(dim=(2, 3), keepdim=True)) / (field.std(dim=(2, 3), keepdim=True) + 1e-8)
    image = 0.5 + 0.16 * field
    ys = torch.arange(height).view(-1, 1).float()
    xs = torch.arange(width).view(1, -1).float()
    for _ in range(4):
        cy, cx = (torch.rand(2, generator=generator) * torch.tensor([height, width])).tolist()
        ry, rx = (torch.rand(2, generator=generator) * 0.15 + 0.05).tolist()
        inside = ((ys - cy) / (ry * height)) ** 2 + ((xs - cx) / (rx * width)) ** 2 < 1.0
        colour = torch.rand((batch, 3, 1, 1), generator=generator) * 0.8 + 0.1
        image = torch.where(inside, 0.6 * colour + 0.4 * image, image)
    grain = torch.randn((batch, 3, height, width), generator=generator) * 0.02
    return (image + grain).clamp(0.0, 1.0).movedim(1, -1).contiguous()


def blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of an IMAGE [B,H,W,C] (what a VAE round trip does to fine detail, roughly)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    planes = image.movedim(-1, 1)
    channels = planes.shape[1]
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
                      groups=channels)
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1),
                      groups=channels)
    return planes.movedim(1, -1).contiguous()


def ellipse_mask(height: int, width: int, centre: tuple[float, float], radii: tuple[float, float]) -> torch.Tensor:
    """MASK [1,height,width]: 1 inside the ellipse (centre and radii as fractions of (y, x))."""
    ys = (torch.arange(height).view(-1, 1).float() + 0.5) / height
    xs = (torch.arange(width).view(1, -1).float() + 0.5) / width
    inside = ((ys - centre[0]) / radii[0]) ** 2 + ((xs - centre[1]) / radii[1]) ** 2 < 1.0
    return inside.float().unsqueeze(0)


def synthetic_edit(picture: torch.Tensor, region: torch.Tensor, seed: int = 0, blur_sigma: float = 1.2,
                   drift: float = 0.02, strength: float = 0.35) -> torch.Tensor:
    """What an edit of `region` (MASK [1,H,W]) looks like after the VAE: the region recoloured
    (a new colour mixed in, so texture stays), everything blurred by `blur_sigma` px, and the whole
    picture tinted by `drift`."""
    generator = torch.Generator().manual_seed(seed)
    colour = torch.rand(3, generator=generator)
    colour = torch.where((colour - picture.mean(dim=(0, 1, 2))).abs() < 0.3, 1.0 - colour, colour)
    weight = region.unsqueeze(-1) * strength / 0.35
    recoloured = picture * (1 - 0.6 * weight.clamp(max=1)) + colour * 0.6 * weight.clamp(max=1)
    tint = torch.tensor([drift, -drift / 2, drift / 2])
    return (blur(recoloured, blur_sigma) + tint).clamp(0.0, 1.0)
