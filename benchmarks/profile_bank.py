"""Where a bank's time goes in one round, measured in-process (no Flower, no Ray).

    python benchmarks/profile_bank.py [--banks 20]

Times what a ClientApp does per message (`fedcredit.federation.client.train` and
`evaluate`, warm: second round) and what the ServerApp does per round
besides waiting (hold-out scoring, checkpoint, best-model save, history,
TensorBoard scalars). Compare with `benchmarks/speed.py`'s seconds per round
to see what Flower's messaging adds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from fedcredit.core import metrics
from fedcredit.core import model as mdl
from fedcredit.core.banks import holdout_set
from fedcredit.core.config import parse_run_config
from fedcredit.core.stats import merge_stats, preprocessing_from_stats
from fedcredit.federation import client
from fedcredit.federation.outputs import RunOutputs, write_scalars


def ms(fn, repeat: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--banks", type=int, default=20)
    args = ap.parse_args()
    cfg = parse_run_config({"partitioning": "iid"})
    nodes = [{"partition-id": i, "num-partitions": args.banks} for i in range(args.banks)]
    prep = preprocessing_from_stats(merge_stats([client.statistics(cfg, n)[3] for n in nodes]), 10).to_json()
    key, model, trainer = client._model(cfg, prep, simulation=True)
    weights = model.get_weights()
    for server_round in (1, 2):
        train_s, eval_s = [], []
        for node in nodes:
            t = time.perf_counter()
            client.train(cfg, node, weights, prep, server_round)
            train_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            client.evaluate(cfg, node, weights, prep)
            eval_s.append(time.perf_counter() - t)
    rows = len(client.load_bank(cfg, nodes[0]).train)
    print(f"{args.banks} iid banks ({rows} training rows each, {cfg.local_epochs} local epochs), warm round:")
    print(f"  train message: {1000 * sum(train_s) / len(train_s):.1f} ms per bank")
    print(f"  evaluate message: {1000 * sum(eval_s) / len(eval_s):.1f} ms per bank")
    bank = client.load_bank(cfg, nodes[0])
    feats = client._inputs(key, bank, "train", trainer)
    labels = bank.train["Class"].to_numpy()
    local, one = mdl.FitOptions(cfg.local_epochs, cfg.batch_size, seed=1), mdl.FitOptions(1, cfg.batch_size, seed=1)
    print(
        f"  of which Keras fit ({cfg.local_epochs} epochs): "
        f"{ms(lambda: trainer.fit(weights, feats, labels, local)):.1f} ms, "
        f"1 epoch: {ms(lambda: trainer.fit(weights, feats, labels, one)):.1f} ms"
    )
    test = holdout_set(cfg)
    x, y = mdl.to_inputs(test, model), test["Class"].to_numpy()
    out = RunOutputs(tempfile.mkdtemp(prefix="fedcredit-profile-"), "profile")
    print("ServerApp work per round:")
    print(
        f"  hold-out scoring + metrics ({len(test)} rows): {ms(lambda: metrics.exact(mdl.predict(model, x), y, 0.1)):.1f} ms"
    )
    print(f"  checkpoint: {ms(lambda: out.save_checkpoint(1, weights)):.1f} ms")
    print(f"  best-model .keras save: {ms(lambda: model.save(out.path('model-best.keras'))):.1f} ms")
    print(f"  TensorBoard scalars: {ms(lambda: write_scalars(out.path('tb'), 1, {'pooled': {'auc': 0.7}})):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
