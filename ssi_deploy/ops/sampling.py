"""SampleMask: sampling masks from logits, and the counter-based hash behind its random draws.

The hash is the contract's random-number generator: PyTorch, the ONNX function body and the
CUDA/CPU kernels (``plugins/include/ssi/math.h``) compute exactly these integer steps, so a
given (seed, layer, n, y, x) draws the same uniform number in every backend:

    mix(h)  = h ^= h >> 16; h *= 0x7feb352d; h ^= h >> 15; h *= 0x846ca68b; h ^= h >> 16  (uint32)
    h       = mix(mix(mix(mix(mix(seed) ^ layer) ^ n) ^ y) ^ x)
    u       = ((h >> 9) + 0.5) * 2**-23         (float32, exact, in [2**-24, 1 - 2**-24])

u is in the open interval (0, 1) by construction, not by luck of rounding: h >> 9 < 2**23 is an
integer, so (h >> 9) + 0.5 < 2**23 needs at most 24 significant bits and is exact in float32,
and the scaling by a power of two is exact. The draws are the 2**23 midpoints of a regular
grid, symmetric about 1/2: 1 - u is another draw, also exact, so log(1 - u) is finite and
L(1 - u) = -L(u) for L = log(u) - log(1 - u). (The former ((h >> 8) + 0.5) / 2**24, semantics version 1,
needs 25 bits: for h >> 8 = 2**24 - 1 the sum rounded to 2**24 and u was exactly 1.0.)

Decisions are then made in float32: stochastic keeps a position where u < sigmoid(logit);
official takes v = sigmoid((logit + log(u) - log(1 - u)) / 0.03) and keeps v where v >= 0.5.
"""

from __future__ import annotations

import torch

from . import contract as C

MASK32 = 0xFFFFFFFF
MIX_MUL1 = 0x7FEB352D
MIX_MUL2 = 0x846CA68B
UNIFORM_SHIFT = 9  # u = ((h >> UNIFORM_SHIFT) + 0.5) * UNIFORM_SCALE: 23 bits of the hash
UNIFORM_SCALE = 2.0 ** -23  # exact in float32


def _mul32(a: torch.Tensor, b: int) -> torch.Tensor:
    # (a * b) mod 2**32 on int64 without overflowing: split b into 16-bit halves.
    lo = a * (b & 0xFFFF)
    hi = ((a * (b >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def mix32(h: torch.Tensor) -> torch.Tensor:
    """One round of the 32-bit integer hash (values held in int64 tensors)."""
    h = h & MASK32
    h = h ^ (h >> 16)
    h = _mul32(h, MIX_MUL1)
    h = h ^ (h >> 15)
    h = _mul32(h, MIX_MUL2)
    return h ^ (h >> 16)


def mix32_int(h: int) -> int:
    """Python-int twin of :func:`mix32` (for constants and tests)."""
    h &= MASK32
    h ^= h >> 16
    h = (h * MIX_MUL1) & MASK32
    h ^= h >> 15
    h = (h * MIX_MUL2) & MASK32
    return h ^ (h >> 16)


def layer_key(seed: int, layer: int) -> int:
    """The part of the hash that depends on the node only: mix(mix(seed) ^ layer)."""
    return mix32_int(mix32_int(seed) ^ (layer & MASK32))


def uniform(shape: tuple[int, int, int], seed: int, layer: int, device=None) -> torch.Tensor:
    """Uniform draws u[n, y, x] in [2**-24, 1 - 2**-24] (inside (0, 1)), float32, for a mask (N, H, W)."""
    n_, h_, w_ = shape
    key = torch.tensor(layer_key(seed, layer), dtype=torch.int64, device=device)
    n = torch.arange(n_, dtype=torch.int64, device=device).view(-1, 1, 1)
    y = torch.arange(h_, dtype=torch.int64, device=device).view(1, -1, 1)
    x = torch.arange(w_, dtype=torch.int64, device=device).view(1, 1, -1)
    h = mix32(mix32(mix32(key ^ n) ^ y) ^ x)
    # h >> 9 < 2**23: the +0.5 and the power-of-two scale are exact in float32 (module docstring).
    return ((h >> UNIFORM_SHIFT).to(torch.float32) + 0.5) * UNIFORM_SCALE


def grid_prior(h: int, w: int, interval: int, device=None) -> torch.Tensor:
    """Boolean [H, W] map of the positions forced to 1.0 (y % g == 0 and x % g == 0)."""
    out = torch.zeros(h, w, dtype=torch.bool, device=device)
    if interval > 0:
        out[::interval, ::interval] = True
    return out


def sample_mask(logits: torch.Tensor, mode: int = C.MODE_THRESHOLD,
                grid_interval: int = C.GRID_PRIOR_INTERVAL, seed: int = 0,
                layer: int = 0) -> torch.Tensor:
    """Mask [N,1,H,W] (dtype of ``logits``) from logits [N,1,H,W]; see the module docstring."""
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"SampleMask expects logits [N,1,H,W], got {tuple(logits.shape)}")
    l32 = logits.to(torch.float32)
    n_, _, h_, w_ = logits.shape
    if mode == C.MODE_THRESHOLD:
        m = (l32 >= 0).to(torch.float32)
    elif mode in (C.MODE_STOCHASTIC, C.MODE_OFFICIAL):
        u = uniform((n_, h_, w_), seed, layer, logits.device).unsqueeze(1)
        if mode == C.MODE_STOCHASTIC:
            m = (u < torch.sigmoid(l32)).to(torch.float32)
        else:
            v = torch.sigmoid((l32 + (torch.log(u) - torch.log(1.0 - u))) / C.OFFICIAL_TEMPERATURE)
            m = torch.where(v >= 0.5, v, torch.zeros_like(v))
    else:
        raise ValueError(f"SampleMask: unknown mode {mode}; expected one of {C.SAMPLING_MODES}")
    if grid_interval > 0:  # m is a new tensor in every mode: set the grid in place
        m[:, :, ::grid_interval, ::grid_interval] = 1.0
    return m.to(logits.dtype)


def decision_margin(logits: torch.Tensor, mode: int = C.MODE_THRESHOLD,
                    grid_interval: int = C.GRID_PRIOR_INTERVAL, seed: int = 0,
                    layer: int = 0) -> torch.Tensor:
    """Signed distance z [N,1,H,W] (float64) of every sampling decision from its threshold.

    A position is kept where z >= 0 (up to float32 rounding at z = 0): threshold z = logit;
    stochastic z = logit - log(u / (1 - u)) (u < sigmoid(logit)); official z = logit +
    log(u / (1 - u)) (soft value >= 0.5). Grid-prior positions get +inf (always kept).
    Validation uses |z| to tell a near-threshold rounding flip from a real difference.
    """
    z = logits.to(torch.float64)
    if mode in (C.MODE_STOCHASTIC, C.MODE_OFFICIAL):
        n_, _, h_, w_ = logits.shape
        u = uniform((n_, h_, w_), seed, layer, logits.device).unsqueeze(1).to(torch.float64)
        log_odds = torch.log(u) - torch.log1p(-u)
        z = z - log_odds if mode == C.MODE_STOCHASTIC else z + log_odds
    if grid_interval > 0:
        h_, w_ = logits.shape[-2:]
        z = torch.where(grid_prior(h_, w_, grid_interval, logits.device),
                        torch.full_like(z, float("inf")), z)
    return z
