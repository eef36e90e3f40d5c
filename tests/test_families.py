"""Every InstructPix2Pix-shaped family in the real host, on random-weight files of each true layout:
detected and reported in info, built as the host's class for the family, the image latent scaled
as the family expects at the first UNet call, an edit through the Edit node and through the
Guider; diffusers folders give the single file's weights; wrong files are refused with the fix."""
from __future__ import annotations

import gc
import hashlib
import json
import os

import pytest
import torch

from helpers import relative_l2
from test_nodes_graph import encode_text, pixels

SDXL_DTYPE = "fp16"  # keeps the SDXL models at 5 GiB in memory; the CPU computes in fp32 either way


def release():
    import comfy.model_management

    comfy.model_management.unload_all_models()
    gc.collect()


def tensor_digests(module) -> dict[str, str]:
    """A digest of every tensor (exact equality without holding two models)."""
    return {name: hashlib.sha1(value.detach().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
            for name, value in module.state_dict().items()}


def edit_both_ways(host, model, clip, vae, instruction="make it snowy", size=64, text_cfg=5.0, image_cfg=1.5,
                   formula="instructpix2pix"):
    """One step through IPX2P_Edit (watching the first UNet call) and through IPX2P_Guider with the
    same noise and sigmas. Returns (edit latent, guider latent, image latent, c_concat seen)."""
    import comfy.sample
    import comfy.samplers

    nodes = host.nodes.NODE_CLASS_MAPPINGS
    positive, negative = encode_text(clip, instruction), encode_text(clip, "")
    edit_latent = nodes["IPX2P_EncodeImage"].execute(vae, pixels((size, size), seed=3), "keep", 512).result[0]
    seen = []
    watched = model.clone()

    def wrapper(apply_model, args):
        seen.append(args["c"]["c_concat"].detach().clone())
        return apply_model(args["input"], args["timestep"], **args["c"])

    watched.set_model_unet_function_wrapper(wrapper)
    options = dict(seed=7, steps=1, text_cfg=text_cfg, image_cfg=image_cfg, sampler_name="euler", scheduler="normal",
                   denoise=1.0, formula=formula)
    edited = nodes["IPX2P_Edit"].execute(watched, positive, negative, edit_latent, **options).result[0]["samples"]
    guider = nodes["IPX2P_Guider"].execute(model, positive, negative, edit_latent, text_cfg, image_cfg,
                                           formula=formula).result[0]
    empty = torch.zeros_like(edit_latent["samples"])
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 1).cpu()
    guided = guider.sample(comfy.sample.prepare_noise(empty, 7), empty, comfy.samplers.sampler_object("euler"), sigmas,
                           seed=7, disable_pbar=True)
    return edited, guided.cpu(), edit_latent["samples"], seen[0]


def assert_image_latent_scaled(concat: torch.Tensor, image_latent: torch.Tensor, scale: float) -> None:
    # The branches carrying the image see it times the family's scale; the unconditional one zeros.
    items = [concat[k:k + 1] for k in range(concat.shape[0])]
    with_image = [item for item in items if float(item.abs().max()) > 0]
    assert with_image and len(with_image) < len(items)
    for item in with_image:
        torch.testing.assert_close(item, image_latent.to(item) * scale, rtol=1e-6, atol=1e-6)


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
    release()


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
    release()


def test_magicbrush_lightning_ckpt_loads_through_the_weights_only_loader(host, synthetic, loaded):
    path = synthetic("magicbrush")
    model, _, _, info = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"].execute(
        ckpt_name=path.name, weights="auto").result
    assert "SD1.5 InstructPix2Pix" in info and "MagicBrush" in info and "pickle" in info
    assert tensor_digests(model.model.diffusion_model) == tensor_digests(loaded[0].model.diffusion_model)
    del model
    release()


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(host, tmp_path):
    import folder_paths

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    root = tmp_path / "evil"
    root.mkdir()
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Payload()}, root / "evil.ckpt")
    folder_paths.add_model_folder_path("checkpoints", str(root))
    with pytest.raises(Exception) as caught:
        host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"].execute(ckpt_name="evil.ckpt", weights="auto")
    assert "weights" in str(caught.value).lower() or "unpickl" in str(caught.value).lower()
    assert not marker.exists()


@pytest.mark.parametrize(("kind", "words"), [
    ("sdxl_base", "text-to-image SDXL UNet"),
    ("sd21_base", "text-to-image SD2.x UNet"),
])
def test_text_to_image_files_of_other_bases_are_refused(host, synthetic, kind, words):
    path = synthetic(kind)  # the true layout and size, zeros (only the header is read before refusing)
    with pytest.raises(ValueError) as caught:
        host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"].execute(ckpt_name=path.name, weights="auto")
    message = str(caught.value)
    assert f"IPX2P_CheckpointLoader: input 'ckpt_name' is {path.name}" in message and words in message and "Fix:" in message


# -- SD2.1 (HIVE) -------------------------------------------------------------------------------------------
def test_hive_sd21_is_set_up_with_the_host_classes(host, synthetic):
    import comfy.supported_models

    nodes = host.nodes.NODE_CLASS_MAPPINGS
    model, clip, vae, info = nodes["IPX2P_CheckpointLoader"].execute(ckpt_name=synthetic("hive_sd21").name,
                                                                     weights="auto").result
    assert "SD2.1 InstructPix2Pix (HIVE)" in info and "cross-attention width 1024" in info
    assert "image quality is five out of five" in info and "prediction: eps" in info
    assert type(model.model).__name__ == "SD15_instructpix2pix"
    assert isinstance(model.model.model_config, comfy.supported_models.SD20)
    assert model.model.model_config.unet_config["context_dim"] == 1024
    positive, negative = nodes["IPX2P_EncodeInstructions"].execute(
        clip, "make it snowy", suffix=", image quality is five out of five").result
    assert positive[0][0].shape[-1] == 1024
    edited, guided, image_latent, concat = edit_both_ways(host, model, clip, vae, text_cfg=7.5, image_cfg=1.5)
    assert_image_latent_scaled(concat, image_latent, 1.0)
    assert torch.isfinite(edited).all() and relative_l2(guided, edited) < 1e-6
    del model, clip, vae
    release()


# -- SDXL: SDXL-InstructPix2Pix (diffusers folder) and CosXL Edit (single file) ----------------------------------
@pytest.fixture(scope="module")
def sdxl_folder_run(host, diffusers_folder):
    """The SDXL-InstructPix2Pix folder loaded once: what the tests below check, then released."""
    folder = diffusers_folder("sdxl_ip2p")
    model, clip, vae, info = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_DiffusersLoader"].execute(
        model_path=f"diffusers/{folder.name}", clip_vae_from="(from the folder)", weight_dtype=SDXL_DTYPE).result
    run = {"info": info, "class": type(model.model).__name__, "type": model.model.model_type.name,
           "digests": tensor_digests(model.model.diffusion_model),
           "pooled": encode_text(clip, "make it snowy")[0][1].get("pooled_output"),
           "weights_dtype": model.model.get_dtype(),
           "results": edit_both_ways(host, model, clip, vae, text_cfg=3.0, image_cfg=1.5)}
    del model, clip, vae
    release()
    return run


def test_sdxl_instructpix2pix_folder(sdxl_folder_run):
    run = sdxl_folder_run
    assert "family: SDXL-InstructPix2Pix" in run["info"] and "2816-wide" in run["info"] and "768 px" in run["info"]
    assert (run["class"], run["type"]) == ("SDXL_instructpix2pix", "EPS")
    assert run["weights_dtype"] == torch.float16 and "UNet weights float16" in run["info"]
    assert run["pooled"] is not None and run["pooled"].shape[-1] == 1280  # two text encoders, the second pooled
    edited, guided, image_latent, concat = run["results"]
    assert_image_latent_scaled(concat, image_latent, 1.0)  # diffusers' SDXL-IP2P: the latent unscaled
    assert torch.isfinite(edited).all() and relative_l2(guided, edited) < 1e-6


def test_cosxl_edit_and_the_folder_hold_the_same_unet(host, synthetic, sdxl_folder_run):
    # The SDXL folder was written by diffusers from the CosXL file, so its UNet must be the same.
    nodes = host.nodes.NODE_CLASS_MAPPINGS
    model, clip, vae, info = nodes["IPX2P_CheckpointLoader"].execute(ckpt_name=synthetic("cosxl").name, weights="auto",
                                                                     weight_dtype=SDXL_DTYPE).result
    assert "family: CosXL Edit" in info and "edm_vpred.sigma_max" in info and "v (EDM), sigma 0.002-120" in info
    assert type(model.model).__name__ == "SDXL_instructpix2pix" and model.model.model_type.name == "V_PREDICTION_EDM"
    assert tensor_digests(model.model.diffusion_model) == sdxl_folder_run["digests"]
    edited, guided, image_latent, concat = edit_both_ways(host, model, clip, vae, text_cfg=5.0, image_cfg=1.5)
    assert_image_latent_scaled(concat, image_latent, 0.13025)  # CosXL: SDXL's latent scale, by the host's class
    assert torch.isfinite(edited).all() and relative_l2(guided, edited) < 1e-6
    # EDM sigmas: the edit started at the file's sigma_max
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 4)
    assert float(sigmas[0]) == pytest.approx(120.0, rel=1e-4)
    del model, clip, vae
    release()


# -- InstructDiffusion's formula, and precision -----------------------------------------------------------------
def test_instructdiffusion_formula_against_the_branches_written_out(host, loaded):
    import comfy.sample
    import comfy.samplers

    from ipx2p_core.guidance import instructdiffusion_cfg

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
    release()


def test_unknown_weight_dtype_is_refused(host, ip2p_ckpt):
    with pytest.raises(ValueError, match="input 'weight_dtype' is 'fp8'"):
        host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"].execute(ckpt_name=ip2p_ckpt.name, weights="auto",
                                                                        weight_dtype="fp8")


def test_encode_instructions_suffix(host, loaded):
    _, clip, _ = loaded
    positive, _ = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_EncodeInstructions"].execute(
        clip, "make it snowy\nturn it red", suffix=", image quality is five out of five").result
    torch.testing.assert_close(positive[0][0][1:2], encode_text(clip, "turn it red, image quality is five out of five")[0][0])


# -- Make Any SD1.5 Model Editable ------------------------------------------------------------------------------------
def test_make_editable_adds_the_finetunes_change_and_keeps_the_first_convolution(host, ip2p_ckpt, sd15_ckpt, synthetic):
    import folder_paths
    from safetensors import safe_open

    from helpers import Graph, run_ok

    base_ckpt = synthetic("sd15_b")
    multiplier = 0.5
    g = Graph()
    ip2p = g.add("IPX2P_CheckpointLoader", ckpt_name=ip2p_ckpt.name, weights="auto", weight_dtype="fp16")
    finetune = g.add("CheckpointLoaderSimple", ckpt_name=sd15_ckpt.name)
    base = g.add("CheckpointLoaderSimple", ckpt_name=base_ckpt.name)
    merged = g.add("IPX2P_MakeEditable", ip2p_model=(ip2p, 0), finetune_model=(finetune, 0), base_model=(base, 0),
                   multiplier=multiplier)
    # the text encoders with core's nodes: ip2p + multiplier x (finetune - base)
    difference = g.add("CLIPMergeSubtract", clip1=(finetune, 1), clip2=(base, 1), multiplier=multiplier)
    clip = g.add("CLIPMergeAdd", clip1=(ip2p, 1), clip2=(difference, 0))
    g.add("CheckpointSave", model=(merged, 0), clip=(clip, 0), vae=(ip2p, 2), filename_prefix="checkpoints/ipx2p_editable")
    run_ok(host, g)
    saved_dir = host.output_dir / "checkpoints"
    saved = sorted(saved_dir.glob("ipx2p_editable*.safetensors"))[-1]
    prefix = "model.diffusion_model."
    with safe_open(str(saved), "pt") as out, safe_open(str(ip2p_ckpt), "pt") as a, \
            safe_open(str(sd15_ckpt), "pt") as f, safe_open(str(base_ckpt), "pt") as b:
        keys = [k for k in out.keys() if k.startswith(prefix)]
        assert len(keys) == 686
        for key in keys:
            got = out.get_tensor(key)
            if key == prefix + "input_blocks.0.0.weight":
                assert got.shape[1] == 8 and torch.equal(got, a.get_tensor(key).to(got.dtype))
                continue
            # the host adds the patches in order, in fp32, then stores the weight's dtype
            expected = a.get_tensor(key).float() + multiplier * f.get_tensor(key).float()
            expected = (expected + (-multiplier) * b.get_tensor(key).float()).to(got.dtype)
            assert torch.equal(got, expected), key
        text_key = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
        expected_text = a.get_tensor(text_key).float() + multiplier * (f.get_tensor(text_key).float()
                                                                       - b.get_tensor(text_key).float())
        torch.testing.assert_close(out.get_tensor(text_key).float(), expected_text, rtol=1e-3, atol=1e-3)
    # and it reloads through the pack's loader as an edit model
    folder_paths.add_model_folder_path("checkpoints", str(saved_dir))
    model, _, _, info = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"].execute(
        ckpt_name=saved.name, weights="auto").result
    assert "family: SD1.5 InstructPix2Pix" in info and type(model.model).__name__ == "SD15_instructpix2pix"
    del model
    saved.unlink()
    release()


def test_make_editable_refuses_a_model_of_another_base(host, ip2p_ckpt, synthetic):
    from helpers import Graph, run_error

    g = Graph()
    ip2p = g.add("IPX2P_CheckpointLoader", ckpt_name=ip2p_ckpt.name, weights="auto")
    sd21 = g.add("IPX2P_CheckpointLoader", ckpt_name=synthetic("hive_sd21").name, weights="auto")
    merged = g.add("IPX2P_MakeEditable", ip2p_model=(ip2p, 0), finetune_model=(sd21, 0), base_model=(ip2p, 0),
                   multiplier=1.0)
    g.add("ModelSave", model=(merged, 0), filename_prefix="never")
    error = run_error(host, g)
    assert "IPX2P_MakeEditable: input 'finetune_model'" in error and "width 1024" in error and "Fix:" in error
