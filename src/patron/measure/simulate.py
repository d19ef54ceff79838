"""A simulator of how customers respond to a campaign, whose true effect is known.

This is a simulator, not a measurement: the demo uses it to play the weeks after a
launch, and the tests use it to show that :mod:`patron.measure` recovers the effect it
put in. The behavioural model, per customer ``i`` of the frozen audience:

* without the campaign, ``i`` buys in the attribution window with probability
  ``p_i = clip(p_alive_i * (1 - exp(-rate_i * window / 365)), 0.01, 0.9)``, where
  ``rate_i`` is the customer's expected purchases per year (from the analysis, or the
  base's mean when unknown): a BG/NBD-style customer who is alive buys as a Poisson
  process;
* a treated customer's probability is raised by the relative ``lift``:
  ``q_i = min(1, p_i * (1 + lift))``; the control keeps ``p_i``;
* a buyer spends ``Gamma(shape, mean_i / shape)``, where ``mean_i`` is the customer's
  expected spend per purchase (``shape`` 1.5 gives the heavy right tail of real baskets);
  the campaign does not change how much a buyer spends.

The true effect per treated customer is then exact: ``mean(q_i - p_i)`` more conversions
and ``mean((q_i - p_i) * mean_i)`` more revenue, averaged over the treated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ResponseModel:
    """The simulator's knobs."""

    lift: float = 0.30
    window_days: int = 14
    shape: float = 1.5
    seed: int = 7


@dataclass(frozen=True)
class Simulated:
    """Who bought and for how much, and the effect the simulator put in."""

    bought: npt.NDArray[np.bool_]
    spend: Floats
    true_incremental_conversion: float
    """Per treated customer."""
    true_incremental_revenue_per_customer: float


def simulate(
    treated: npt.NDArray[np.bool_],
    *,
    p_alive: Floats,
    yearly_purchases: Floats,
    mean_spend: Floats,
    model: ResponseModel,
) -> Simulated:
    """Draw the response of every customer (treated or control) once."""
    rng = np.random.default_rng(model.seed)
    base = p_alive * (1.0 - np.exp(-yearly_purchases * model.window_days / 365.0))
    base = np.clip(base, 0.01, 0.9)
    boosted = np.minimum(1.0, base * (1.0 + model.lift))
    chance = np.where(treated, boosted, base)
    bought = rng.random(len(chance)) < chance
    spend = np.where(bought, rng.gamma(model.shape, mean_spend / model.shape), 0.0)
    gain = (boosted - base)[treated]
    return Simulated(
        bought=bought,
        spend=np.round(spend, 2).astype(np.float64),
        true_incremental_conversion=float(gain.mean()) if gain.size else 0.0,
        true_incremental_revenue_per_customer=float((gain * mean_spend[treated]).mean())
        if gain.size
        else 0.0,
    )
