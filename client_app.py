"""fedcredit ClientApp: a bank answers the ServerApp's messages.

Only statistics, weights and metric summaries leave the bank (in secure mode
only masked vectors of them); its rows never do. What each message carries is
`fedcredit/federation/protocol.py`.
"""

from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedcredit.federation import client, protocol, secure_bank, signed_replies

APP_DIR = Path(__file__).resolve().parent
# With a consortium roster every reply is signed and logged at the bank; outermost, so over the final reply.
app = ClientApp(mods=[signed_replies.make_identity_mod(lambda: APP_DIR)])


@app.query(mods=[secure_bank.secure_mod])
def query(msg: Message, context: Context) -> Message:
    """Sufficient statistics of the bank's training rows, for federated preprocessing."""

    def build():
        cfg = client.run_config(client.raw_config(msg, context), APP_DIR, context.node_config)
        # DP-SGD: the bank's epsilon is computed at its own training rows, so it says how many it has.
        disclose = cfg.privacy_dp_sgd
        return protocol.statistics_reply(*client.statistics(cfg, context.node_config), disclose_rows=disclose)

    return client.answer(msg, build)


@app.query(protocol.PROFILE_ACTION, mods=[secure_bank.secure_mod])
def profile(msg: Message, context: Context) -> Message:
    """Before round 1: counts of the bank's rows over the global bins, for the model-risk report (no model)."""

    def build():
        cfg = client.run_config(client.raw_config(msg, context), APP_DIR, context.node_config)
        train, validation = client.profile(cfg, context.node_config, protocol.read_preprocessing(msg.content))
        return protocol.profile_reply(train, validation)

    return client.answer(msg, build)


# secure_mod outermost: in secure mode it masks what the handler (and DP clipping) produced.
@app.train(mods=[secure_bank.secure_mod, client.privacy_mod])
def train(msg: Message, context: Context) -> Message:
    """Fit the global model on the bank's training rows (FedProx: with the proximal term).

    With folded evaluation, first score the incoming global model on the validation rows.
    """

    def build():
        cfg = client.run_config(client.raw_config(msg, context), APP_DIR, context.node_config)
        config = msg.content[protocol.CONFIG]
        incoming, prep_json = msg.content[protocol.ARRAYS].to_numpy_ndarrays(), protocol.read_preprocessing(msg.content)
        # Folded evaluation: score the incoming global model first; the summary rides with the update.
        summary = (
            client.evaluate(cfg, context.node_config, incoming, prep_json)
            if config.get(protocol.EVALUATE_FIRST)
            else None
        )
        weights, loss, rows = client.train(
            cfg,
            context.node_config,
            incoming,
            prep_json,
            protocol.run_round(config),
            float(config.get("proximal-mu", 0.0)),
        )
        return protocol.train_reply(weights, loss, rows, summary)

    return client.answer(msg, build)


@app.evaluate(mods=[secure_bank.secure_mod])
def evaluate(msg: Message, context: Context) -> Message:
    """Summarise the global model's scores on the bank's validation rows."""

    def build():
        cfg = client.run_config(client.raw_config(msg, context), APP_DIR, context.node_config)
        summary = client.evaluate(
            cfg,
            context.node_config,
            msg.content[protocol.ARRAYS].to_numpy_ndarrays(),
            protocol.read_preprocessing(msg.content),
        )
        return protocol.evaluate_reply(summary)

    return client.answer(msg, build)


@app.query(protocol.PERSONALISE_ACTION, mods=[secure_bank.secure_mod])
def personalise(msg: Message, context: Context) -> Message:
    """After the last round: fine-tune, compare with the global and a local-only model, keep the best here."""

    def build():
        cfg = client.run_config(client.raw_config(msg, context), APP_DIR, context.node_config)
        bank_dir = msg.content[protocol.CONFIG].get("bank-dir")
        kept, summaries = client.personalise(
            cfg,
            context.node_config,
            msg.content[protocol.ARRAYS].to_numpy_ndarrays(),
            protocol.read_preprocessing(msg.content),
            str(bank_dir) if bank_dir else None,
        )
        return protocol.personalise_reply(kept, summaries)

    return client.answer(msg, build)


@app.query(protocol.REASONS_ACTION, mods=[secure_bank.secure_mod])
def reasons(msg: Message, context: Context) -> Message:
    """After the last round: how often each feature is a reason for the final model's declines here (counts only)."""

    def build():
        from fedcredit.risk.reason_counts import bank_counts  # explain and the monotonicity check (a model handler)

        cfg = client.run_config(client.raw_config(msg, context), APP_DIR, context.node_config)
        counts = client.reasons(
            cfg,
            context.node_config,
            msg.content[protocol.ARRAYS].to_numpy_ndarrays(),
            protocol.read_preprocessing(msg.content),
            bank_counts,
        )
        return protocol.reasons_reply(counts)

    return client.answer(msg, build)


@app.query(protocol.SECAGG_ACTION)
def secagg(msg: Message, context: Context) -> Message:
    """Secure mode's key stages (advertise, share, reveal): no model, no TensorFlow."""
    return secure_bank.answer_stage(msg, context, APP_DIR)
