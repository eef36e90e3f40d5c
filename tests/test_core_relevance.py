"""Where the instruction acts (ipx2p_core.relevance) without the host: synthetic predictions whose
text term (c - i) is large in a known rectangle, plus noise everywhere that changes every step."""
from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
import torch
import torch.nn.functional as F

from ipx2p_core import relevance
from ipx2p_core.relevance import (
    DEFAULT_EDGE, DEFAULT_GROW, DEFAULT_SMOOTH, DEFAULT_THRESHOLD, DEFAULT_UNTIL, RelevanceMap, find_region,
    normalised_relevance, region_stats, soft_region, steps_to_gather,
)

SIZE = 64
# (top, left, height, width) in latent pixels
CENTRE = (20, 16, 18, 26)


def rectangle(box, size=SIZE):
    top, left, height, width = box
    truth = torch.zeros((1, 1, size, size), dtype=torch.bool)
    truth[..., top:top + height, left:left + width] = True
    return truth


def gaussian_blur(planes, sigma):
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = planes.shape[1]
    out = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="replicate"),
                   kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"),
                    kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def predictions(signal, steps=10, noise=(0.3, 0.5), seed=0, correlated=0.0):
    """Yield (c, i, sigma) for `steps` steps. signal [B,1,h,w] in 0..1 is where (and how strongly)
    the instruction acts. Per step and item the edit has a random direction in the 4 latent
    channels and a random strength (0.5..1.5), each position a little texture (+-30%); the noise is
    Gaussian per channel with a mean length drawn per step in `noise` times the step's strength
    (so 30-50% of the signal), optionally spatially correlated (blurred, sigma `correlated` px)."""
    generator = torch.Generator().manual_seed(seed)
    batch, _, height, width = signal.shape
    sigmas = torch.linspace(14.6, 0.03, steps)
    for step in range(steps):
        image_only = torch.randn((batch, 4, height, width), generator=generator)
        strength = 0.5 + torch.rand((batch, 1, 1, 1), generator=generator)
        direction = F.normalize(torch.randn((batch, 4, 1, 1), generator=generator), dim=1)
        texture = 1.0 + 0.3 * (2 * torch.rand((batch, 1, height, width), generator=generator) - 1)
        edit = signal * strength * direction * texture
        share = noise[0] + (noise[1] - noise[0]) * torch.rand((batch, 1, 1, 1), generator=generator)
        field = torch.randn((batch, 4, height, width), generator=generator)
        if correlated:
            field = gaussian_blur(field, correlated)
        # scale the noise so its mean length per position is `share` of the edit's strength
        field = field / torch.linalg.vector_norm(field, dim=1).mean(dim=(1, 2)).view(-1, 1, 1, 1)
        cond = image_only + edit + field * share * strength
        yield cond, image_only, float(sigmas[step])


def gathered(signal, **options):
    relevance_map = RelevanceMap()
    for cond, image_only, sigma in predictions(signal, **options):
        relevance_map.add(cond, image_only, sigma)
    return relevance_map


def found_at_defaults(signal, **options):
    return find_region(gathered(signal, **options).total())


# -- the rectangle is found -------------------------------------------------------------------------
@pytest.mark.parametrize("noise", [(0.3, 0.5), (0.5, 0.5), (0.6, 0.8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_rectangle_is_found_at_the_defaults(noise, seed):
    truth = rectangle(CENTRE)
    found = found_at_defaults(truth.float(), noise=noise, seed=seed)
    precision, recall = region_stats(found.mask, truth)
    print(f"rectangle noise={noise} seed={seed}: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9
    assert not bool(found.fallback.any())


def test_a_soft_edged_rectangle_is_found():
    # real edits fade out over a few latent pixels: the truth is the rectangle, the signal its blur
    truth = rectangle(CENTRE)
    for sigma, seed in ((1.0, 3), (2.0, 3), (2.0, 20), (2.5, 21)):
        signal = gaussian_blur(truth.float(), sigma)
        found = found_at_defaults(signal, seed=seed)
        precision, recall = region_stats(found.mask, truth)
        print(f"soft rectangle sigma={sigma} seed={seed}: precision {precision:.3f} recall {recall:.3f}")
        assert precision >= 0.9 and recall >= 0.9


def test_correlated_noise_does_not_make_blobs():
    # the model's stray changes are blotches of a few latent pixels, not independent pixels
    truth = rectangle(CENTRE)
    found = found_at_defaults(truth.float(), correlated=1.5, noise=(0.3, 0.5), seed=4)
    precision, recall = region_stats(found.mask, truth)
    print(f"correlated noise: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9


@pytest.mark.parametrize("box", [(0, 40, 14, 24), (44, 0, 20, 12), (0, 0, 10, 64)])
def test_a_rectangle_at_the_border_is_found(box):
    truth = rectangle(box)
    found = found_at_defaults(truth.float(), seed=5)
    precision, recall = region_stats(found.mask, truth)
    print(f"border rectangle {box}: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9
    top, left, height, width = box
    assert float(found.mask[0, 0, top + height // 2, left + width // 2]) == 1.0


def test_each_item_of_a_batch_gets_its_own_region():
    truths = torch.cat([rectangle((4, 6, 16, 20)), rectangle((36, 30, 22, 28))])
    found = found_at_defaults(truths.float(), seed=6)
    for item in range(2):
        precision, recall = region_stats(found.mask[item:item + 1], truths[item:item + 1])
        print(f"batch item {item}: precision {precision:.3f} recall {recall:.3f}")
        assert precision >= 0.9 and recall >= 0.9
    assert float(found.mask[0, 0, 45, 44]) == 0.0 and float(found.mask[1, 0, 12, 16]) == 0.0


def test_an_irregular_region_is_found():
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    truth = (((ys - 30) / 14.0) ** 2 + ((xs - 36) / 20.0) ** 2 <= 1).view(1, 1, SIZE, SIZE)
    found = found_at_defaults(gaussian_blur(truth.float(), 1.0), seed=7)
    precision, recall = region_stats(found.mask, truth)
    print(f"ellipse: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9


def test_a_small_and_a_large_region_are_found():
    # an edit on under 1% of the picture (a 6x6 patch of 64x64), and one on 60% of it
    for box in ((30, 30, 6, 6), (4, 4, 50, 48)):
        truth = rectangle(box)
        found = found_at_defaults(truth.float(), seed=18)
        precision, recall = region_stats(found.mask, truth)
        print(f"rectangle {box}: precision {precision:.3f} recall {recall:.3f}")
        assert precision >= 0.9 and recall >= 0.9


def test_soft_edits_with_little_noise():
    # DEFAULT_THRESHOLD allows for the noise that real photos always have; with almost none the
    # outline of a strongly blurred edit lies about half a latent pixel outside its half-strength
    # contour: on a small 8x10 patch blurred by 2 px that is precision ~0.85
    cases = [((28, 24, 8, 10), 1.0, 0.9), ((28, 24, 8, 10), 2.0, 0.8), (CENTRE, 2.0, 0.9)]
    for box, sigma, least_precision in cases:
        truth = rectangle(box)
        for noise in ((0.02, 0.05), (0.1, 0.2)):
            found = found_at_defaults(gaussian_blur(truth.float(), sigma), noise=noise, seed=22)
            precision, recall = region_stats(found.mask, truth)
            print(f"{box} sigma={sigma} noise={noise}: precision {precision:.3f} recall {recall:.3f}")
            assert precision >= least_precision and recall >= 0.9


def test_rare_strong_outliers_do_not_make_a_region():
    # a few positions per step where (c - i) jumps (5x the edit, 1% of the positions, anywhere)
    truth = rectangle(CENTRE)
    generator = torch.Generator().manual_seed(19)
    relevance_map = RelevanceMap()
    for cond, image_only, sigma in predictions(truth.float(), seed=19):
        spikes = (torch.rand((1, 1, SIZE, SIZE), generator=generator) < 0.01).float()
        relevance_map.add(cond + 5.0 * spikes * torch.randn(cond.shape, generator=generator), image_only, sigma)
    precision, recall = region_stats(find_region(relevance_map.total()).mask, truth)
    print(f"outliers: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9


def test_the_scale_of_the_predictions_does_not_matter():
    truth = rectangle(CENTRE)
    steps = list(predictions(truth.float(), seed=8))
    small, large = RelevanceMap(), RelevanceMap()
    for cond, image_only, sigma in steps:
        small.add(cond, image_only, sigma)
        large.add(cond * 1000.0, image_only * 1000.0, sigma)
    torch.testing.assert_close(soft_region(small.total(), 0.5, 1, 0), soft_region(large.total(), 0.5, 1, 0))


# -- fallback -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 3, 10])
def test_noise_alone_edits_the_whole_picture(steps):
    # (c - i) of the same size everywhere: a global edit (a style), or nothing concentrated
    signal = torch.zeros((2, 1, SIZE, SIZE))
    found = found_at_defaults(signal, noise=(0.5, 1.0), seed=9, steps=steps)
    assert found.fallback.tolist() == [True, True]
    assert torch.equal(found.mask, torch.ones_like(found.mask))
    assert found.coverage.tolist() == [1.0, 1.0]
    assert "whole picture" in found.describe()[0]


def test_a_global_edit_edits_the_whole_picture():
    signal = torch.ones((1, 1, SIZE, SIZE))
    found = found_at_defaults(signal, seed=10)
    assert found.fallback.tolist() == [True]
    assert torch.equal(found.mask, torch.ones_like(found.mask))


def test_fallback_is_per_item():
    signal = torch.cat([rectangle(CENTRE).float(), torch.zeros((1, 1, SIZE, SIZE))])
    found = found_at_defaults(signal, seed=11)
    assert found.fallback.tolist() == [False, True]
    assert float(found.mask[1].min()) == 1.0 and float(found.mask[0].min()) == 0.0
    lines = found.describe()
    assert "editing" in lines[0] and "%" in lines[0] and "whole picture" in lines[1]


def test_all_zero_predictions_give_no_nan():
    relevance_map = RelevanceMap()
    zeros = torch.zeros((2, 4, 16, 16))
    for sigma in (10.0, 1.0):
        relevance_map.add(zeros, zeros, sigma)
    total = relevance_map.total()
    assert torch.equal(total, torch.zeros((2, 1, 16, 16)))
    normalised, concentrated = normalised_relevance(total, DEFAULT_SMOOTH)
    assert bool(torch.isfinite(normalised).all()) and concentrated.tolist() == [False, False]
    found = find_region(total)
    assert bool(torch.isfinite(found.mask).all()) and found.fallback.tolist() == [True, True]
    assert torch.equal(found.mask, torch.ones_like(found.mask))


# -- the controls ---------------------------------------------------------------------------------------
def test_a_higher_threshold_gives_a_smaller_region():
    truth = gaussian_blur(rectangle(CENTRE).float(), 2.0)
    total = gathered(truth, seed=12).total()
    masks = [soft_region(total, threshold, DEFAULT_SMOOTH, DEFAULT_GROW) for threshold in (0.2, 0.35, 0.5, 0.65, 0.8)]
    for lower, higher in zip(masks, masks[1:]):
        assert bool((higher <= lower).all())
        assert int((higher >= 0.5).sum()) < int((lower >= 0.5).sum())


def test_grow_enlarges_the_region():
    total = gathered(rectangle(CENTRE).float(), seed=13).total()
    masks = [soft_region(total, DEFAULT_THRESHOLD, DEFAULT_SMOOTH, grow) for grow in (0, 1, 3)]
    for smaller, larger in zip(masks, masks[1:]):
        assert bool((larger >= smaller).all())
        assert int((larger >= 0.5).sum()) > int((smaller >= 0.5).sum())
    # about 3 px more on each side along the axes
    core = masks[0][0, 0] >= 0.5
    rows = torch.nonzero(core.any(dim=1)).flatten()
    grown_rows = torch.nonzero((masks[2][0, 0] >= 0.5).any(dim=1)).flatten()
    assert int(rows[0]) - int(grown_rows[0]) == 3 and int(grown_rows[-1]) - int(rows[-1]) == 3


def test_the_region_is_soft_inside_0_1_and_its_outer_band_stays_below_half():
    total = gathered(rectangle(CENTRE).float(), seed=14).total()
    found = find_region(total)
    mask = found.mask
    assert mask.shape == (1, 1, SIZE, SIZE) and mask.dtype == torch.float32
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    soft = (mask > 0) & (mask < 1)
    assert int(soft.sum()) > 0  # a soft edge, not a staircase
    # the band outside the 0.5 outline is at most DEFAULT_EDGE px wide and below 0.5
    without_band = find_region(total, edge=0).mask
    band = (mask > 0) & (without_band == 0)
    assert int(band.sum()) > 0 and float(mask[band].max()) < 0.5
    assert torch.equal(mask >= 0.5, without_band >= 0.5)
    outline = relevance.grow_mask((without_band > 0).float().squeeze(1), DEFAULT_EDGE).unsqueeze(1)
    assert bool((mask[outline == 0] == 0).all())


def test_inputs_are_not_changed_and_bad_settings_are_refused():
    total = gathered(rectangle(CENTRE).float(), steps=3, seed=15).total()
    before = total.clone()
    find_region(total, 0.4, 2, 1)
    assert torch.equal(total, before)
    with pytest.raises(ValueError, match="threshold"):
        find_region(total, 1.5)
    with pytest.raises(ValueError, match="threshold"):
        find_region(total, float("nan"))
    with pytest.raises(ValueError, match="grow"):
        find_region(total, 0.5, 1, -1)


# -- RelevanceMap ---------------------------------------------------------------------------------------
def test_relevance_map_counts_steps_and_sums_normalised_maps():
    relevance_map = RelevanceMap()
    assert relevance_map.steps == 0
    with pytest.raises(RuntimeError, match="no step"):
        relevance_map.total()
    generator = torch.Generator().manual_seed(16)
    cond, image_only = torch.randn((2, 4, 8, 8), generator=generator), torch.randn((2, 4, 8, 8), generator=generator)
    relevance_map.add(cond, image_only, 5.0)
    relevance_map.add(cond.half(), image_only.half(), torch.tensor(1.0))
    assert relevance_map.steps == 2
    total = relevance_map.total()
    assert total.shape == (2, 1, 8, 8) and total.dtype == torch.float32
    # each step's map has mean 1 per item
    torch.testing.assert_close(total.mean(dim=(1, 2, 3)), torch.full((2,), 2.0), atol=1e-3, rtol=0)
    expected = torch.linalg.vector_norm(cond - image_only, dim=1, keepdim=True)
    expected = expected / expected.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(total, 2 * expected, atol=2e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="shape"):
        relevance_map.add(cond[:1], image_only[:1], 0.5)
    with pytest.raises(ValueError, match="shape"):
        relevance_map.add(cond, image_only[:1], 0.5)


def test_total_leaves_out_each_positions_largest_step():
    # from TRIM_FROM steps on, a position that jumps in one step only does not count that step
    image_only = torch.zeros((1, 4, 4, 4))
    steady = torch.zeros((1, 4, 4, 4))
    steady[:, 0] = 1.0  # |c - i| = 1 everywhere: each step's map is all ones
    relevance_map = RelevanceMap()
    for step in range(relevance.TRIM_FROM):
        cond = steady.clone()
        if step == 1:
            cond[:, 0, 2, 3] = 17.0  # one jump; this step's mean becomes 2
        relevance_map.add(cond, image_only, 1.0)
        if 1 <= step < relevance.TRIM_FROM - 1:  # not trimmed yet: the jump counts
            assert float(relevance_map.total()[0, 0, 2, 3]) > float(relevance_map.total()[0, 0, 0, 0])
    total = relevance_map.total()
    # the jump's step (values 0.5 and 8.5) is left out at the jump; elsewhere one step of 1 is
    assert float(total[0, 0, 2, 3]) == relevance.TRIM_FROM - 1
    assert float(total[0, 0, 0, 0]) == relevance.TRIM_FROM - 2 + 0.5


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_a_few_steps_are_enough(steps):
    truth = rectangle(CENTRE)
    found = found_at_defaults(truth.float(), steps=steps, seed=23)
    precision, recall = region_stats(found.mask, truth)
    print(f"rectangle from {steps} steps: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9


# calls that read a tensor back to the host: builtins on a tensor, and tensor methods
SYNCING_BUILTINS = {"bool", "float", "int"}
SYNCING_METHODS = {"item", "tolist", "cpu", "numpy", "nonzero", "is_nonzero"}


def _calls(function) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in SYNCING_METHODS:
                names.add("." + node.func.attr)
            elif isinstance(node.func, ast.Name) and node.func.id in SYNCING_BUILTINS:
                names.add(node.func.id)
    return names


@pytest.mark.parametrize("function", [RelevanceMap.add, relevance.normalised_relevance, relevance._box_blur,
                                      relevance._soft_edge, find_region])
def test_the_device_path_reads_nothing_back(function):
    # no .item(), .cpu(), bool(tensor) ...: each would wait for the GPU (STYLE.md, GPU hot path).
    # int()/round() in _quantiles take Python floats only; _quantiles is checked on CUDA below.
    assert not _calls(function), _calls(function)


def test_add_branches_only_on_shapes():
    tree = ast.parse(textwrap.dedent(inspect.getsource(RelevanceMap.add)))
    tests = [ast.unparse(node.test) for node in ast.walk(tree) if isinstance(node, ast.If)]
    assert tests and all("shape" in test or "is None" in test or "dim()" in test for test in tests), tests


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_on_cuda():
    truth = rectangle(CENTRE).float()
    steps = [(c.cuda(), i.cuda(), torch.tensor(s, device="cuda")) for c, i, s in predictions(truth, seed=17)]
    relevance_map = RelevanceMap()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for cond, image_only, sigma in steps:
            relevance_map.add(cond, image_only, sigma)
        found = find_region(relevance_map.total())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    precision, recall = region_stats(found.mask.cpu(), truth.bool())
    assert precision >= 0.9 and recall >= 0.9


# -- the window and the statistics ---------------------------------------------------------------------
@pytest.mark.parametrize("total_steps, until, expected", [
    (20, DEFAULT_UNTIL, 8), (10, 0.3, 3), (10, 0.35, 4), (20, 0.5, 10), (3, 0.4, 2),
    (10, 0.0, 1), (10, -1.0, 1), (10, 1.0, 9), (10, 5.0, 9), (2, 0.9, 1), (2, 0.01, 1), (1, 0.4, 1), (1, 1.0, 1),
])
def test_steps_to_gather(total_steps, until, expected):
    assert steps_to_gather(total_steps, until) == expected


def test_steps_to_gather_refuses_nonsense():
    with pytest.raises(ValueError, match="total_steps"):
        steps_to_gather(0, 0.4)
    with pytest.raises(ValueError, match="NaN"):
        steps_to_gather(10, float("nan"))


def test_region_stats():
    truth = rectangle((0, 0, 4, 4), size=8)
    region = torch.zeros((1, 1, 8, 8))
    region[..., :4, :2] = 1.0  # half the truth
    region[..., 6:, 6:] = 0.6  # 4 wrong pixels
    region[..., 2:4, 2:4] = 0.4  # below `at`
    assert region_stats(region, truth) == (8 / 12, 8 / 16)
    assert region_stats(region, truth, at=0.3) == (12 / 16, 12 / 16)
    assert region_stats(torch.zeros((1, 1, 8, 8)), truth) == (1.0, 0.0)
    assert region_stats(region, torch.zeros((1, 1, 8, 8), dtype=torch.bool))[1] == 1.0
    assert region_stats(region.expand(2, 1, 8, 8), truth) == (8 / 12, 8 / 16)


def test_defaults_are_documented_values():
    assert 0.3 <= DEFAULT_UNTIL <= 0.5
    assert 0.0 < DEFAULT_THRESHOLD < 1.0 and DEFAULT_SMOOTH >= 1 and DEFAULT_GROW >= 0 and DEFAULT_EDGE >= 1
