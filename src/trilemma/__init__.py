"""trilemma: diffusion models that sample fast without giving up quality or diversity.

Four families on one core (DDPM/DDIM, VDM, DDGAN, latent diffusion), every one measured on speed,
quality and diversity. See DESIGN.md for the vocabulary: schedules t -> gamma(t), one denoiser
contract denoiser(z_t, t) -> x0_hat, samplers as plain functions.
"""

from .denoiser import CountNFE, PredictionDenoiser
from .errors import TrilemmaError
from .samplers import (
    SampleNoise,
    ddim_interpolate,
    generate,
    initial_noise,
    sample_ancestral,
    sample_ddim,
    sample_ddim_inverse,
    sample_dpmpp_2m,
    sample_langevin,
    slerp,
)
from .schedules import VPSDE, Cosine, LearnedGamma, LinearBeta, LinearGamma, alpha_sigma, posterior, time_grid

__version__ = "0.1.0"

__all__ = [
    "CountNFE",
    "Cosine",
    "LearnedGamma",
    "LinearBeta",
    "LinearGamma",
    "PredictionDenoiser",
    "SampleNoise",
    "TrilemmaError",
    "VPSDE",
    "alpha_sigma",
    "ddim_interpolate",
    "generate",
    "initial_noise",
    "posterior",
    "sample_ancestral",
    "sample_ddim",
    "sample_ddim_inverse",
    "sample_dpmpp_2m",
    "sample_langevin",
    "slerp",
    "time_grid",
]
