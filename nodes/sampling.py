"""Noise for batches: "per item" (as core KSampler) or "same for all" (every item gets item 0's
noise, at the start and at every step, so each item equals its single edit with that seed).

Stochastic samplers draw fresh noise at each step from a noise sampler they build from the batch
(comfy/k_diffusion/sampling.py). For "same for all" the pack builds the noise sampler a batch of
one would get and repeats its draws over the batch. Samplers not listed here (a newer ComfyUI's)
are run one item at a time instead, which is exact by construction.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import comfy.k_diffusion.sampling as k_sampling
import comfy.sample
import comfy.samplers
import torch

NOISE_MODES = ("per item", "same for all")

# How each host sampler makes its step noise when it is given no noise sampler (read from
# comfy/k_diffusion/sampling.py of ComfyUI 0.3.75, 0.30.0 and the newest sources; checked by
# tests/test_batches.py on the host under test).
DEFAULT_NOISE = {
    "euler_ancestral", "euler_ancestral_RF", "euler_ancestral_cfg_pp", "dpm_2_ancestral", "dpm_2_ancestral_RF",
    "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_RF", "dpmpp_2s_ancestral_cfg_pp", "ddpm", "lcm", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "er_sde", "seeds_2", "seeds_3",
    "exp_heun_2_x0_sde", "sa_solver", "sa_solver_pece",
}
BROWNIAN_CPU = {"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"}
BROWNIAN_GPU = {"dpmpp_sde_gpu", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde_gpu"}
# No step noise at their defaults (churn 0, eta 0): a batch needs nothing shared beyond x_T.
DETERMINISTIC = {
    "euler", "euler_cfg_pp", "heun", "heunpp2", "dpm_2", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "ipndm", "ipndm_v", "deis", "gradient_estimation", "gradient_estimation_cfg_pp", "exp_heun_2_x0", "ddim", "uni_pc",
    "uni_pc_bh2", "cfgpp_ud10_ab",
}


def initial_noise(start: torch.Tensor, seed: int, mode: str, batch_index: list[int] | None = None) -> torch.Tensor:
    """Unit noise for the start latent [B,...]: core's draw per item (honouring a latent's
    batch_index as KSampler does), or item 0's draw repeated."""
    if mode == "same for all" and start.shape[0] > 1:
        single = comfy.sample.prepare_noise(start[:1], seed)
        return single.repeat(start.shape[0], *([1] * (start.ndim - 1)))
    return comfy.sample.prepare_noise(start, seed, batch_index)


def _repeated(sampler: Callable[[Any, Any], torch.Tensor], batch: int) -> Callable[[Any, Any], torch.Tensor]:
    def draw(sigma: Any, sigma_next: Any) -> torch.Tensor:
        single = sampler(sigma, sigma_next)
        return single.repeat(batch, *([1] * (single.ndim - 1)))
    return draw


def _accepts_noise_sampler(name: str) -> bool:
    function = getattr(k_sampling, f"sample_{name}", None)
    return function is not None and "noise_sampler" in inspect.signature(function).parameters


def shared_noise_sampler(name: str, shape: tuple[int, ...], seed: int, sigmas: torch.Tensor, device: Any) -> Any | None:
    """A sampler object whose step noise is, for each of shape[0] items, what a batch of one with
    this seed would draw; None when the pack does not know how this sampler draws noise."""
    if name in DETERMINISTIC:
        return comfy.samplers.sampler_object(name)
    if not _accepts_noise_sampler(name):
        return None
    single = torch.zeros((1, *shape[1:]), dtype=torch.float32, device=device)
    if name in DEFAULT_NOISE:
        base = k_sampling.default_noise_sampler(single, seed=seed)
    elif name in BROWNIAN_CPU or name in BROWNIAN_GPU:
        positive = sigmas[sigmas > 0]
        base = k_sampling.BrownianTreeNoiseSampler(single, positive.min(), sigmas.max(), seed=seed, cpu=name in BROWNIAN_CPU)
    else:
        return None
    return comfy.samplers.ksampler(name, extra_options={"noise_sampler": _repeated(base, shape[0])})


def sampler_for(name: str, mode: str, shape: tuple[int, ...], seed: int, sigmas: torch.Tensor, device: Any) -> Any | None:
    """The sampler object for a batch of `shape`; None means: run the items one at a time."""
    if mode != "same for all" or shape[0] == 1:
        return comfy.samplers.sampler_object(name)
    return shared_noise_sampler(name, shape, seed, sigmas, device)
