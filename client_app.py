"""fedcredit ClientApp: a bank answers the ServerApp's messages.

Only statistics, weights and metric summaries leave the bank; its rows never do.
"""

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcredit.core.config import parse_run_config
from fedcredit.federation import client
from fedcredit.federation.protocol import stats_to_record

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Sufficient statistics of the bank's training rows, for federated preprocessing."""
    cfg = parse_run_config(context.run_config)
    name, stats = client.statistics(cfg, context.node_config)
    content = stats_to_record(stats)
    # "file": a real bank's CSV (deployment); "simulation": a slice of the embedded data set.
    source = "file" if "data-path" in context.node_config else "simulation"
    content["bank-info"] = ConfigRecord({"name": name, "source": source})
    return Message(content=content, reply_to=msg)


@app.train(mods=[client.privacy_mod])
def train(msg: Message, context: Context) -> Message:
    """Fit the global model on the bank's training rows (FedProx: with the proximal term)."""
    cfg = parse_run_config(context.run_config)
    config = msg.content["config"]
    weights, metrics = client.train(cfg, context.node_config, msg.content["arrays"].to_numpy_ndarrays(),
                                    str(config["preprocessing"]), int(config["server-round"]),
                                    float(config.get("proximal-mu", 0.0)))
    content = RecordDict({"arrays": ArrayRecord(weights), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Summarise the global model's scores on the bank's validation rows."""
    cfg = parse_run_config(context.run_config)
    summary = client.evaluate(cfg, context.node_config, msg.content["arrays"].to_numpy_ndarrays(),
                              str(msg.content["config"]["preprocessing"]))
    return Message(content=RecordDict({"metrics": MetricRecord(summary)}), reply_to=msg)
