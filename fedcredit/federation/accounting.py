"""Borrower-level privacy of `privacy.dp-sgd = true`: what `dp-accounting` says one bank's training costs.

Every number here is a function of public inputs only (the run config and a
bank's training row count), so a bank and the coordinator compute the same
epsilon. The accountant is Google's `dp-accounting` (RDP); nothing is
hand-rolled. What is assumed, and why the result is an upper bound:

- each local step samples every training row independently with probability
  q = batch-size / rows (Poisson sampling, `fedcredit.core.dpsgd`), and adds
  Gaussian noise of `privacy.example-noise-multiplier` times the clipping norm
  to the sum of clipped per-example gradients: one
  `PoissonSampledDpEvent(q, GaussianDpEvent(sigma))` per step;
- a round is `local-epochs` x ceil(rows / batch-size) such steps;
- a bank trains in every round it is asked, and is counted as trained in
  every round up to the current one (a bank left out of a round trained less,
  so its true epsilon is at most this);
- delta: each bank uses min(privacy.delta, 1 / (10 x rows)), so that delta
  stays well below the 1/rows at which a mechanism could publish one
  borrower's row outright.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import dp_accounting
from dp_accounting import rdp

from fedcredit.core.config import ConfigError, RunConfig

# With a client-level privacy.mode too, history.json's privacy record is that mode's, with this one under this key.
BORROWER_LEVEL = "borrower-level"
ACCOUNTING = "dp-accounting RDP, Poisson-sampled Gaussian per local step, borrower (one training row) level"


def bank_delta(cfg: RunConfig, rows: int) -> float:
    """The delta a bank of `rows` training rows states its epsilon at."""
    return min(cfg.privacy_delta, 1.0 / (10 * max(rows, 1)))


def sampling_rate(cfg: RunConfig, rows: int) -> float:
    """q: the probability that one training row joins one local step's batch."""
    return min(1.0, cfg.batch_size / max(rows, 1))


def steps_per_round(cfg: RunConfig, rows: int) -> int:
    """Local DP-SGD steps of one round at a bank of `rows` training rows."""
    return cfg.local_epochs * math.ceil(max(rows, 1) / cfg.batch_size)


def dp_event(cfg: RunConfig, rows: int, rounds: int) -> dp_accounting.DpEvent:
    """The mechanism a bank has run after `rounds` rounds of DP-SGD, as `dp-accounting` composes it."""
    step = dp_accounting.PoissonSampledDpEvent(
        sampling_rate(cfg, rows), dp_accounting.GaussianDpEvent(cfg.privacy_example_noise_multiplier)
    )
    return dp_accounting.SelfComposedDpEvent(step, rounds * steps_per_round(cfg, rows))


def bank_epsilon(cfg: RunConfig, rows: int, rounds: int) -> float:
    """The epsilon (at `bank_delta`) of a bank of `rows` training rows after `rounds` rounds; 0 before any."""
    if rounds <= 0:
        return 0.0
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event(cfg, rows, rounds))
    return float(accountant.get_epsilon(bank_delta(cfg, rows)))


def summary(cfg: RunConfig, rows: Mapping[str, int], rounds: int) -> dict[str, object]:
    """history.json's `privacy` after `rounds` rounds: the largest epsilon over the banks, and each bank's."""
    per_bank = {
        name: {
            "epsilon": round(bank_epsilon(cfg, n, rounds), 6),
            "delta": bank_delta(cfg, n),
            "rows": int(n),
            "steps": rounds * steps_per_round(cfg, n),
            "sampling-rate": sampling_rate(cfg, n),
        }
        for name, n in sorted(rows.items())
    }
    worst = max(per_bank, key=lambda name: per_bank[name]["epsilon"])  # type: ignore[arg-type, return-value]
    return {
        "mode": "dp-sgd",
        "unit": "one borrower (a training row at one bank)",
        "noise-multiplier": cfg.privacy_example_noise_multiplier,
        "clipping-norm": cfg.privacy_example_clipping_norm,
        "epsilon": per_bank[worst]["epsilon"],
        "delta": per_bank[worst]["delta"],
        "bank": worst,
        "rounds": rounds,
        "target-epsilon": cfg.privacy_target_epsilon or None,
        "accounting": ACCOUNTING + "; an upper bound for a bank not asked in every round",
        "banks": per_bank,
    }


def check_budget(cfg: RunConfig, rows: Mapping[str, int], rounds: int | None = None) -> None:
    """Refuse, before round 1, a run whose last round would take a bank beyond `privacy.target-epsilon`."""
    if cfg.privacy_target_epsilon <= 0 or not rows:
        return
    rounds = cfg.num_server_rounds if rounds is None else rounds
    spent = {name: bank_epsilon(cfg, n, rounds) for name, n in rows.items()}
    name = max(spent, key=lambda k: spent[k])
    if spent[name] > cfg.privacy_target_epsilon:
        raise ConfigError(
            f"privacy.dp-sgd: after {rounds} round(s) bank {name} ({rows[name]} training rows) would "
            f"reach epsilon {spent[name]:.3g} (delta {bank_delta(cfg, rows[name]):.3g}), beyond "
            f"privacy.target-epsilon = {cfg.privacy_target_epsilon:g}: lower num-server-rounds or local-epochs, "
            "raise privacy.example-noise-multiplier, or raise the budget"
        )
