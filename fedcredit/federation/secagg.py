"""Secure sums (SecAgg+, Bell et al., CCS 2020) from Flower's own building blocks.

Each bank adds to its vector a self mask (from a random seed) and, for every
other bank, a pairwise mask (from an ECDH key the two agree on), with signs
that cancel in the sum. The coordinator sees only masked vectors; to take the
self masks out of the sum it asks the surviving banks for Shamir shares of
the survivors' seeds, and for a bank that dropped out after sharing keys the
shares of its mask key, so its pairwise masks can be removed. Any
`threshold` banks' shares rebuild a secret; fewer reveal nothing.

Every bank is every other's neighbour (SecAgg+ with a complete graph, i.e.
SecAgg): consortia are small. Flower provides the key pairs
(`flwr.supercore.primitives.asymmetric`), the key agreement and the
authenticated encryption of shares (`crypto.symmetric_encryption`, Fernet),
Shamir's sharing (`crypto.shamir`) and the share packing (`secaggplus_utils`).
Two parts differ from Flower's legacy `secaggplus_mod`, on purpose:

- Masks are the ChaCha20 key stream (`cryptography`) of the 32-byte secret.
  Flower's `pseudo_rand_gen` folds the secret to a 32-bit NumPy seed, which a
  coordinator could search exhaustively to strip a bank's mask.
- Numbers are fixed point with 2^-32 resolution modulo 2^128 instead of
  Flower's stochastic 22-bit `quantization`: the same encoding then carries
  model updates, sums of squares of incomes and exact counts, needs no
  clipping range, and rounds deterministically (results are reproducible).

A session is used for exactly one sum: new keys every time, so no mask is
ever reused and a secret revealed for one sum protects nothing else.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.fernet import InvalidToken
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt, generate_shared_key
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)

MODULUS_BITS = 128
MODULUS = 1 << MODULUS_BITS
FRACTION_BITS = 32
RESOLUTION = 2.0**-FRACTION_BITS
ENTRY_BYTES = MODULUS_BITS // 8
# Largest magnitude one bank may contribute per entry: a sum of up to 2^20 banks stays below 2^127.
MAX_ABS = 2.0 ** (MODULUS_BITS - 1 - FRACTION_BITS - 20)


class SecAggError(ValueError):
    """A stage cannot go on; the message says which check failed."""


# --- fixed point ------------------------------------------------------------------------


def encode(values: np.ndarray) -> list[int]:
    """Finite float64 values as fixed-point integers modulo 2^128 (rounded to the nearest 2^-32)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        raise SecAggError("the vector has NaN or infinite values")
    if values.size and float(np.abs(values).max()) >= MAX_ABS:
        raise SecAggError(f"a value of the vector is beyond +-{MAX_ABS:.3g}, too large to sum securely")
    return [int(x) % MODULUS for x in np.rint(np.ldexp(values, FRACTION_BITS))]


def decode(ints: Sequence[int]) -> np.ndarray:
    """The float64 values of a fixed-point vector (a sum of encoded vectors)."""
    signed = [x - MODULUS if x >= MODULUS // 2 else x for x in ints]
    return np.array([float(x) for x in signed], dtype=np.float64) * RESOLUTION


def to_bytes(ints: Sequence[int]) -> bytes:
    return b"".join(x.to_bytes(ENTRY_BYTES, "little") for x in ints)


def from_bytes(data: bytes, length: int) -> list[int]:
    if not isinstance(data, bytes) or len(data) != length * ENTRY_BYTES:
        raise SecAggError(f"a masked vector must be {length * ENTRY_BYTES} bytes")
    return [int.from_bytes(data[i : i + ENTRY_BYTES], "little") for i in range(0, len(data), ENTRY_BYTES)]


def mask_stream(secret: bytes, length: int) -> list[int]:
    """`length` integers modulo 2^128 from the ChaCha20 key stream of a 32-byte secret."""
    encryptor = Cipher(algorithms.ChaCha20(secret, b"\0" * 16), mode=None).encryptor()
    data = encryptor.update(b"\0" * (length * ENTRY_BYTES))
    return [int.from_bytes(data[i : i + ENTRY_BYTES], "little") for i in range(0, len(data), ENTRY_BYTES)]


def _pair_secret(private_key: bytes, public_key: bytes) -> bytes:
    """The 32-byte secret two banks agree on (Flower's ECDH + HKDF, base64 for Fernet)."""
    return base64.urlsafe_b64decode(
        generate_shared_key(bytes_to_private_key(private_key), bytes_to_public_key(public_key))
    )


def _add(a: list[int], b: list[int], sign: int = 1) -> list[int]:
    return [(x + sign * y) % MODULUS for x, y in zip(a, b, strict=True)]


# --- a bank's side --------------------------------------------------------------------------


@dataclass
class BankSession:
    """One bank's secrets for one secure sum; lives in the node's `Context.state` between stages."""

    session: str
    node: int
    threshold: int
    stage: str = "advertised"
    sk1: bytes = b""  # mask-agreement key pair
    pk1: bytes = b""
    sk2: bytes = b""  # share-encryption key pair
    pk2: bytes = b""
    seed: bytes = b""  # self-mask seed
    public_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    seed_shares: dict[int, bytes] = field(default_factory=dict)  # shares this bank holds, by owner
    key_shares: dict[int, bytes] = field(default_factory=dict)
    masked_with: list[int] = field(default_factory=list)
    kind: str = ""  # what is summed (the wrapped messages' type) and in which round, as the coordinator announced
    round: int = 0
    banks: dict[int, str] = field(default_factory=dict)  # with a roster: the peers whose signed keys verified

    @classmethod
    def start(cls, session: str, node: int, threshold: int) -> BankSession:
        """Stage 1: fresh key pairs; the public halves go to the coordinator."""
        if threshold < 2:
            raise SecAggError("the reconstruction threshold must be at least 2")
        sk1, pk1 = generate_key_pairs()
        sk2, pk2 = generate_key_pairs()
        return cls(
            session,
            node,
            threshold,
            sk1=private_key_to_bytes(sk1),
            pk1=public_key_to_bytes(pk1),
            sk2=private_key_to_bytes(sk2),
            pk2=public_key_to_bytes(pk2),
        )

    def share(self, public_keys: Mapping[int, tuple[bytes, bytes]]) -> dict[int, bytes]:
        """Stage 2: shares of the seed and mask key for every bank, each encrypted for it alone."""
        self._expect("advertised", "share")
        if len(public_keys) < self.threshold:
            raise SecAggError(f"{len(public_keys)} banks advertised keys, fewer than the threshold {self.threshold}")
        if public_keys.get(self.node) != (self.pk1, self.pk2):
            raise SecAggError("the coordinator relayed this bank's own public keys wrongly")
        flat = [k for pair in public_keys.values() for k in pair]
        if len(set(flat)) != len(flat):
            raise SecAggError("two advertised public keys are identical")
        self.public_keys = dict(sorted(public_keys.items()))
        self.seed = os.urandom(32)
        order = list(self.public_keys)
        seed_shares = create_shares(self.seed, self.threshold, len(order))
        key_shares = create_shares(self.sk1, self.threshold, len(order))
        out = {}
        for index, other in enumerate(order):
            if other == self.node:
                self.seed_shares[other], self.key_shares[other] = seed_shares[index], key_shares[index]
                continue
            secret = generate_shared_key(
                bytes_to_private_key(self.sk2), bytes_to_public_key(self.public_keys[other][1])
            )
            plain = share_keys_plaintext_concat(self.node, other, seed_shares[index], key_shares[index])
            out[other] = encrypt(secret, plain)
        self.stage = "shared"
        return out

    def mask(self, vector: list[int] | None, ciphertexts: Mapping[int, bytes]) -> list[int] | None:
        """Stage 3: store the shares others sent; the vector with the self mask and the pairwise masks.

        `vector` None: this bank withholds its vector (its own check refused
        it) but keeps the shares, to help unmask the others' sum.
        """
        self._expect("shared", "mask")
        if len(ciphertexts) + 1 < self.threshold:
            raise SecAggError(f"shares came from {len(ciphertexts)} other banks, fewer than the threshold allows")
        for src, token in ciphertexts.items():
            if src == self.node or src not in self.public_keys:
                raise SecAggError(f"shares from node {src}, which did not advertise keys in this session")
            if self.banks and src not in self.banks:  # with a roster, only peers whose signed keys verified
                raise SecAggError(f"shares from node {src}, whose keys were not verified against the roster")
            secret = generate_shared_key(bytes_to_private_key(self.sk2), bytes_to_public_key(self.public_keys[src][1]))
            try:
                real_src, dst, seed_share, key_share = share_keys_plaintext_separate(decrypt(secret, token))
            except InvalidToken:
                raise SecAggError(f"the shares from node {src} do not decrypt: not encrypted for this bank") from None
            if real_src != src or dst != self.node:
                raise SecAggError(f"shares from node {real_src} to {dst} were relayed as from {src} to this bank")
            self.seed_shares[src], self.key_shares[src] = seed_share, key_share
        self.masked_with = sorted(ciphertexts)
        self.stage = "masked"
        if vector is None:
            return None
        masked = _add(vector, mask_stream(self.seed, len(vector)))
        for other in self.masked_with:
            pair = mask_stream(_pair_secret(self.sk1, self.public_keys[other][0]), len(vector))
            masked = _add(masked, pair, 1 if self.node > other else -1)
        return masked

    def reveal(self, active: Sequence[int], dropped: Sequence[int]) -> dict[int, bytes]:
        """Stage 4: seed shares of the survivors, mask-key shares of banks that dropped out; once only.

        Never both for one bank (that would unmask its vector), never for a bank
        this bank did not mask with, and only with at least `threshold` survivors.
        """
        self._expect("masked", "reveal")
        active_set, dropped_set = set(active), set(dropped)
        if active_set & dropped_set:
            raise SecAggError("a bank is listed both as surviving and as dropped: refusing to reveal")
        known = set(self.masked_with) | {self.node}
        if not active_set | dropped_set <= known:
            raise SecAggError("the coordinator asks about banks this bank did not mask with")
        if len(active_set) < self.threshold:
            raise SecAggError(f"{len(active_set)} surviving banks, fewer than the threshold {self.threshold}")
        self.stage = "revealed"
        out = {n: self.seed_shares[n] for n in sorted(active_set) if n in self.seed_shares}
        out.update({n: self.key_shares[n] for n in sorted(dropped_set) if n in self.key_shares})
        return out

    def _expect(self, stage: str, action: str) -> None:
        if self.stage != stage:
            raise SecAggError(f"stage '{action}' out of order (session {self.session} is at '{self.stage}')")


# --- the coordinator's side ------------------------------------------------------------------


def unmask(
    masked: Mapping[int, list[int]],
    revealed: Mapping[int, Mapping[int, bytes]],
    public_keys: Mapping[int, tuple[bytes, bytes]],
    dropped: Sequence[int],
    threshold: int,
) -> list[int]:
    """The sum of the survivors' vectors: masked vectors minus their self masks and dropped banks' pairs.

    `revealed`: what each survivor revealed {owner: share}; `dropped`: banks
    that shared keys but sent no masked vector.
    """
    active = sorted(masked)
    if len(active) < threshold or len(revealed) < threshold:
        raise SecAggError(f"{len(revealed)} banks revealed shares, the threshold is {threshold}")
    length = len(masked[active[0]])
    total = [0] * length
    for node in active:
        total = _add(total, masked[node])

    def rebuild(owner: int) -> bytes:
        shares = [r[owner] for r in revealed.values() if owner in r]
        if len(shares) < threshold:
            raise SecAggError(f"only {len(shares)} shares of node {owner}'s secret, the threshold is {threshold}")
        try:
            return combine_shares(shares[:threshold])
        except ValueError as err:
            raise SecAggError(f"the shares of node {owner}'s secret do not combine: {err}") from None

    for node in active:
        total = _add(total, mask_stream(rebuild(node), length), -1)
    for gone in dropped:
        key = rebuild(gone)
        for node in active:
            pair = mask_stream(_pair_secret(key, public_keys[node][0]), length)
            total = _add(total, pair, -1 if node > gone else 1)
    return total


def session_to_state(s: BankSession) -> dict[str, object]:
    """The session as ConfigRecord values (Flower keeps them in the node's `Context.state`)."""
    owners = sorted(s.seed_shares)
    return {
        "session": s.session,
        "node": s.node,
        "threshold": s.threshold,
        "stage": s.stage,
        "sk1": s.sk1,
        "pk1": s.pk1,
        "sk2": s.sk2,
        "pk2": s.pk2,
        "seed": s.seed,
        "key-owners": list(s.public_keys),
        "pk1s": [pair[0] for pair in s.public_keys.values()],
        "pk2s": [pair[1] for pair in s.public_keys.values()],
        "share-owners": owners,
        "seed-shares": [s.seed_shares[n] for n in owners],
        "key-shares": [s.key_shares[n] for n in owners],
        "masked-with": list(s.masked_with),
        "kind": s.kind,
        "round": s.round,
        "bank-nodes": list(s.banks),
        "bank-names": list(s.banks.values()),
    }


def session_from_state(state: Mapping[str, object]) -> BankSession:
    def listed(key: str) -> list:
        value = state.get(key, [])
        return list(value) if isinstance(value, list) else []

    owners = listed("share-owners")
    return BankSession(
        session=str(state["session"]),
        node=int(state["node"]),  # type: ignore[call-overload]
        threshold=int(state["threshold"]),  # type: ignore[call-overload]
        stage=str(state["stage"]),
        sk1=bytes(state["sk1"]),  # type: ignore[arg-type]
        pk1=bytes(state["pk1"]),  # type: ignore[arg-type]
        sk2=bytes(state["sk2"]),  # type: ignore[arg-type]
        pk2=bytes(state["pk2"]),  # type: ignore[arg-type]
        seed=bytes(state["seed"]),  # type: ignore[arg-type]
        public_keys={
            int(n): (a, b) for n, a, b in zip(listed("key-owners"), listed("pk1s"), listed("pk2s"), strict=True)
        },
        seed_shares=dict(zip(owners, listed("seed-shares"), strict=True)),
        key_shares=dict(zip(owners, listed("key-shares"), strict=True)),
        masked_with=[int(n) for n in listed("masked-with")],
        kind=str(state.get("kind", "")),
        round=int(state.get("round", 0)),  # type: ignore[call-overload]
        banks={int(n): str(b) for n, b in zip(listed("bank-nodes"), listed("bank-names"), strict=True)},
    )
