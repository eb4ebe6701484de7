"""SecAgg+ sums: exact within fixed-point rounding, masked vectors that show nothing, dropouts survived."""

from __future__ import annotations

import numpy as np
import pytest

from fedcredit.federation import secagg
from fedcredit.federation.secagg import BankSession, SecAggError


def _session(vectors: dict[int, np.ndarray], threshold: int, drop: set[int] = frozenset(), withhold=frozenset()):
    """Run the four stages in memory: (sum or error, masked vectors the coordinator saw)."""
    banks = {n: BankSession.start("s1", n, threshold) for n in vectors}
    keys = {n: (b.pk1, b.pk2) for n, b in banks.items()}
    outgoing = {n: b.share(keys) for n, b in banks.items()}
    inbox = {n: {src: out[n] for src, out in outgoing.items() if n in out} for n in banks}
    # State survives a round trip through Context.state between stages.
    banks = {n: secagg.session_from_state(secagg.session_to_state(b)) for n, b in banks.items()}
    masked = {}
    for n, b in banks.items():
        if n in drop:
            continue
        vector = None if n in withhold else secagg.encode(vectors[n])
        out = b.mask(vector, inbox[n])
        if out is not None:
            masked[n] = out
    dropped = sorted(set(banks) - set(masked))
    revealed = {n: banks[n].reveal(sorted(masked), dropped) for n in banks if n not in drop}
    return secagg.unmask(masked, revealed, keys, dropped, threshold), masked


def test_the_secure_sum_equals_the_plain_sum_within_the_fixed_point_resolution():
    rng = np.random.default_rng(0)
    vectors = {n: rng.normal(0, 1e3, 500) * rng.choice([1e-6, 1, 1e9], 500) for n in (11, 22, 33, 44)}
    total, masked = _session(vectors, threshold=3)
    plain = np.sum(list(vectors.values()), axis=0)
    error = np.abs(secagg.decode(total) - plain)
    # Each bank rounds to the nearest 2^-32 (and float64 keeps its own 1e-16 relative precision).
    assert (error <= 4 * 0.5 * secagg.RESOLUTION + 1e-15 * np.abs(plain)).all(), error.max()
    # What the coordinator saw of one bank looks like uniform noise, uncorrelated with the bank's numbers.
    seen = np.array(secagg.decode(masked[11]))
    assert abs(np.corrcoef(seen, vectors[11])[0, 1]) < 0.2
    assert not np.allclose(seen, vectors[11], rtol=1e-3)


def test_a_bank_that_drops_out_after_sharing_keys_leaves_the_survivors_sum():
    rng = np.random.default_rng(1)
    vectors = {n: rng.normal(size=50) for n in (1, 2, 3, 4)}
    total, _ = _session(vectors, threshold=3, drop={2})
    assert np.allclose(secagg.decode(total), vectors[1] + vectors[3] + vectors[4], atol=1e-8)
    total, _ = _session(vectors, threshold=3, withhold={4})  # refused its own vector, still helps unmask
    assert np.allclose(secagg.decode(total), vectors[1] + vectors[2] + vectors[3], atol=1e-8)


def test_below_the_threshold_nothing_is_revealed_or_summed():
    vectors = {n: np.ones(5) for n in (1, 2, 3, 4)}
    with pytest.raises(SecAggError, match="threshold"):
        _session(vectors, threshold=3, drop={1, 2})


def test_a_bank_never_reveals_both_secrets_of_one_bank_nor_twice():
    banks = {n: BankSession.start("s", n, 2) for n in (1, 2, 3)}
    keys = {n: (b.pk1, b.pk2) for n, b in banks.items()}
    out = {n: b.share(keys) for n, b in banks.items()}
    bank = banks[1]
    bank.mask(secagg.encode(np.ones(3)), {src: o[1] for src, o in out.items() if 1 in o})
    with pytest.raises(SecAggError, match="both"):
        bank.reveal([1, 2], [2])
    with pytest.raises(SecAggError, match="did not mask with"):
        bank.reveal([1, 2], [9])
    bank.reveal([1, 2], [3])
    with pytest.raises(SecAggError, match="out of order"):
        bank.reveal([1, 2, 3], [])


def test_relayed_keys_or_shares_that_were_tampered_with_are_refused():
    banks = {n: BankSession.start("s", n, 2) for n in (1, 2, 3)}
    keys = {n: (b.pk1, b.pk2) for n, b in banks.items()}
    with pytest.raises(SecAggError, match="own public keys"):
        BankSession.start("s", 1, 2).share(keys)  # a coordinator substituting this bank's keys
    out = {n: b.share(keys) for n, b in banks.items()}
    with pytest.raises(SecAggError, match="do not decrypt"):
        banks[1].mask(secagg.encode(np.ones(2)), {2: out[3][1], 3: out[3][1]})


def test_encoding_refuses_what_cannot_be_summed():
    with pytest.raises(SecAggError, match="NaN"):
        secagg.encode(np.array([1.0, np.nan]))
    with pytest.raises(SecAggError, match="too large"):
        secagg.encode(np.array([1e30]))
    values = np.array([-3.5, 0.0, 2.0**40, 1e-9])
    assert np.allclose(secagg.decode(secagg.encode(values)), values, atol=secagg.RESOLUTION)
