"""Make Any SD1.5 Model Editable in the real host: the arithmetic, the kept first convolution, and
the saved file reloading as an edit model."""
from __future__ import annotations

import pytest
import torch

from helpers import release_models

pytestmark = pytest.mark.usefixtures("clean_host")


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
    release_models(host)


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
