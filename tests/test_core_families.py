"""The family table without the host: detection from tensor names and shapes, refusals, info."""
from __future__ import annotations

import pytest

from ipx2p_core.families import FAMILIES, UnsupportedModel, detect_family, family_by_key, info_text, unet_facts
from ipx2p_tools.testkit import layouts, sd15_layout


def shapes(layout, extra=()):
    table = {key: shape for key, shape in layout}
    table.update({key: () for key in extra})
    return table


@pytest.mark.parametrize(("layout", "extra", "family"), [
    (sd15_layout.sd15_checkpoint_layout(8), (), "sd15_ip2p"),
    (layouts.sd21_checkpoint_layout(8), (), "sd21_ip2p"),
    (layouts.sdxl_checkpoint_layout(8), (), "sdxl_ip2p"),
    (layouts.sdxl_checkpoint_layout(8), tuple(layouts.COSXL_EDM_KEYS), "cosxl_edit"),
])
def test_families_are_detected_from_names_and_shapes(layout, extra, family):
    facts = unet_facts(shapes(layout, extra))
    assert facts is not None and facts.layout == "ldm" and facts.in_channels == 8
    assert detect_family(facts).key == family


@pytest.mark.parametrize(("layout", "words"), [
    (sd15_layout.sd15_checkpoint_layout(4), ["text-to-image SD1.5 UNet", "Make Any SD1.5 Model Editable"]),
    (layouts.sd21_checkpoint_layout(4), ["text-to-image SD2.x UNet", "cross-attention width 1024"]),
    (layouts.sdxl_checkpoint_layout(4), ["text-to-image SDXL UNet", "CosXL Edit"]),
    (sd15_layout.vae_layout(), ["no Stable Diffusion UNet"]),
])
def test_other_models_are_refused_with_what_they_are_and_the_fix(layout, words):
    with pytest.raises(UnsupportedModel) as caught:
        detect_family(unet_facts(shapes(layout)))
    message = str(caught.value)
    assert all(word in message for word in words) and "Fix:" in message


def test_a_9_channel_inpainting_model_is_refused():
    table = shapes(sd15_layout.sd15_checkpoint_layout(8))
    table["model.diffusion_model.input_blocks.0.0.weight"] = (320, 9, 3, 3)
    with pytest.raises(UnsupportedModel, match="inpainting SD1.5 UNet"):
        detect_family(unet_facts(table))


def test_diffusers_unet_keys_are_read_too():
    diffusers_sdxl = {
        "conv_in.weight": (320, 8, 3, 3),
        "down_blocks.1.attentions.0.proj_in.weight": (640, 640),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
        "add_embedding.linear_1.weight": (1280, 2816),
    }
    facts = unet_facts(diffusers_sdxl)
    assert facts is not None and facts.layout == "diffusers" and detect_family(facts).key == "sdxl_ip2p"
    diffusers_sd15 = {
        "conv_in.weight": (320, 8, 3, 3),
        "down_blocks.0.attentions.0.proj_in.weight": (320, 320, 1, 1),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    }
    assert detect_family(unet_facts(diffusers_sd15)).key == "sd15_ip2p"


def test_every_family_has_settings_a_source_and_an_info_text():
    for family in FAMILIES:
        assert family.presets and all(preset.source for preset in family.presets)
        facts = unet_facts(shapes(layouts.sdxl_checkpoint_layout(8) if family.base == "SDXL" else
                                  layouts.sd21_checkpoint_layout(8) if family.base == "SD2.x" else
                                  sd15_layout.sd15_checkpoint_layout(8)))
        text = info_text(family, facts, "EMA", "fp16", "eps")
        assert family.name in text and f"text_cfg {family.recommended.text_cfg:g}" in text
    sd15 = next(f for f in FAMILIES if f.key == "sd15_ip2p")
    assert {p.model for p in sd15.presets} == {"InstructPix2Pix", "MagicBrush", "HIVE (SD1.5)", "InstructDiffusion"}
    cosxl = next(f for f in FAMILIES if f.key == "cosxl_edit")
    assert cosxl.image_latent_scale == 0.13025 and (cosxl.recommended.text_cfg, cosxl.recommended.image_cfg) == (5.0, 1.5)


def test_layouts_have_the_published_sizes():
    import math

    def unet_params(layout):
        return sum(math.prod(shape) for key, shape in layout if key.startswith(sd15_layout.UNET_PREFIX))

    assert layouts.unet_layout(layouts.SD15_UNET) == sd15_layout.unet_layout(8)
    assert round(unet_params(layouts.sd21_checkpoint_layout(4)) / 1e6) == 866  # SD2.x UNet, 865.9 M
    assert round(unet_params(layouts.sdxl_checkpoint_layout(4)) / 1e6) == 2567  # SDXL UNet, 2567.5 M


# -- the table says how each family loads; no code branches on a base string ---------------------------------
def test_every_family_says_how_it_loads():
    from ipx2p_core.families import LOAD_ROUTES

    assert len({family.key for family in FAMILIES}) == len(FAMILIES)
    for family in FAMILIES:
        assert family.load_route in LOAD_ROUTES, family.key
        assert family.text_encoders in (1, 2), family.key
        assert isinstance(family.diffusers_folder, bool) and isinstance(family.editable_base, bool), family.key
    routes = {family.key: (family.load_route, family.text_encoders, family.diffusers_folder) for family in FAMILIES}
    assert routes == {"sd15_ip2p": ("host_guess_config", 1, True), "sd21_ip2p": ("sd2_ip2p_config", 1, False),
                      "sdxl_ip2p": ("host_guess_config", 2, True), "cosxl_edit": ("host_guess_config", 2, True)}


def test_the_diffusers_loader_takes_the_bases_the_table_says():
    from ipx2p_core.families import diffusers_bases

    assert diffusers_bases() == ["SD1.5", "SDXL"]


def test_a_refusal_carries_what_was_given_expected_and_the_fix():
    import pickle

    from ipx2p_core.families import IP2P_UNET, detect_unet

    with pytest.raises(UnsupportedModel) as caught:
        detect_unet(shapes(sd15_layout.sd15_checkpoint_layout(4)))
    error = caught.value
    assert error.given.startswith("a text-to-image SD1.5 UNet (") and error.expected == IP2P_UNET
    assert "Make Any SD1.5 Model Editable" in error.fix
    assert str(error) == f"{error.given}; expected {error.expected}. Fix: {error.fix}"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.given, copy.expected, copy.fix, str(copy)) == (error.given, error.expected, error.fix, str(error))
    with pytest.raises(UnsupportedModel, match="no Stable Diffusion UNet"):
        detect_unet(shapes(sd15_layout.vae_layout()))
    family, facts = detect_unet(shapes(layouts.sd21_checkpoint_layout(8)))
    assert family.key == "sd21_ip2p" and facts.context_dim == 1024


def base_string_comparisons(source: str, filename: str = "<source>") -> list[int]:
    """Lines where `<something>.base` is compared with a string literal (or a tuple/list/set of them)."""
    import ast

    def is_base(node):
        return isinstance(node, ast.Attribute) and node.attr == "base"

    def is_text(node):
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(is_text(item) for item in node.elts)

    lines = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(is_base(o) for o in operands) and any(is_text(o) for o in operands):
                lines.append(node.lineno)
        elif isinstance(node, ast.Match) and is_base(node.subject):
            lines.append(node.lineno)
    return sorted(lines)


def test_no_code_branches_on_a_family_base_string():
    from ipx2p_tools.layout import REPO_ROOT

    offenders = {}
    for folder in ("nodes", "ipx2p_core"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            found = base_string_comparisons(path.read_text(), str(path))
            if found:
                offenders[str(path.relative_to(REPO_ROOT))] = found
    assert offenders == {}


def test_the_base_check_catches_a_branch():
    source = ('if family.base == "SD2.x":\n    pass\nwanted = 2 if family.base == "SDXL" else 1\n'
              'if family.base not in ("SD1.5", "SDXL"):\n    pass\nsame = other.base != family.base\n')
    assert base_string_comparisons(source) == [1, 3, 4]


def test_a_new_sd15_fine_tune_family_is_one_table_entry(monkeypatch):
    # The diff a new IP2P-shaped SD1.5 family needs: this one entry (its marker key tells its files
    # from the official layout they share). Detection, refusals and info pick it up from the table.
    import dataclasses

    import ipx2p_core.families as families

    official = family_by_key("sd15_ip2p")
    new = dataclasses.replace(
        official, key="sd15_newfix", name="SD1.5 NewFix Edit", marker_keys=("newfix.version",),
        presets=(families.Preset("NewFix", 6.0, 1.4, 50, "euler_ancestral", "normal", 512, source="its model card"),))
    monkeypatch.setattr(families, "FAMILIES", (*families.FAMILIES, new))
    layout = shapes(sd15_layout.sd15_checkpoint_layout(8), extra=("newfix.version",))
    family, facts = families.detect_unet(layout)
    assert family.key == "sd15_newfix" and facts.markers == {"newfix.version"}
    assert "NewFix: text_cfg 6" in info_text(family, facts, "the file's only copy", "fp16", "eps")
    assert families.detect_unet(shapes(sd15_layout.sd15_checkpoint_layout(8)))[0].key == "sd15_ip2p"  # no marker: as before
    with pytest.raises(UnsupportedModel):
        families.detect_unet(shapes(sd15_layout.sd15_checkpoint_layout(4), extra=("newfix.version",)))
