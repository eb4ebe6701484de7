"""A copy of the app in a temporary directory, to run it with extra files (a schema, a hostile bank)."""

from __future__ import annotations

import shutil
from pathlib import Path

from fedcredit.deploy.localrun import APP_DIR

HOSTILE_CLIENT_APP = '''"""Test only: the real ClientApp, except that the bank of partition 0 boosts its update x{factor:g}."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

import client_app as honest
from fedcredit.deploy.inprocess import boosted_update

app = ClientApp()
boost = boosted_update({factor!r})


@app.query()
def query(msg: Message, context: Context) -> Message:
    return honest.query(msg, context)


@app.query("personalise")
def personalise(msg: Message, context: Context) -> Message:
    return honest.personalise(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    reply = honest.train(msg, context)
    if context.node_config.get("partition-id") == 0 and not reply.has_error():
        boost("train", reply.content, msg)
    return reply


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return honest.evaluate(msg, context)
'''


def copy_app(dest: Path, boost: float | None = None) -> Path:
    """The app's files under `dest`; with `boost`, its ClientApp is the hostile one above."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "client_app.py", "server_app.py"):
        shutil.copy2(APP_DIR / name, dest / name)
    shutil.copytree(APP_DIR / "fedcredit", dest / "fedcredit", ignore=shutil.ignore_patterns("__pycache__"))
    if boost is not None:
        (dest / "hostile_client_app.py").write_text(HOSTILE_CLIENT_APP.format(factor=boost), encoding="utf-8")
        toml = dest / "pyproject.toml"
        text = toml.read_text(encoding="utf-8")
        toml.write_text(
            text.replace('clientapp = "client_app:app"', 'clientapp = "hostile_client_app:app"'), encoding="utf-8"
        )
    return dest
