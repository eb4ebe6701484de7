"""What signed keys (issue 25) add to one secure sum, per bank: against the key stages they guard.

For each consortium size, one bank's time to load its identity (the roster
and its PEM key, as every key-stage process does twice per sum in a
deployment: advertise and share), to sign its advertised keys, and to verify
every other bank's signed keys; beside them its unsigned key stages (fresh key
pairs, then the share stage: a pair secret and an encrypted share for every
other bank). Medians of --repeat runs, in this process; nothing of Flower's
transport is timed.

    python benchmarks/secure_signatures.py [--banks 10 100] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedcredit.federation import signed_keys
from fedcredit.federation.secagg import BankSession
from fedcredit.identity.bank import bank_identity
from fedcredit.identity.roster import ROSTER_FILE, file_sha256, public_bytes, roster_text


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(banks: int, repeat: int) -> dict[str, float]:
    names = [f"bank-{i}" for i in range(banks)]
    keys = {n: Ed25519PrivateKey.generate() for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp)
        (app / ROSTER_FILE).write_text(roster_text({n: public_bytes(k) for n, k in keys.items()}))
        key_file = app / "bank-0.sign.key"
        pem = keys["bank-0"].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key_file.write_bytes(pem)
        os.chmod(key_file, 0o600)
        node_config = {"signing-key": str(key_file), "roster-sha256": file_sha256(app / ROSTER_FILE)}
        load_ms = _median_ms(lambda: bank_identity(node_config, app, "bank-0"), repeat)
        identity = bank_identity(node_config, app, "bank-0")
        assert identity is not None

    threshold = banks // 2 + 1
    sessions = {node: BankSession.start("s", node, threshold) for node in range(banks)}
    public = {node: (b.pk1, b.pk2) for node, b in sessions.items()}
    sum_id = signed_keys.SumId(run=1, session="s", kind="train", round=1, threshold=threshold)
    signer = {node: identity.__class__(names[node], keys[names[node]], identity.roster) for node in range(banks)}
    signatures = [signed_keys.sign_keys(signer[node], sum_id, node, *public[node]) for node in range(banks)]
    sign_ms = _median_ms(lambda: signed_keys.sign_keys(identity, sum_id, 0, *public[0]), repeat)
    verify_ms = _median_ms(lambda: signed_keys.verify_directory(identity, sum_id, 0, public, names, signatures), repeat)
    advertise_ms = _median_ms(lambda: BankSession.start("s", 0, threshold), repeat)

    def share() -> None:
        fresh = BankSession.start("s", 0, threshold)
        fresh.share({**public, 0: (fresh.pk1, fresh.pk2)})

    share_ms = _median_ms(share, repeat)
    return {
        "load": load_ms,
        "sign": sign_ms,
        "verify": verify_ms,
        "added": 2 * load_ms + sign_ms + verify_ms,
        "stages": advertise_ms + share_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(
        "| banks | load identity (ms, x2 per sum) | sign own keys (ms) | verify the others' (ms) "
        "| added per bank per sum (ms) | unsigned key stages (ms) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for banks in args.banks:
        m = measure(banks, args.repeat)
        print(
            f"| {banks} | {m['load']:.2f} | {m['sign']:.3f} | {m['verify']:.2f} | {m['added']:.2f} | {m['stages']:.1f} |"
        )


if __name__ == "__main__":
    main()
