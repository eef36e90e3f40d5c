"""SDXL-InstructPix2Pix and CosXL Edit through the pack against diffusers' StableDiffusionXLInstructPix2PixPipeline,
on the same weights, pixels, text embeddings, initial noise and sigmas. (The SDXL folder was written
by diffusers from the CosXL file: one pipeline serves both, with is_cosxl_edit and its EDM
scheduler for CosXL.)

The text embeddings are ComfyUI's, handed to diffusers, so what is compared is the rest: the
folder's UNet as each side loads it, the size conditioning (original, crop, target), the
unscaled image latent, the guidance and the Euler steps.
"""
from __future__ import annotations

import gc

import pytest
import torch

from helpers import relative_l2
from ipx2p_tools.peer_diffusers import comfy_start_scale, comfy_unit_noise
from helpers import encode_text, pixels

pytestmark = pytest.mark.usefixtures("clean_host")
STEPS = 2  # linspace(999, 0, 2) = [999, 0]: integer timesteps on both sides
TOLERANCE = 1e-3
SDXL_LATENT_SCALE = 0.13025


CASES = {"sdxl_ip2p": 3.0, "cosxl": 5.0}  # text_cfg (image_cfg 1.5 for both), the families' recommendations


def pack_edit(host, loader: str, source: dict, picture, text_cfg: float) -> dict:
    import comfy.model_management

    nodes = host.nodes.NODE_CLASS_MAPPINGS
    model, clip, vae, _ = nodes[loader].execute(weight_dtype="fp16", **source).result
    positive, negative = encode_text(clip, "make it snowy"), encode_text(clip, "")
    edit_latent = nodes["IPX2P_EncodeImage"].execute(vae, picture, "keep", 512).result[0]
    edited = nodes["IPX2P_Edit"].execute(model, positive, negative, edit_latent, seed=5, steps=STEPS, text_cfg=text_cfg,
                                         image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0).result[0]
    sampling = model.get_model_object("model_sampling")
    # SaveLatent's space (unscaled) -> the UNet's, where diffusers returns its latents
    side = {"latent": edited["samples"].float() * SDXL_LATENT_SCALE,
            "embeds": [e.float() for e in (positive[0][0], negative[0][0])],
            "pooled": [e.float() for e in (positive[0][1]["pooled_output"], negative[0][1]["pooled_output"])],
            "sigma_max": float(sampling.sigma_max), "sigma_min": float(sampling.sigma_min)}
    del model, clip, vae
    comfy.model_management.unload_all_models()
    host.executor.reset()
    gc.collect()
    return side


@pytest.fixture(scope="module")
def runs(host, diffusers_folder, synthetic):
    """Both families through the pack first, then one diffusers pipeline for all comparisons."""
    folder = diffusers_folder("sdxl_ip2p")
    picture = pixels((64, 64), seed=11)
    pack = {
        "sdxl_ip2p": pack_edit(host, "IPX2P_DiffusersLoader", {"model_path": f"diffusers/{folder.name}",
                                                               "clip_vae_from": "(from the folder)"}, picture, CASES["sdxl_ip2p"]),
        "cosxl": pack_edit(host, "IPX2P_CheckpointLoader", {"ckpt_name": synthetic("cosxl").name, "weights": "auto"},
                           picture, CASES["cosxl"]),
    }
    from diffusers import EDMEulerScheduler, EulerDiscreteScheduler, StableDiffusionXLInstructPix2PixPipeline

    pipe = StableDiffusionXLInstructPix2PixPipeline.from_pretrained(str(folder), torch_dtype=torch.float32,
                                                                    local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    discrete = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    # CosXL as diffusers runs it: the image latent scaled, EDM v-prediction between the file's sigmas
    edm = EDMEulerScheduler(sigma_min=pack["cosxl"]["sigma_min"], sigma_max=pack["cosxl"]["sigma_max"], sigma_data=1.0,
                            prediction_type="v_prediction", sigma_schedule="exponential")

    def reference(pipe, name: str, scheduler, cosxl: bool, text_cfg: float) -> tuple[torch.Tensor, torch.Tensor]:
        side = pack[name]
        pipe.scheduler, pipe.is_cosxl_edit = scheduler, cosxl
        pipe.scheduler.set_timesteps(STEPS)
        assert float(pipe.scheduler.sigmas[0]) == pytest.approx(side["sigma_max"], rel=5e-5)
        # ComfyUI starts from unit noise x sqrt(1 + sigma_max^2); diffusers multiplies by init_noise_sigma
        x_t = comfy_unit_noise((1, 4, 8, 8), 5) * comfy_start_scale(side["sigma_max"])
        with torch.no_grad():
            out = pipe(prompt_embeds=side["embeds"][0], negative_prompt_embeds=side["embeds"][1],
                       pooled_prompt_embeds=side["pooled"][0], negative_pooled_prompt_embeds=side["pooled"][1],
                       image=picture.movedim(-1, 1), num_inference_steps=STEPS, guidance_scale=text_cfg,
                       image_guidance_scale=1.5, latents=x_t / float(pipe.scheduler.init_noise_sigma),
                       output_type="latent", height=64, width=64).images.float()
        return out, x_t

    results = {
        "sdxl_ip2p": reference(pipe, "sdxl_ip2p", discrete, False, CASES["sdxl_ip2p"]),
        "cosxl": reference(pipe, "cosxl", edm, True, CASES["cosxl"]),
        # the comparison can fail: SDXL-InstructPix2Pix with CosXL's scaled image latent
        "wrong_scale": reference(pipe, "sdxl_ip2p", discrete, True, CASES["sdxl_ip2p"]),
    }
    del pipe
    gc.collect()
    return pack, results


@pytest.mark.parametrize("name", list(CASES))
def test_sdxl_families_match_diffusers(runs, name, record_property):
    pack, results = runs
    reference, x_t = results[name]
    ours = pack[name]["latent"]
    latent_error, contribution_error = relative_l2(ours, reference), relative_l2(ours - x_t, reference - x_t)
    record_property("relative_l2_latent", latent_error)
    record_property("relative_l2_contribution", contribution_error)
    assert float(torch.linalg.vector_norm(reference - x_t) / torch.linalg.vector_norm(x_t)) > 0.05
    assert latent_error < TOLERANCE and contribution_error < TOLERANCE, (latent_error, contribution_error)


def test_a_wrongly_scaled_image_latent_is_far_off(runs, record_property):
    pack, results = runs
    reference, x_t = results["wrong_scale"]
    error = relative_l2(pack["sdxl_ip2p"]["latent"] - x_t, reference - x_t)
    record_property("relative_l2_contribution", error)
    assert error > 10 * TOLERANCE
