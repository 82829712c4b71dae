"""HDR pictures seen as SDR by the face networks, and mapped back exactly.

The restorer and upscaler were trained on SDR pictures (BT.709-like gamma, white near 1.0).
A PQ (SMPTE ST 2084) or HLG (ARIB STD-B67) signal handed to them as it is looks dark and flat,
and what comes back does not match the picture around it. So faces are restored in an *SDR
view*: the signal is decoded to display light, reference white (203 cd/m², ITU-R BT.2408) is
put at 1.0, highlights above 0.8 roll off smoothly towards 1.0, and a 2.4 gamma is applied.
Every step is invertible, so :meth:`SdrView.to_signal` maps a restored face back to the
input's own transfer; an unchanged face comes back unchanged (to rounding).

Convention: tensors of any shape, float32, signal values in [0, 1] (full-range RGB); the
view is in [0, 1] as well. The primaries are kept (BT.2020 stays BT.2020): no gamut mapping,
which would not be invertible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["HLG", "PQ", "SdrView", "view_for"]

PQ = 16  # AVColorTransferCharacteristic: SMPTE ST 2084
HLG = 18  # ARIB STD-B67
_WHITE = 203.0  # cd/m² of reference white (BT.2408)
_KNEE = 0.8  # relative to white: below this the view is linear light, above it rolls off
_SOFT = 1.0  # how far the roll-off reaches: invertible in float32 up to ~3000 cd/m²
_GAMMA = 2.4

# ST 2084 constants
_M1, _M2 = 2610 / 16384, 2523 / 4096 * 128
_C1, _C2, _C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
# HLG constants, nominal peak 1000 cd/m² with the BT.2100 system gamma 1.2
_A = 0.17883277
_B = 1 - 4 * _A
_C = 0.5 - _A * math.log(4 * _A)
_HLG_PEAK, _HLG_GAMMA = 1000.0, 1.2


def _pq_to_nits(e: torch.Tensor) -> torch.Tensor:
    p = e.clamp(0, 1) ** (1 / _M2)
    return 10000.0 * (torch.clamp(p - _C1, min=0) / (_C2 - _C3 * p)) ** (1 / _M1)


def _nits_to_pq(nits: torch.Tensor) -> torch.Tensor:
    y = (nits / 10000.0).clamp(0, 1) ** _M1
    return ((_C1 + _C2 * y) / (1 + _C3 * y)) ** _M2


def _hlg_to_nits(e: torch.Tensor) -> torch.Tensor:
    e = e.clamp(0, 1)
    scene = torch.where(e <= 0.5, e * e / 3, (torch.exp((e - _C) / _A) + _B) / 12)
    return _HLG_PEAK * scene**_HLG_GAMMA


def _nits_to_hlg(nits: torch.Tensor) -> torch.Tensor:
    scene = (nits / _HLG_PEAK).clamp(0, 1) ** (1 / _HLG_GAMMA)
    return torch.where(scene <= 1 / 12, torch.sqrt(3 * scene), _A * torch.log((12 * scene - _B).clamp(min=1e-12)) + _C)


def _roll_off(y: torch.Tensor) -> torch.Tensor:
    over = (y - _KNEE).clamp(min=0)
    return torch.where(y <= _KNEE, y, _KNEE + (1 - _KNEE) * (1 - torch.exp(-over / _SOFT)))


def _unroll(v: torch.Tensor) -> torch.Tensor:
    part = ((v - _KNEE) / (1 - _KNEE)).clamp(0, 1 - 1e-6)
    return torch.where(v <= _KNEE, v, _KNEE - _SOFT * torch.log1p(-part))


@dataclass(frozen=True)
class SdrView:
    """The SDR view of one HDR transfer (``PQ`` or ``HLG``)."""

    transfer: int

    def to_view(self, signal: torch.Tensor) -> torch.Tensor:
        nits = _pq_to_nits(signal) if self.transfer == PQ else _hlg_to_nits(signal)
        return _roll_off(nits / _WHITE).clamp(0, 1) ** (1 / _GAMMA)

    def to_signal(self, view: torch.Tensor) -> torch.Tensor:
        nits = _unroll(view.clamp(0, 1) ** _GAMMA) * _WHITE
        return _nits_to_pq(nits) if self.transfer == PQ else _nits_to_hlg(nits)


def view_for(color_trc: int) -> SdrView | None:
    """The SDR view for an HDR transfer characteristic, None for SDR pictures."""
    return SdrView(color_trc) if color_trc in (PQ, HLG) else None
