"""Golden tests: our sampler loops against diffusers' scheduler loops on the same UNet, the same
initial noise, the same timesteps and the same per-step noise (acceptance item 2 of issue 2)."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from trilemma.denoiser import PredictionDenoiser
from trilemma.networks import UNet
from trilemma.samplers import sample_ancestral, sample_ddim, sample_dpmpp_2m
from trilemma.schedules import LinearBeta, time_grid

TOL = 1e-5
PRED = {"eps": "epsilon", "v": "v_prediction"}


def _times_from(timesteps, T=1000):
    """diffusers' integer timestep k is our t = (k + 1) / T; the loop ends at t = 0."""
    t = (timesteps.to(torch.float64) + 1) / T
    return torch.cat([t, t.new_zeros(1)])


def _diffusers_loop(net, scheduler, x, generator=None, **step_kwargs):
    for k in scheduler.timesteps:
        with torch.no_grad():
            out = net(x, k).sample
        x = scheduler.step(out, k, x, generator=generator, **step_kwargs).prev_sample
    return x


class GaussianPlusUNet(torch.nn.Module):
    """The UNet as a residual on the exact predictor for N(0, I) data (eps_hat = sigma_k z, v_hat = 0),
    so an untrained UNet still gives samples of unit scale: in float32 a 1e-5 comparison is only
    meaningful when the samples do not blow up to hundreds, as an untrained eps-UNet's do."""

    def __init__(self, unet, prediction):
        super().__init__()
        self.unet, self.prediction = unet, prediction
        self.sigma = (1 - LinearBeta(1000).log_alphabar[1:].exp()).sqrt().float()  # sigma at diffusers' k

    def forward(self, x, k):
        k = torch.as_tensor(k).flatten()[0].round().long()
        base = self.sigma[k] * x if self.prediction == "eps" else torch.zeros_like(x)
        return SimpleNamespace(sample=base + 0.3 * self.unet(x, k).sample)


def _ours(net, prediction):
    return PredictionDenoiser(UNet(net), LinearBeta(1000), prediction)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(tiny_unet, prediction, eta):
    tiny_unet = GaussianPlusUNet(tiny_unet, prediction)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                          prediction_type=PRED[prediction], set_alpha_to_one=True)
    sched.set_timesteps(20)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = _diffusers_loop(tiny_unet, sched, x_T.clone(), generator=torch.Generator().manual_seed(7), eta=eta)
    ts = _times_from(sched.timesteps)
    den = _ours(tiny_unet, prediction)
    ours = sample_ddim(den, den.schedule, x_T.clone(), ts, eta=eta, generator=torch.Generator().manual_seed(7))
    assert torch.equal(ts, time_grid(den.schedule, 20, "leading")), "our leading grid is diffusers' default"
    err = (ours - ref).abs().max().item()
    assert err < TOL, f"DDIM(eta={eta}, {prediction}) differs from diffusers by {err:.2e}"
    assert 0.5 < ref.abs().max() < 10  # unit-scale samples, not zeros and not a blow-up


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddpm_ancestral_matches_diffusers(tiny_unet, prediction):
    tiny_unet = GaussianPlusUNet(tiny_unet, prediction)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                          prediction_type=PRED[prediction], variance_type="fixed_small")
    sched.set_timesteps(25)  # skipped steps: posterior between non-adjacent grid times
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    ref = _diffusers_loop(tiny_unet, sched, x_T.clone(), generator=torch.Generator().manual_seed(9))
    den = _ours(tiny_unet, prediction)
    ours = sample_ancestral(den, den.schedule, x_T.clone(), _times_from(sched.timesteps),
                            generator=torch.Generator().manual_seed(9))
    err = (ours - ref).abs().max().item()
    assert err < TOL, f"DDPM ancestral ({prediction}) differs from diffusers by {err:.2e}"


def test_ddpm_ancestral_full_1000_steps_matches_diffusers():
    """The full 1000-step chain, on a cheap closed-form network (1000 UNet calls would take a while).

    diffusers forms beta_t = 1 - alphabar_t / alphabar_{t-1} in float32, which is off by up to
    ~1e-3 relative near t = 0, and float32 rounding alone random-walks ~1e-5 over 1000 steps. So
    this test runs both loops in float64 (diffusers' own step() with its float32 alphabar table
    upcast, our sampler on float64 samples): the algorithms must then agree far below 1e-5.
    """
    sigma = (1 - LinearBeta(1000).log_alphabar[1:].exp()).sqrt()
    net = lambda x, k: sigma[int(k)].to(x.dtype) * x + 0.3 * torch.tanh(x + k / 1000)  # noqa: E731
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    sched.set_timesteps(1000)
    sched.alphas_cumprod, sched.one = sched.alphas_cumprod.double(), sched.one.double()
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(4)
    x = x_T.clone().double()
    for k in sched.timesteps:
        x = sched.step(net(x, k.double()), k, x, generator=gen).prev_sample

    class Net(torch.nn.Module):
        def forward(self, z, timestep):
            return net(z, timestep[0])

    den = PredictionDenoiser(Net(), LinearBeta(1000), "eps")
    ts = time_grid(den.schedule, 1000, "leading")
    ours = sample_ancestral(den, den.schedule, x_T.clone().double(), ts, generator=torch.Generator().manual_seed(4))
    err = (ours - x).abs().max().item()
    assert err < 1e-9, f"1000-step ancestral differs from diffusers by {err:.2e}"


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("steps", [6, 20])
def test_dpmpp_2m_matches_diffusers(tiny_unet, prediction, steps):
    tiny_unet = GaussianPlusUNet(tiny_unet, prediction)
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                        algorithm_type="dpmsolver++", solver_order=2,
                                        prediction_type=PRED[prediction])
    sched.set_timesteps(steps)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    ref = _diffusers_loop(tiny_unet, sched, x_T.clone())
    den = _ours(tiny_unet, prediction)
    ts = _times_from(sched.timesteps)
    assert torch.equal(ts, time_grid(den.schedule, steps, "linspace")), "our linspace grid is DPM-Solver's default"
    ours = sample_dpmpp_2m(den, den.schedule, x_T.clone(), ts)
    err = (ours - ref).abs().max().item()
    assert err < TOL, f"DPM-Solver++(2M) ({prediction}, {steps} steps) differs from diffusers by {err:.2e}"


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_clip_x0_matches_diffusers_clip_sample(tiny_unet, prediction, eta):
    """DDIM's clip_x0 is diffusers' clip_sample: x0_hat clipped to [-1, 1] in the x0 term, eps left as predicted."""
    tiny_unet = GaussianPlusUNet(tiny_unet, prediction)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, clip_sample_range=1.0,
                          prediction_type=PRED[prediction], set_alpha_to_one=True)
    sched.set_timesteps(20)
    x_T = 1.5 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))  # x0_hat often beyond [-1, 1]
    ref = _diffusers_loop(tiny_unet, sched, x_T.clone(), generator=torch.Generator().manual_seed(8), eta=eta)
    den = _ours(tiny_unet, prediction)
    ts = _times_from(sched.timesteps)
    clipped = sample_ddim(den, den.schedule, x_T.clone(), ts, eta=eta, clip_x0=True,
                          generator=torch.Generator().manual_seed(8))
    plain = sample_ddim(den, den.schedule, x_T.clone(), ts, eta=eta, generator=torch.Generator().manual_seed(8))
    err = (clipped - ref).abs().max().item()
    assert err < TOL, f"DDIM(eta={eta}, {prediction}, clip_x0) differs from diffusers' clip_sample by {err:.2e}"
    assert (clipped - plain).abs().max() > 100 * TOL, "the clip changed nothing: x0_hat never left [-1, 1]"
