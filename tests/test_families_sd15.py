"""The SD1.5 families in the real host: diffusers folders and Lightning .ckpt files give the single
file's weights, InstructDiffusion's formula against the branches written out, fp16 weights, the
suffix. (Large-model families are in test_families.py.)"""
from __future__ import annotations

import json

import pytest
import torch

from helpers import encode_text, pixels, relative_l2, release_models, tensor_digests

pytestmark = pytest.mark.usefixtures("clean_host")


# -- SD1.5: diffusers folders and the Lightning .ckpt ----------------------------------------------------
def test_sd15_diffusers_folder_gives_the_single_files_weights(host, diffusers_folder, loaded):
    folder = diffusers_folder("sd15_ip2p")
    nodes = host.nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = loaded
    options = nodes["IPX2P_DiffusersLoader"].GET_SCHEMA().inputs[0].options
    assert f"diffusers/{folder.name}" in options
    folder_model, folder_clip, folder_vae, info = nodes["IPX2P_DiffusersLoader"].execute(
        model_path=f"diffusers/{folder.name}", clip_vae_from="(from the folder)").result
    assert "family: SD1.5 InstructPix2Pix" in info and "diffusers layout" in info and "no EMA" in info
    assert type(folder_model.model).__name__ == "SD15_instructpix2pix"
    assert tensor_digests(folder_model.model.diffusion_model) == tensor_digests(model.model.diffusion_model)
    assert tensor_digests(folder_vae.first_stage_model) == tensor_digests(vae.first_stage_model)
    ours, theirs = folder_clip.cond_stage_model.state_dict(), clip.cond_stage_model.state_dict()
    # text_projection: SD1.5 files have none, the host leaves it unset on both sides
    checked = [k for k in theirs if not k.endswith("text_projection.weight")]
    assert checked and all(torch.equal(ours[k].float(), theirs[k].float()) for k in checked)
    del folder_model, folder_clip, folder_vae
    release_models(host)


def test_a_unet_only_folder_takes_text_and_vae_from_a_checkpoint(host, diffusers_folder, ip2p_ckpt, tmp_path):
    import folder_paths

    from ipx2p_tools.checkpoints import unet_only_folder

    root = tmp_path / "diffusers_extra"
    root.mkdir()
    unet_only = unet_only_folder(diffusers_folder("sd15_ip2p"), root)
    folder_paths.add_model_folder_path("diffusers", str(root))
    loader = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_DiffusersLoader"]
    name = f"diffusers/{unet_only.name}"
    with pytest.raises(ValueError, match="lacks text_encoder/, vae/") as caught:
        loader.execute(model_path=name, clip_vae_from="(from the folder)")
    assert "IPX2P_DiffusersLoader: input 'clip_vae_from'" in str(caught.value) and "Fix:" in str(caught.value)
    model, clip, vae, info = loader.execute(model_path=name, clip_vae_from=ip2p_ckpt.name).result
    assert clip is not None and vae is not None and "SD1.5 InstructPix2Pix" in info
    empty = root / "no_unet"
    empty.mkdir()
    (empty / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInstructPix2PixPipeline"}))
    with pytest.raises(ValueError, match="has no unet/ weights") as caught:
        loader.execute(model_path="diffusers/no_unet", clip_vae_from="(from the folder)")
    assert "Fix:" in str(caught.value)
    del model, clip, vae
    release_models(host)


def test_magicbrush_lightning_ckpt_loads_through_the_weights_only_loader(host, synthetic, loaded):
    path = synthetic("magicbrush")
    model, _, _, info = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"].execute(
        ckpt_name=path.name, weights="auto").result
    assert "SD1.5 InstructPix2Pix" in info and "MagicBrush" in info and "pickle" in info
    assert tensor_digests(model.model.diffusion_model) == tensor_digests(loaded[0].model.diffusion_model)
    del model
    release_models(host)


# -- InstructDiffusion's formula, and precision -----------------------------------------------------------------
def test_instructdiffusion_formula_against_the_branches_written_out(host, loaded):
    import comfy.sample
    import comfy.samplers

    from reference import instructdiffusion_cfg

    model, clip, vae = loaded
    positive, negative = encode_text(clip, "make it snowy"), encode_text(clip, "")
    image = vae.encode(pixels((64, 48), seed=5))
    edit = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_Edit"]
    result = edit.execute(model, positive, negative, {"samples": image}, seed=2, steps=1, text_cfg=5.0, image_cfg=1.25,
                          sampler_name="euler", scheduler="normal", denoise=1.0, formula="instructdiffusion").result[0]
    # One Euler step to sigma 0 returns the denoised prediction at x_T; compute the three branches
    # at x_T directly with the host's model and combine them as the paper writes it.
    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", 1)
    x_t = comfy.sample.prepare_noise(torch.zeros_like(image), 2) * torch.sqrt(1 + sigmas[0] ** 2)
    sigma = sigmas[:1]
    import comfy.model_management

    comfy.model_management.load_models_gpu([model])
    with torch.no_grad():
        def branch(text, concat):
            return model.model.apply_model(x_t, sigma, c_concat=concat, c_crossattn=text[0][0])
        c, i, t = branch(positive, image), branch(negative, image), branch(positive, torch.zeros_like(image))
        expected = model.model.process_latent_out(instructdiffusion_cfg(c, i, t, 5.0, 1.25))
    assert relative_l2(result["samples"], expected) < 1e-5
    # the Guider with the same formula, noise and sigmas is the same edit
    guider = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_Guider"].execute(model, positive, negative, {"samples": image}, 5.0,
                                                                   1.25, formula="instructdiffusion").result[0]
    empty = torch.zeros_like(image)
    guided = guider.sample(comfy.sample.prepare_noise(empty, 2), empty, comfy.samplers.sampler_object("euler"), sigmas,
                           seed=2, disable_pbar=True)
    assert relative_l2(guided.cpu(), result["samples"]) < 1e-6
    # and InstructPix2Pix's formula is a different edit
    other = edit.execute(model, positive, negative, {"samples": image}, seed=2, steps=1, text_cfg=5.0, image_cfg=1.25,
                         sampler_name="euler", scheduler="normal", denoise=1.0).result[0]
    assert relative_l2(other["samples"], expected) > 1e-3


def test_fp16_weights_edit_finitely_and_compute_as_the_host_decides(host, ip2p_ckpt, loaded):
    import comfy.model_management

    nodes = host.nodes.NODE_CLASS_MAPPINGS
    half, clip, vae, info = nodes["IPX2P_CheckpointLoader"].execute(ckpt_name=ip2p_ckpt.name, weights="auto",
                                                                    weight_dtype="fp16").result
    assert half.model.get_dtype() == torch.float16
    # the compute dtype is the host's choice for fp16 weights on this device (fp32 on a CPU)
    expected = comfy.model_management.unet_manual_cast(torch.float16, half.load_device,
                                                       half.model.model_config.supported_inference_dtypes)
    assert getattr(half.model, "manual_cast_dtype", None) == expected
    assert f"computing in {str(expected or torch.float16).replace('torch.', '')}" in info
    positive, negative = encode_text(clip, "make it snowy"), encode_text(clip, "")
    edit_latent = {"samples": vae.encode(pixels((64, 64)))}
    options = dict(seed=1, steps=2, text_cfg=7.5, image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0)
    edit = nodes["IPX2P_Edit"]
    from_half = edit.execute(half, positive, negative, edit_latent, **options).result[0]["samples"]
    from_full = edit.execute(loaded[0], positive, negative, edit_latent, **options).result[0]["samples"]
    assert torch.isfinite(from_half).all() and relative_l2(from_half, from_full) < 1e-2
    # Activations far beyond fp16's range (a weight patched x 1e4): the host's compute dtype keeps
    # them finite here, as it does for core's loaders.
    hot = half.clone()
    key = "diffusion_model.middle_block.1.proj_out.weight"
    hot.add_patches({key: (hot.get_key_patches("diffusion_model.")[key][0][0] * 1e4,)}, 1.0, 1.0)
    overflowing = edit.execute(hot, positive, negative, edit_latent, **options).result[0]["samples"]
    assert torch.isfinite(overflowing).all()
    del half, hot, clip, vae
    release_models(host)


def test_unknown_weight_dtype_is_refused(host, ip2p_ckpt):
    with pytest.raises(ValueError, match="input 'weight_dtype' is 'fp8'"):
        host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"].execute(ckpt_name=ip2p_ckpt.name, weights="auto",
                                                                        weight_dtype="fp8")


def test_encode_instructions_suffix(host, loaded):
    _, clip, _ = loaded
    positive, _ = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_EncodeInstructions"].execute(
        clip, "make it snowy\nturn it red", suffix=", image quality is five out of five").result
    torch.testing.assert_close(positive[0][0][1:2], encode_text(clip, "turn it red, image quality is five out of five")[0][0])


