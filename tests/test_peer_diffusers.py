"""The pack's edit against an independent implementation: diffusers' StableDiffusionInstructPix2PixPipeline.

Both run the same random-weight checkpoint file on the same pixels, instruction, initial noise and
sigmas with the Euler sampler, in fp32 on the CPU, so their final latents must agree to float
rounding. With random weights the UNet does not cancel the initial noise x_T, so a final latent is
mostly x_T; the model's contribution (final latent minus x_T) is compared as well, and it is what
would expose a wrong guidance formula.

All ComfyUI runs happen first (one module fixture), then one diffusers pipeline is built, so the
process never holds a fixture generator, the host's model and the pipeline's loading peak together.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from helpers import relative_l2
from ipx2p_tools.peer_diffusers import (
    SD15_LATENT_SCALE,
    comfy_start_scale,
    comfy_unit_noise,
    load_pipeline,
    png_pixels,
    write_config_folder,
)

# fp32 on both sides; what remains is summation order (attention kernels, batched branches, the
# fp32-vs-fp64 schedule, see test_schedules_agree) compounded over 10 steps: 0.4-3e-6 measured, so
# 1e-3 is a wide margin that still sits two orders of magnitude below a wiring mistake (0.5-0.9).
TOLERANCE = 1e-3
STEPS = 10
INSTRUCTION = "make it look like a snowy winter day"


@dataclass(frozen=True)
class Case:
    text_cfg: float
    image_cfg: float
    width: int = 64
    height: int = 64
    images: int = 1
    seed: int = 0
    # What the pack is given when it differs from what diffusers is given (the wrong-wiring check).
    pack_cfg: tuple[float, float] | None = None

    @property
    def pack_text_cfg(self) -> float:
        return self.pack_cfg[0] if self.pack_cfg else self.text_cfg

    @property
    def pack_image_cfg(self) -> float:
        return self.pack_cfg[1] if self.pack_cfg else self.image_cfg


MATCHING = {
    # The paper's scales: all three branches.
    "paper_7.5_1.5": Case(7.5, 1.5, seed=101),
    # image_cfg = 1: the pack evaluates only c and i (u cancels); diffusers still evaluates all three.
    "image_cfg_1_3.0_1.0": Case(3.0, 1.0, seed=102),
    # Equal scales: the pack evaluates only c and u (i cancels).
    "equal_2.5_2.5": Case(2.5, 2.5, seed=103),
    # Both 1: the pack evaluates c only, and diffusers switches guidance off (guidance_scale <= 1).
    # (1.0, 1.5) is not comparable: diffusers drops guidance whenever guidance_scale <= 1, unlike eq. 3.
    "no_guidance_1.0_1.0": Case(1.0, 1.0, seed=104),
    # Non-square: 64x48 px -> latent 8x6, to catch a width/height swap anywhere.
    "non_square_64x48": Case(7.5, 1.5, width=64, height=48, seed=105),
    # Two images, one instruction: the conditioning batch of 1 broadcasts over the image batch.
    "batch_2_images": Case(7.5, 1.5, images=2, seed=106),
}
# The paper case with the two scales swapped on the pack's side only: must be far off.
SWAPPED = Case(7.5, 1.5, seed=101, pack_cfg=(1.5, 7.5))
ALL_CASES = {**MATCHING, "swapped_scales": SWAPPED}


def make_picture(path: Path, width: int, height: int, variant: int) -> None:
    """A picture with gradients and shapes, so the image latent is far from constant."""
    picture = Image.new("RGB", (width, height))
    pixels = picture.load()
    for y in range(height):
        for x in range(width):
            pixels[x, y] = ((x * 4 + variant * 70) % 256, (y * 5) % 256, (x * y + variant * 40) % 256)
    draw = ImageDraw.Draw(picture)
    draw.ellipse((width // 5, height // 6, width // 2 + variant * 8, height * 5 // 6), fill=(240, 200 - variant * 90, 50))
    draw.rectangle((width * 3 // 5, height // 4, width - 4, height // 2), fill=(20, 30 + variant * 100, 90))
    picture.save(path)


def edit_prompt(ckpt_name: str, image_names: list[str], case: Case, prefix: str) -> dict:
    """Load -> encode ("keep": the picture's own size) -> IPX2P_Edit (euler/normal, denoise 1) -> SaveLatent."""
    prompt: dict = {
        "ckpt": {"class_type": "IPX2P_CheckpointLoader", "inputs": {"ckpt_name": ckpt_name, "weights": "auto"}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"text": INSTRUCTION, "clip": ["ckpt", 1]}},
        # The paper's (and diffusers') unconditional text is the empty prompt.
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "image0": {"class_type": "LoadImage", "inputs": {"image": image_names[0]}},
    }
    image = ["image0", 0]
    if len(image_names) == 2:
        prompt["image1"] = {"class_type": "LoadImage", "inputs": {"image": image_names[1]}}
        prompt["batch"] = {"class_type": "ImageBatch", "inputs": {"image1": ["image0", 0], "image2": ["image1", 0]}}
        image = ["batch", 0]
    prompt["encode"] = {"class_type": "IPX2P_EncodeImage",
                        "inputs": {"vae": ["ckpt", 2], "image": image, "resize": "keep", "resolution": 64}}
    prompt["edit"] = {"class_type": "IPX2P_Edit", "inputs": {
        "model": ["ckpt", 0], "positive": ["positive", 0], "negative": ["negative", 0], "edit_latent": ["encode", 0],
        "seed": case.seed, "steps": STEPS, "text_cfg": case.pack_text_cfg, "image_cfg": case.pack_image_cfg,
        "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
    }}
    prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["edit", 0], "filename_prefix": prefix}}
    return prompt


@dataclass
class PackRun:
    latent: torch.Tensor  # as SaveLatent stores it: unscaled (divided by 0.18215)
    pixels: torch.Tensor  # [B,3,H,W] 0..1, what LoadImage gave the pack
    case: Case


def comfy_model_sampling():
    """SD1.5-IP2P's model sampling as the host builds it for the loaded model (EPS, discrete, the
    SD1.5 betas); the sampled latents below would disagree if the loaded model used another."""
    import comfy.model_base
    import comfy.supported_models

    config = SimpleNamespace(sampling_settings=comfy.supported_models.SD15_instructpix2pix.sampling_settings)
    return comfy.model_base.model_sampling(config, comfy.model_base.ModelType.EPS)


def comfy_sigmas() -> torch.Tensor:
    """The sigmas IPX2P_Edit samples with: the host's "normal" schedule, as KSampler computes it."""
    import comfy.samplers

    return comfy.samplers.calculate_sigmas(comfy_model_sampling(), "normal", STEPS).cpu().float()


@pytest.fixture(scope="module")
def pack_runs(host, ip2p_ckpt) -> dict[str, PackRun]:
    """Every case through the host first, before any diffusers model exists in the process."""
    runs: dict[str, PackRun] = {}
    for name, case in ALL_CASES.items():
        image_names = []
        for variant in range(case.images):
            image_name = f"peer_{case.width}x{case.height}_{variant}.png"
            make_picture(Path(host.input_dir) / image_name, case.width, case.height, variant)
            image_names.append(image_name)
        result = host.run(edit_prompt(ip2p_ckpt.name, image_names, case, f"peer_{name}"))
        assert result.success, result.error_text()
        saved = result.outputs["save"]["latents"][0]
        latent = load_file(str(Path(host.output_dir) / saved["subfolder"] / saved["filename"]))["latent_tensor"]
        pixels = png_pixels([Path(host.input_dir) / image_name for image_name in image_names])
        runs[name] = PackRun(latent.float(), pixels, case)
    return runs


def release_host_models(host) -> None:
    """What ComfyUI's POST /free {"unload_models": true, "free_memory": true} does: unload the models
    and drop the executor's cached node outputs (which hold the checkpoint's MODEL/CLIP/VAE), so
    the host's ~8 GiB and the pipeline's loading peak are never held at once. Later prompts reload."""
    import comfy.model_management

    comfy.model_management.unload_all_models()
    host.executor.reset()
    gc.collect()
    comfy.model_management.soft_empty_cache()


@pytest.fixture(scope="module")
def pipeline(pack_runs, host, host_tree, ip2p_ckpt, tmp_path_factory):
    """One fp32 diffusers pipeline from the same file, built after the host's runs, freed at the end."""
    release_host_models(host)
    pipe = load_pipeline(ip2p_ckpt, write_config_folder(tmp_path_factory.mktemp("diffusers_ip2p"), host_tree))
    yield pipe
    del pipe
    gc.collect()


@dataclass
class Comparison:
    pack_final: torch.Tensor  # scaled latents (what the UNet sees), [B,4,h,w]
    reference_final: torch.Tensor
    x_T: torch.Tensor

    @property
    def latent_error(self) -> float:
        return relative_l2(self.pack_final, self.reference_final)

    @property
    def contribution_error(self) -> float:
        return relative_l2(self.pack_final - self.x_T, self.reference_final - self.x_T)


def compare(pipe, run: PackRun) -> Comparison:
    case = run.case
    batch, height, width = run.pixels.shape[0], run.pixels.shape[2] // 8, run.pixels.shape[3] // 8
    assert run.latent.shape == (batch, 4, height, width)

    # Initial noise: the pack draws unit noise as comfy.sample.prepare_noise does (seeded CPU draw for
    # the whole batch) and starts from x_T = noise * sqrt(1 + sigma_max^2) (sigma_0 is the model's
    # sigma_max with the "normal" schedule). diffusers multiplies the latents it is given by
    # init_noise_sigma (sigma_max itself with "linspace" spacing), so hand it x_T / init_noise_sigma.
    # Left at their defaults the two conventions differ by 1.00234, i.e. 2.3e-3 on the result.
    sigma_max = float(comfy_sigmas()[0])
    x_T = comfy_unit_noise((batch, 4, height, width), case.seed) * comfy_start_scale(sigma_max)
    pipe.scheduler.set_timesteps(STEPS)
    latents = x_T / float(pipe.scheduler.init_noise_sigma)

    with torch.no_grad():
        reference = pipe(
            # One instruction for the whole batch, as the pack's single conditioning: diffusers wants
            # one prompt per image to size its batch, and identical prompts encode identically.
            prompt=[INSTRUCTION] * batch,
            negative_prompt=[""] * batch,
            image=run.pixels,
            num_inference_steps=STEPS,
            guidance_scale=case.text_cfg,
            image_guidance_scale=case.image_cfg,
            latents=latents,
            output_type="latent",
        ).images
    # SaveLatent stored the pack's result divided by the latent scale (ComfyUI's process_latent_out);
    # diffusers returns the latent the UNet works in. Compare both in the UNet's space.
    return Comparison(run.latent * SD15_LATENT_SCALE, reference.float(), x_T)


def test_schedules_agree(pipeline):
    """Same sigmas and the same integer timesteps on both sides, or the comparison would be moot."""
    ours = comfy_sigmas()
    pipeline.scheduler.set_timesteps(STEPS)
    theirs = pipeline.scheduler.sigmas.float()
    assert ours.shape == theirs.shape == (STEPS + 1,)
    # Not bit-equal: diffusers builds alphas_cumprod from float32 betas, ComfyUI from float64 ones;
    # the last sigma (t = 0, where 1 - alpha is smallest) differs by 1.3e-5 relative, the rest by less.
    torch.testing.assert_close(ours, theirs, rtol=5e-5, atol=0.0)
    assert theirs[-1] == 0.0
    # The UNet sees the same timesteps: ComfyUI maps each sigma to its nearest training timestep,
    # diffusers uses linspace(999, 0, 10), integers here because 999 / 9 = 111.
    expected = [999.0 - 111.0 * i for i in range(STEPS)]
    assert pipeline.scheduler.timesteps.tolist() == expected
    assert comfy_model_sampling().timestep(ours[:-1]).tolist() == expected
    # diffusers starts from init_noise_sigma * latents; that is sigma_max itself with "linspace".
    assert float(pipeline.scheduler.init_noise_sigma) == pytest.approx(float(ours[0]), rel=1e-6)


@pytest.mark.parametrize("name", list(MATCHING))
def test_edit_matches_diffusers(pipeline, pack_runs, name, record_property):
    comparison = compare(pipeline, pack_runs[name])
    record_property("relative_l2_latent", comparison.latent_error)
    record_property("relative_l2_contribution", comparison.contribution_error)
    assert torch.isfinite(comparison.pack_final).all()
    # The model must contribute something, or the contribution check would compare rounding noise.
    contribution_share = float(torch.linalg.vector_norm(comparison.reference_final - comparison.x_T)
                               / torch.linalg.vector_norm(comparison.x_T))
    record_property("contribution_over_x_T", contribution_share)
    assert contribution_share > 0.05
    assert comparison.latent_error < TOLERANCE
    assert comparison.contribution_error < TOLERANCE


def test_swapped_scales_are_far_outside_the_tolerance(pipeline, pack_runs, record_property):
    """The comparison can fail: text_cfg and image_cfg swapped on the pack's side only."""
    comparison = compare(pipeline, pack_runs["swapped_scales"])
    record_property("relative_l2_latent", comparison.latent_error)
    record_property("relative_l2_contribution", comparison.contribution_error)
    assert comparison.contribution_error > 50 * TOLERANCE
    assert comparison.latent_error > 10 * TOLERANCE
