"""Every InstructPix2Pix-shaped family in the real host, on random-weight files of each true layout:
detected and reported in info, built as the host's class for the family, the image latent scaled
as the family expects at the first UNet call, an edit through the Edit node and through the
Guider; diffusers folders give the single file's weights; wrong files are refused with the fix."""
from __future__ import annotations

import os

import pytest
import torch

from helpers import (
    assert_image_latent_scaled, edit_both_ways, encode_text, relative_l2, release_models, tensor_digests,
)

pytestmark = pytest.mark.usefixtures("clean_host")
SDXL_DTYPE = "fp16"  # keeps the SDXL models at 5 GiB in memory; the CPU computes in fp32 either way


# -- refusals --------------------------------------------------------------------------------------------
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
    release_models(host)


def test_hive_sd21_with_a_v_prediction_marker_is_set_up_for_v(host, synthetic):
    # SD2.1 edit models are eps (SD2.1-base, as HIVE) or v; a file that says v (ComfyUI's v_pred
    # key) gets the host's v-prediction sampling, the same file without it eps.
    import sys

    import comfy.utils

    loader_module = host.nodes.NODE_CLASS_MAPPINGS["IPX2P_CheckpointLoader"].__module__
    loader = sys.modules[loader_module.rsplit(".", 1)[0] + ".model_loading"]
    state_dict = comfy.utils.load_torch_file(str(synthetic("hive_sd21")), safe_load=True)
    state_dict = {key: value for key, value in state_dict["state_dict"].items()} if "state_dict" in state_dict else state_dict
    assert loader.sd2_prediction(state_dict).name == "EPS"
    state_dict["v_pred"] = torch.tensor([])
    model, _, _ = loader.load_sd2(state_dict, None, {})
    assert model.model.model_type.name == "V_PREDICTION"
    assert "V_PREDICTION" in {base.__name__ for base in type(model.get_model_object("model_sampling")).__mro__}
    assert loader.prediction_text(model).startswith("v,")
    del model, state_dict
    release_models(host)


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
    release_models(host)
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
    release_models(host)


