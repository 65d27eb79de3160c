"""Noise schedules as modules t -> gamma(t), and the variance-preserving math built on them.

Notation: t in [0, 1], gamma(t) = -log SNR(t), increasing in t; alpha_t^2 = sigmoid(-gamma),
sigma_t^2 = sigmoid(gamma); z_t = alpha_t x + sigma_t eps. Every family and sampler reads noise
levels only through a schedule, so the posterior and time-grid helpers below are the single copy
of that math in the library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .errors import TrilemmaError

__all__ = [
    "Schedule",
    "LinearBeta",
    "Cosine",
    "VPSDE",
    "DiscreteSchedule",
    "VPSDEGrid",
    "LinearGamma",
    "LearnedGamma",
    "ScheduleConfig",
    "build_schedule",
    "alpha_sigma",
    "alpha_sigma_of",
    "posterior",
    "transition",
    "time_grid",
    "SPACINGS",
]


def hi_dtype(device) -> torch.dtype:
    """float64 for schedule math, float32 on MPS (which has no float64)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def hi_precision(t: torch.Tensor, device=None) -> torch.Tensor:
    """t in float64 for schedule math (MPS has no float64: float32 there), moved to `device` if given
    (the dtype is chosen for the target device before the move)."""
    device = t.device if device is None else torch.device(device)
    return t.to(dtype=hi_dtype(device)).to(device)


class Schedule(nn.Module):
    """A VP noise schedule t -> gamma(t) = -log SNR(t) (Kingma et al. 2021, eq. 2-3)."""

    #: number of discrete training steps, or None for a continuous-time schedule
    num_timesteps: int | None = None

    def gamma(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, t: torch.Tensor, derivative: bool = False, shape_grad=None):
        """gamma(t); with `derivative`, the pair (gamma(t), gamma'(t)), gamma' by autograd with a graph
        (VDM's continuous-time loss needs it inside the loss). `shape_grad` is for schedules with a learned shape
        (`LearnedGamma`); fixed schedules ignore it."""
        if not derivative:
            return self.gamma(t)
        return gamma_and_derivative(self.gamma, t)

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The value a diffusers network is called with at time t: the index t*T - 1 for a discrete
        schedule (diffusers' timestep k holds alphabar_{k+1}), else 1000 t."""
        if self.num_timesteps is not None:
            return t * self.num_timesteps - 1
        return t * 1000.0

    def sample_t(self, u: torch.Tensor) -> torch.Tensor:
        """Training times from uniform draws u in [0, 1): the grid {1/T, ..., 1} for discrete
        schedules (Ho et al. 2020, Alg. 1), (0, 1] for continuous ones (t = 0 has sigma = 0)."""
        if self.num_timesteps is not None:
            return ((u * self.num_timesteps).floor().clamp(max=self.num_timesteps - 1) + 1) / self.num_timesteps
        return 1.0 - u


def gamma_and_derivative(fn, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(t), d fn / dt) for per-sample times t (B,): the derivative by autograd, kept in the graph
    (create_graph) so a loss weighted by it trains the parameters of fn."""
    t = t.detach().requires_grad_(True)
    with torch.enable_grad():
        g = fn(t)
        (dg,) = torch.autograd.grad(g.sum(), t, create_graph=True)
    return g, dg


def alpha_sigma(schedule: Schedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t = sqrt(sigmoid(-gamma)), sigma_t = sqrt(sigmoid(gamma)) (VDM eq. 3)."""
    return alpha_sigma_of(schedule(t))


def alpha_sigma_of(gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) from log-SNR values gamma already computed (differentiable in gamma)."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def transition(schedule: Schedule, t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z_t | z_s) = N(alpha_{t|s} z_s, sigma_{t|s}^2) for s < t (VDM eq. 5-6, appendix A):
    alpha_{t|s}^2 = alpha_t^2 / alpha_s^2 and sigma_{t|s}^2 = -expm1(softplus(gamma_s) - softplus(gamma_t)).
    Computed in float64; returns (alpha_{t|s}, sigma_{t|s})."""
    gt = schedule(torch.as_tensor(t, dtype=torch.float64))
    gs = schedule(torch.as_tensor(s, dtype=torch.float64))
    d = torch.nn.functional.softplus(gs) - torch.nn.functional.softplus(gt)  # log(alpha_t^2 / alpha_s^2)
    return torch.exp(0.5 * d), torch.sqrt(-torch.expm1(d))


def posterior(schedule: Schedule, t: torch.Tensor, s: torch.Tensor):
    """q(z_s | z_t, x) for s < t: mean = c_z z_t + c_x x, variance var (DDPM eq. 7; VDM appendix A).

    With gamma: sigma_{t|s}^2 / sigma_t^2 = -expm1(gamma_s - gamma_t), which stays accurate where
    the two noise levels are close. Computed in float64; returns (c_z, c_x, var).
    """
    gt = schedule(torch.as_tensor(t, dtype=torch.float64))
    gs = schedule(torch.as_tensor(s, dtype=torch.float64))
    a_t, a_s = torch.sigmoid(-gt).sqrt(), torch.sigmoid(-gs).sqrt()
    s2_t, s2_s = torch.sigmoid(gt), torch.sigmoid(gs)
    ratio = -torch.expm1(gs - gt)  # sigma_{t|s}^2 / sigma_t^2 = 1 - SNR(t)/SNR(s)
    c_z = (a_t / a_s) * s2_s / s2_t
    c_x = a_s * ratio
    var = ratio * s2_s
    return c_z, c_x, var


class DiscreteSchedule(Schedule):
    """A schedule given by its alphabar table on the training grid t_i = i / T, i = 0..T (alphabar_0 = 1,
    gamma = -inf at t = 0). Between grid points log alphabar is interpolated linearly in t."""

    def __init__(self, alphabar: torch.Tensor):
        super().__init__()
        self.num_timesteps = len(alphabar)
        alphabar = alphabar.to(torch.float64)
        # log alphabar at t_i = i / T, i = 0..T
        self.register_buffer("log_alphabar", torch.cat([alphabar.new_zeros(1), alphabar.log()]), persistent=False)

    def betas(self) -> torch.Tensor:
        """beta_i = 1 - alphabar_i / alphabar_{i-1}, i = 1..T (float64)."""
        return -torch.expm1(self.log_alphabar[1:] - self.log_alphabar[:-1])

    def gamma(self, t):
        t = torch.as_tensor(t)
        u = hi_precision(t).clamp(0, 1) * self.num_timesteps
        lo = u.floor().clamp(max=self.num_timesteps - 1)
        frac = u - lo
        lo = lo.long()
        table = self.log_alphabar.to(device=u.device, dtype=u.dtype)
        log_ab = table[lo] * (1 - frac) + table[lo + 1] * frac
        g = torch.log(torch.expm1(-log_ab))  # log((1 - ab) / ab)
        return g.to(t.dtype if t.is_floating_point() else torch.float32)


class LinearBeta(DiscreteSchedule):
    """DDPM's linear betas (Ho et al. 2020, sec. 4): beta_i from beta_start to beta_end, i = 1..T.

    The alphabar table is computed exactly as diffusers computes it (float32 linspace and cumprod),
    so our samplers and diffusers' schedulers see the same noise levels.
    """

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float32)
        super().__init__(torch.cumprod(1.0 - betas, dim=0))


def vp_sde_neg_log_alphabar(u: torch.Tensor, beta_min: float, beta_max: float) -> torch.Tensor:
    """-log alphabar(u) = u^2 (b_max - b_min) / 2 + u b_min: the VP-SDE's integrated beta (Song et al. 2021)."""
    return 0.5 * (beta_max - beta_min) * u**2 + beta_min * u


class VPSDEGrid(DiscreteSchedule):
    """DDGAN's schedule (Xiao et al. 2022, appendix): the VP-SDE on T steps at u_k = eps + k/T (1 - eps),
    k = 0..T, measured from u_0, so alphabar_k = alphabar(u_k) / alphabar(u_0) and x_0 is the data.
    Time t = k / T is step k; the network sees the index k - 1 (`Schedule.timestep`)."""

    def __init__(self, num_timesteps: int = 4, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3):
        u = eps + torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps * (1 - eps)
        nla = vp_sde_neg_log_alphabar(u, beta_min, beta_max)
        super().__init__(torch.exp(nla[0] - nla[1:]))
        self.beta_min, self.beta_max, self.eps = beta_min, beta_max, eps


class Cosine(Schedule):
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17), continuous in t, with gamma capped at
    gamma_max (their beta <= 0.999 clip keeps alphabar_T > 0 the same way)."""

    def __init__(self, s: float = 0.008, gamma_max: float = 20.0):
        super().__init__()
        self.s, self.gamma_max = s, gamma_max

    def gamma(self, t):
        t = torch.as_tensor(t)
        u = hi_precision(t)
        f = lambda x: torch.cos((x + self.s) / (1 + self.s) * math.pi / 2)  # noqa: E731
        alphabar = (f(u) / f(torch.zeros_like(u))) ** 2
        g = torch.log1p(-alphabar) - torch.log(alphabar)
        return g.clamp(max=self.gamma_max).to(t.dtype if t.is_floating_point() else torch.float32)


class VPSDE(Schedule):
    """VP-SDE (Song et al. 2021; DDGAN): alphabar(t) = exp(-t^2 (b_max - b_min)/2 - t b_min)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        super().__init__()
        self.beta_min, self.beta_max = beta_min, beta_max

    def gamma(self, t):
        t = torch.as_tensor(t)
        g = torch.log(torch.expm1(vp_sde_neg_log_alphabar(hi_precision(t), self.beta_min, self.beta_max)))
        return g.to(t.dtype if t.is_floating_point() else torch.float32)


class LinearGamma(Schedule):
    """VDM's fixed baseline: gamma(t) = gamma_min + (gamma_max - gamma_min) t (Kingma et al. 2021)."""

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0):
        super().__init__()
        self.gamma_min, self.gamma_max = gamma_min, gamma_max

    def gamma(self, t):
        t = torch.as_tensor(t)
        g = self.gamma_min + (self.gamma_max - self.gamma_min) * hi_precision(t)
        return g.to(t.dtype if t.is_floating_point() else torch.float32)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `box.value` (B,), read at backward time,
    so a weight known only after the loss is computed (the per-sample loss itself) can scale it."""

    @staticmethod
    def forward(ctx, x, box):
        ctx.box = box
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.box.value.to(grad.dtype), None


class GradScale:
    """A per-sample gradient weight filled in after the forward pass (see `LearnedGamma.forward`)."""

    def __init__(self):
        self.value: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _ScaleGrad.apply(x, self)


class LearnedGamma(Schedule):
    """VDM's learned schedule (Kingma et al. 2021): gamma(t) = gamma_0 + (gamma_1 -
    gamma_0) * (h(t) - h(0)) / (h(1) - h(0)), with h a monotone MLP (non-negative weights) and the endpoints
    gamma_0 < gamma_1 learned. Written as gamma_0 (1 - s) + gamma_1 s, s the normalised shape that is
    exactly 0 at t = 0 and 1 at t = 1 (see `shape`), so gamma(0) = gamma_0 and gamma(1) = gamma_1 exactly.

    h(t) = l1(t) + l3(phi(l2(2 t - 1))) / hidden with phi(u) = 2 sigmoid(u) - 1: l1 linear (1 -> 1), l2 (1 -> hidden),
    l3 (hidden -> 1), every weight passed through abs so h is non-decreasing (the official noise network's
    layout). gamma_1 = gamma_0 + softplus(width) keeps the endpoints ordered whatever the optimiser does.
    """

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0, hidden: int = 1024):
        super().__init__()
        if not gamma_max > gamma_min:
            raise TrilemmaError(f"schedule: learned needs gamma_max > gamma_min, got {gamma_min} and {gamma_max}")
        self.gamma_0 = nn.Parameter(torch.tensor(float(gamma_min)))
        width = gamma_max - gamma_min  # softplus^{-1}(width), stable for large widths
        self.width = nn.Parameter(torch.tensor(width + math.log(-math.expm1(-width))))
        # l1 starts at the linear schedule's slope, so the small sigmoid part only bends it a little at first
        self.l1_w, self.l1_b = nn.Parameter(torch.tensor([width])), nn.Parameter(torch.zeros(1))
        self.l2_w, self.l2_b = nn.Parameter(torch.randn(hidden)), nn.Parameter(torch.zeros(hidden))
        self.l3_w = nn.Parameter(torch.randn(hidden))
        self.hidden = hidden

    def endpoints(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma_0, gamma_1) as float64 tensors (float32 on MPS) that carry gradients."""
        dt = hi_dtype(self.gamma_0.device)
        g0 = self.gamma_0.to(dt)
        return g0, g0 + nn.functional.softplus(self.width.to(dt))

    def _h(self, t: torch.Tensor) -> torch.Tensor:
        """The unnormalised monotone network, t (B,) float64 -> (B,), computed in t's dtype."""
        w = lambda p: p.to(t.dtype)  # noqa: E731
        h1 = w(self.l1_w).abs() * t + w(self.l1_b)
        u = (2 * t - 1)[:, None] * w(self.l2_w).abs() + w(self.l2_b)  # (B, hidden)
        return h1 + (2 * torch.sigmoid(u) - 1) @ w(self.l3_w).abs() / self.hidden

    def shape(self, t: torch.Tensor) -> torch.Tensor:
        """The normalised shape s(t) = (h(t) - h(0)) / (h(1) - h(0)): 0 at t = 0, 1 at t = 1, non-decreasing.

        h(0) and h(1) are evaluated in their own batch, and a matmul's rounding depends on the batch shape, so
        the quotient at t = 0 or 1 can miss 0 or 1 by an ulp; the ends are therefore set to exactly 0 and 1 by
        construction (s - s.detach() + end: the value is exact, the gradients those of s)."""
        ends = self._h(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        s = (self._h(t.reshape(-1)).reshape(t.shape) - ends[0]) / (ends[1] - ends[0])
        zero = s - s.detach()  # exactly 0, carrying the gradient of s
        return torch.where(t == 0, zero, torch.where(t == 1, zero + 1, s))

    def gamma(self, t):
        t = torch.as_tensor(t, device=self.gamma_0.device)
        s = self.shape(hi_precision(t))  # float64, float32 on MPS
        g0, g1 = self.endpoints()
        g = g0 * (1 - s) + g1 * s
        return g.to(t.dtype if t.is_floating_point() else torch.float32)

    def forward(self, t: torch.Tensor, derivative: bool = False, shape_grad: GradScale | None = None):
        """gamma(t), or (gamma(t), gamma'(t)) with `derivative`. With a `shape_grad` the gradient that reaches
        the shape network through s(t) and s'(t) is multiplied per sample by shape_grad.value, and the
        endpoints' is not: VDM's variance minimisation, where weight 2 L_i turns the shape's
        gradient of the loss into that of E[L^2]."""
        if not derivative:
            return self.gamma(t)
        t = torch.as_tensor(t, device=self.gamma_0.device)
        s, ds = gamma_and_derivative(self.shape, hi_precision(t))
        if shape_grad is not None:
            s, ds = shape_grad(s), shape_grad(ds)
        g0, g1 = self.endpoints()
        dt = t.dtype if t.is_floating_point() else torch.float32
        return (g0 * (1 - s) + g1 * s).to(dt), ((g1 - g0) * ds).to(dt)


@dataclass
class ScheduleConfig:
    name: str = "linear-beta"  # linear-beta | cosine | vp-sde | vp-sde-grid | linear-gamma | learned
    num_timesteps: int = 1000  # linear-beta, vp-sde-grid: T (the grid t_i = i / T)
    beta_start: float = 1e-4  # linear-beta
    beta_end: float = 0.02  # linear-beta
    beta_min: float = 0.1  # vp-sde
    beta_max: float = 20.0  # vp-sde
    grid_eps: float = 1e-3  # vp-sde-grid: first SDE time of the grid (u_0)
    gamma_min: float = -13.3  # linear-gamma; learned: initial gamma_0
    gamma_max: float = 5.0  # linear-gamma; learned: initial gamma_1
    hidden: int = 1024  # learned: width of the monotone network


SCHEDULES = ("linear-beta", "cosine", "vp-sde", "vp-sde-grid", "linear-gamma", "learned")


def build_schedule(cfg: ScheduleConfig) -> Schedule:
    """Make the schedule module a config names."""
    if cfg.name == "linear-beta":
        return LinearBeta(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
    if cfg.name == "cosine":
        return Cosine()
    if cfg.name == "vp-sde":
        return VPSDE(cfg.beta_min, cfg.beta_max)
    if cfg.name == "vp-sde-grid":
        return VPSDEGrid(cfg.num_timesteps, cfg.beta_min, cfg.beta_max, cfg.grid_eps)
    if cfg.name == "linear-gamma":
        return LinearGamma(cfg.gamma_min, cfg.gamma_max)
    if cfg.name == "learned":
        if cfg.hidden < 1:
            raise TrilemmaError(f"schedule.hidden must be >= 1, got {cfg.hidden}")
        return LearnedGamma(cfg.gamma_min, cfg.gamma_max, cfg.hidden)
    raise TrilemmaError(f"schedule.name: unknown schedule {cfg.name!r}; choose one of {', '.join(SCHEDULES)}")


SPACINGS = ("leading", "trailing", "linspace", "quadratic", "logsnr")


def _invert_gamma(schedule: Schedule, g: torch.Tensor, iters: int = 80) -> torch.Tensor:
    """t with gamma(t) = g, by bisection (gamma is increasing for every schedule)."""
    lo, hi = torch.zeros_like(g), torch.ones_like(g)
    for _ in range(iters):
        mid = (lo + hi) / 2
        above = schedule(mid).to(g.device) > g  # a learned schedule answers on its own device
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return (lo + hi) / 2


def time_grid(schedule: Schedule, steps: int, spacing: str = "leading") -> torch.Tensor:
    """Sampling times t_N > ... > t_1 > t_0 = 0 (float64, length steps + 1).

    For discrete schedules the times sit on the training grid; "leading", "trailing" and
    "linspace" follow diffusers' timestep_spacing (Lin et al. 2023, table 2), "quadratic" is
    DDIM's (Song et al. 2021, appendix D.2), "logsnr" is uniform in log SNR (Lu et al. 2022).
    For continuous schedules "leading", "trailing" and "linspace" are all uniform in t on (0, 1].
    """
    if steps < 1:
        raise TrilemmaError(f"steps must be >= 1, got {steps}")
    if spacing not in SPACINGS:
        raise TrilemmaError(f"unknown time spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    T = schedule.num_timesteps
    if T is not None and steps > T:
        raise TrilemmaError(f"steps={steps} exceeds the schedule's {T} training steps")
    if spacing == "logsnr":
        with torch.no_grad():
            g_hi = schedule(torch.tensor(1.0, dtype=torch.float64)).double()
            g_lo = schedule(torch.tensor(1.0 / (T or 1000), dtype=torch.float64)).double()
            t = _invert_gamma(schedule, torch.linspace(g_hi.item(), g_lo.item(), steps, dtype=torch.float64))
        if T is not None:
            t = (_distinct_steps((t * T).round().clamp(1, T) - 1, T) + 1) / T
    elif T is None:
        u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
        t = u**2 if spacing == "quadratic" else u
    else:
        if spacing == "leading":  # DDIM paper / diffusers default: 0, T/N, 2T/N ... (0-based)
            k = torch.arange(steps, dtype=torch.float64).flip(0) * (T // steps)
        elif spacing == "trailing":
            k = torch.round(torch.arange(T, 0, -T / steps, dtype=torch.float64)) - 1
        elif spacing == "linspace":  # DPM-Solver's default
            k = torch.linspace(0, T - 1, steps + 1, dtype=torch.float64).round().flip(0)[:-1]
        else:  # quadratic
            k = (torch.linspace(0, math.sqrt(T * 0.8), steps, dtype=torch.float64) ** 2).floor().flip(0)
        if spacing == "quadratic":
            k = _distinct_steps(k, T)
        t = (k + 1) / T
    if T is not None:  # diffusers' linspace can repeat a time when steps is close to T; it drops the repeat
        t = torch.unique_consecutive(t)
    return torch.cat([t, t.new_zeros(1)])


def _distinct_steps(k: torch.Tensor, T: int) -> torch.Tensor:
    """Decreasing training-grid indices T - 1 >= k_1 >= ... >= k_N >= 0 made strictly decreasing, so a grid asked
    for N <= T steps has N: where snapping to the grid repeated an index (the quadratic and log-SNR grids crowd
    the low noise levels), each repeat moves up to the next free index, from the low end up; if that passes
    T - 1, the top ones move back down."""
    out = k.flip(0).tolist()  # increasing
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + 1)
    out[-1] = min(out[-1], T - 1)
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], out[i + 1] - 1)
    return torch.tensor(out[::-1], dtype=k.dtype)
