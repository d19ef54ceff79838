"""Control groups and test waves by deterministic hashing.

A customer's group must not depend on the order rows come in, on the machine, or on a
random seed someone forgets to keep: measurement later reads the groups back and must
find exactly who was held out. Each customer id is hashed with the campaign id by
SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number generators"),
a bijective 64-bit mixer whose output passes BigCrush, and the top 53 bits become a
uniform number in [0, 1). The customer is held out when it falls below the control share.
A second hash with another salt picks the test wave from the treatment group, so the two
draws are independent. Everything is vectorised over NumPy arrays.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

Ids = npt.NDArray[np.int64]


def _mix(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def unit_hash(ids: Ids, *, salt: int) -> npt.NDArray[np.float64]:
    """A uniform number in [0, 1) per id, fixed by (id, salt)."""
    with np.errstate(over="ignore"):  # wrapping multiplication is the point
        key = _mix(np.array([salt], dtype=np.uint64) * _GOLDEN + _GOLDEN)
        z = ids.astype(np.uint64) * _GOLDEN + key[0]
        mixed = _mix(z)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(2**53)


def control_mask(ids: Ids, *, campaign_id: int, share: float) -> npt.NDArray[np.bool_]:
    """True for the customers held out as the control group of ``campaign_id``."""
    return unit_hash(ids, salt=2 * campaign_id) < share


def first_wave_mask(ids: Ids, *, campaign_id: int, share: float) -> npt.NDArray[np.bool_]:
    """True for the treatment customers who go out in the test wave."""
    return unit_hash(ids, salt=2 * campaign_id + 1) < share
