"""trilemma: diffusion models that sample fast without giving up quality or diversity.

Model families on one core (the registry: `trilemma.families.FAMILIES`; any of them on an autoencoder's
latents is latent diffusion), every one measured on speed, quality and diversity. The vocabulary: schedules
t -> gamma(t) (`trilemma.schedules`, whose docstring gives the notation), one denoiser contract
denoiser(z_t, t) -> x0_hat (`trilemma.denoiser`), samplers as plain functions (`trilemma.samplers`).
"""

from .denoiser import CountNFE, PredictionDenoiser
from .errors import TrilemmaError
from .samplers import (
    SampleNoise,
    ddim_interpolate,
    generate,
    initial_noise,
    sample_ancestral,
    sample_consistency,
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
    "sample_consistency",
    "sample_ddim",
    "sample_ddim_inverse",
    "sample_dpmpp_2m",
    "sample_langevin",
    "slerp",
    "time_grid",
]
