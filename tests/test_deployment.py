"""A real deployment on 127.0.0.1: SuperLink with TLS and SuperNode authentication behind nginx, one SuperNode per bank."""

from __future__ import annotations

import json
import re
import time

import pandas as pd
import pytest
from appcopy import copy_app

from fedcredit.cli import main
from fedcredit.core import metrics
from fedcredit.core.schema import BUILTIN_SCHEMA_FILE
from fedcredit.deploy.certs import make_bank_keys
from fedcredit.deploy.consortium import BANK_SIDE_CONNECTION, CONNECTION, LocalDeployment
from fedcredit.deploy.localrun import APP_DIR, config_string
from fedcredit.deploy.proxy import find_nginx
from fedcredit.deploy.split import split_builtin
from fedcredit.federation.scores import read_scores
from fedcredit.risk.report_html import SECTIONS

# The coordinator's SuperLink sits behind nginx (.ci/run installs it; elsewhere: apt-get install nginx).
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (apt-get install nginx)"),
]


def _history(out):
    (run_dir,) = list(out.iterdir())
    return run_dir, json.loads((run_dir / "history.json").read_text())


def test_three_banks_over_tls_with_the_apps_schema_and_their_own_columns(tmp_path):
    """Real bank files carry more columns; the schema travels in the app; strangers are kept out."""
    csvs = split_builtin(tmp_path / "banks", 4, "iid")
    for i, path in enumerate(csvs.values()):  # a customer id no schema knows: ignored, never sent
        frame = pd.read_csv(path, dtype=str)
        frame.insert(0, "customer_id", [f"C{i}-{n:06d}" for n in range(len(frame))])
        frame.to_csv(path, index=False)
    app = copy_app(tmp_path / "app")
    (app / "schemas").mkdir()
    (app / "schemas" / "loans.toml").write_text(BUILTIN_SCHEMA_FILE.read_text())
    # bank-3 keeps its own edited copy of the schema (one more agreed term): the coordinator must refuse it.
    other = tmp_path / "bank-3-schema.toml"
    other.write_text(
        BUILTIN_SCHEMA_FILE.read_text().replace(
            'term = ["term_36", "term_60"]', 'term = ["term_36", "term_60", "term_84"]'
        )
    )
    out = tmp_path / "out"
    models = tmp_path / "bank-0-models"  # bank-0 keeps its personalised choice on its own side
    node_configs = {"bank-3": {"schema-path": str(other)}, "bank-0": {"model-dir": str(models)}}
    with LocalDeployment(tmp_path / "dep", csvs, node_configs=node_configs) as dep:
        rogue = dep.add_unregistered_bank("rogue")
        dep.wait_for_nodes(4)
        started = time.monotonic()
        run_id = dep.submit(
            {"num-server-rounds": 1, "output-dir": str(out), "schema-path": "schemas/loans.toml"}, app_dir=app
        )
        result = dep.wait(run_id, started)
        rogue.process.wait(timeout=120)  # it gives up: the SuperLink never lets it in
        online = dep.connected_nodes()
        superlink_log = (dep.workdir / "superlink.log").read_text()
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    assert rogue.process.returncode != 0 and len(online) == 4
    assert "No SuperNode found with the given public key" in superlink_log
    assert "Connection attempt failed" in rogue.log.read_text()
    run_dir, history = _history(out)
    assert history["status"] == "completed" and sorted(history["banks"]) == ["bank-0", "bank-1", "bank-2"]
    (reason,) = history["statistics-failed"].values()
    assert "schema" in reason and "differs from the coordinator's" in reason
    assert "C0-000" not in result.logs and "C0-000" not in (run_dir / "history.json").read_text()
    assert "holdout" not in history["rounds"][-1]  # the coordinator holds no data
    assert (run_dir / "model-final.keras").is_file()
    assert "BEGIN" not in (tmp_path / "dep" / "flwr-home" / "config.toml").read_text()  # no key material in the config
    # Personalisation: the kept model is at the bank, the coordinator has only its summaries.
    personal = history["personalisation"]
    assert sorted(personal["banks"]) == ["bank-0", "bank-1", "bank-2"] and "model" not in personal["banks"]["bank-0"]
    assert not list(run_dir.glob("banks/**/*.keras"))
    kept = models / "model-kept.keras"
    assert kept.is_file()
    scored = tmp_path / "scored.csv"
    code = main(["predict", str(kept), str(csvs["bank-0"]), "--output", str(scored)])
    scores = pd.read_csv(scored)
    assert code == 0 and (scores["status"] == "scored").all() and scores["pd"].between(0, 1).all()
    assert "customer_id" in scores.columns  # the bank's own id column passes through to its output


def _wait_for_round(out, server_round: int, started: float) -> None:
    while not list(out.glob(f"*/checkpoints/round-{server_round:03d}.npz")):
        assert time.monotonic() - started < 900, f"round {server_round} never finished"
        time.sleep(0.5)


def _wait_for_recorded_round(out, server_round: int, started: float) -> None:
    """Until history.json records the round (written after its checkpoint)."""

    def recorded() -> bool:
        for path in out.glob("*/history.json"):
            try:
                rounds = json.loads(path.read_text())["rounds"]
            except (ValueError, KeyError):  # written atomically, but be safe against a partial read
                continue
            if any(entry.get("round") == server_round for entry in rounds):
                return True
        return False

    while not recorded():
        assert time.monotonic() - started < 900, f"round {server_round} never recorded"
        time.sleep(0.5)


def test_secure_mode_over_tls_trains_the_same_model_as_plain_mode(tmp_path):
    """SecAgg+ stages through the proxy, each message a fresh ClientApp process, secrets in Context.state."""
    from fedcredit.core import model as mdl
    from fedcredit.core.banks import holdout_set
    from fedcredit.core.config import parse_run_config
    from fedcredit.federation.outputs import load_checkpoint

    csvs = split_builtin(tmp_path / "banks", 3, "iid")
    out = tmp_path / "out"
    config = {"num-server-rounds": 2, "local-epochs": 1, "hidden-units": "16", "round-timeout": 300.0}
    with LocalDeployment(tmp_path / "dep", csvs, identity=True) as dep:  # with the roster: every reply signed
        dep.wait_for_nodes(3)
        plain = dep.run({**config, "output-dir": str(out / "plain")})
        secure = dep.run({**config, "output-dir": str(out / "secure"), "privacy.secure-aggregation": True})
        logs = {bank: dep.egress_log(bank) for bank in csvs}
        roster = dep.app_dir / "roster.toml"
    for result in (plain, secure):
        assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    _assert_egress_logs_verify(logs, roster)
    (plain_dir, plain_history), (secure_dir, secure_history) = _history(out / "plain"), _history(out / "secure")
    assert all(r["aggregated"] for r in secure_history["rounds"][1:])
    assert secure_history["personalisation"]["banks"] == {}  # only sums reached the coordinator
    assert sum(secure_history["personalisation"]["kept-counts"].values()) == 3
    final = [load_checkpoint(d / "checkpoints" / "round-002.npz") for d in (plain_dir, secure_dir)]
    gap = max(float(abs(a - b).max()) for a, b in zip(*final, strict=True))
    test = holdout_set(parse_run_config({}))
    auc = {}
    for name, run_dir in (("plain", plain_dir), ("secure", secure_dir)):
        model = mdl.load(str(run_dir / "model-final.keras"))
        auc[name] = metrics.exact_auc(mdl.score(model, test), test["Class"].to_numpy())
    per_round = {
        name: [e["seconds"] for e in h["rounds"][1:]]
        for name, h in (("plain", plain_history), ("secure", secure_history))
    }
    print(
        f"deployment, 3 banks: hold-out AUC plain {auc['plain']:.4f} secure {auc['secure']:.4f}; "
        f"max weight gap {gap:.3g}; seconds per round plain {per_round['plain']} secure {per_round['secure']}; "
        f"whole runs {plain.seconds:.0f} s and {secure.seconds:.0f} s"
    )
    assert gap < 1e-5 and abs(auc["plain"] - auc["secure"]) < 0.005
    for run_dir, secure_mode in ((plain_dir, False), (secure_dir, True)):
        _assert_whole_validation_pack(run_dir, secure_mode)


def _assert_egress_logs_verify(logs, roster) -> None:
    """Each bank's egress log verifies with `fedcredit audit` and names both runs' training and evaluation."""
    import contextlib
    import io

    from fedcredit.cli import main

    for bank, path in logs.items():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["audit", str(path), "--roster", str(roster)])
        assert code == 0, f"{bank}: {out.getvalue()}"
        assert "train: " in out.getvalue() and "evaluate: " in out.getvalue() and f"banks: {bank};" in out.getvalue()


def _assert_whole_validation_pack(run_dir, secure_mode: bool) -> None:
    """A deployment's report (no hold-out set): every section filled from the pooled validation loans."""
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    sections = dict(re.findall(r'<section id="([a-z]+)">(.*?)</section>', page, flags=re.DOTALL))
    assert list(sections) == list(SECTIONS)
    pack = json.loads((run_dir / "report.json").read_text())
    assert pack["holdout"] is None and pack["run"]["mode"] == ("secure" if secure_mode else "plain")
    val = pack["validation"]
    assert val["rows"]["loans"] > 1000 and "3 banks" in val["rows"]["described"]
    assert all(val[k] for k in ("calibration", "bands", "thresholds", "distribution"))
    assert 0.5 < val["auc"]["low"] < val["auc"]["value"] < val["auc"]["high"]
    for name in ("performance", "calibration", "distributions", "gains"):
        assert "<img" in sections[name] or "<table" in sections[name], name
    assert "Pooled validation loans" in sections["performance"] and "Hold-out set" not in sections["performance"]
    assert pack["verdict"]["overall"] in ("pass", "borderline", "fail")
    assert pack["model"]["software"]["flwr"].startswith("1.42")
    if secure_mode:
        assert pack["banks"]["banks"] == [] and "Secure aggregation was on" in sections["banks"]
        assert "<table" not in sections["banks"]
        assert all(not s.banks for s in read_scores(run_dir).values())
    else:
        assert len(pack["banks"]["banks"]) == 3 and all(b["psi"] for b in pack["banks"]["banks"])
        assert "<table" in sections["banks"]


def test_broken_csv_and_killed_node_do_not_stop_the_run_and_a_restarted_node_rejoins(tmp_path):
    csvs = split_builtin(tmp_path / "banks", 4, "iid")
    broken = pd.read_csv(csvs["bank-3"], dtype=str).drop(columns=["int_rate"])
    broken.to_csv(csvs["bank-3"], index=False)
    out = tmp_path / "out"
    with LocalDeployment(tmp_path / "dep", csvs) as dep:
        dep.wait_for_nodes(4)
        started = time.monotonic()
        run_id = dep.submit({"num-server-rounds": 4, "output-dir": str(out), "round-timeout": 240.0})
        _wait_for_round(out, 1, started)
        dep.kill_bank("bank-2")  # mid-run: round 2 goes on without it
        _wait_for_round(out, 2, started)
        dep.start_supernode("bank-2")  # same key, same CSV: it rejoins for the later rounds
        result = dep.wait(run_id, started)
        bank3_log = dep.banks["bank-3"].log.read_text()
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    _, history = _history(out)
    ((broken_node, reason),) = history["statistics-failed"].items()
    # What leaves the bank names the column and the kind of problem, never its file path or a cell value;
    # the bank's own SuperNode log has the whole message, with the file.
    assert "int_rate" in reason and "missing-column" in reason and str(csvs["bank-3"]) not in reason
    assert "int_rate" in bank3_log and "bank-3" in bank3_log
    rounds = {r["round"]: r for r in history["rounds"]}
    assert "bank-2" in rounds[1]["train"]["ok"]
    # Its statistics never reached the model, so it is not asked to train on it either.
    assert all(
        broken_node not in r["train"]["failed"] and broken_node not in r["train"]["ok"]
        for r in rounds.values()
        if r["round"] > 0
    )
    assert history["evaluation"] == "folded"  # the default in a deployment: one message per bank per round
    # Folded: round 1's model is scored with round 2's train messages, which bank-2 (killed) never answered.
    assert "bank-2" not in rounds[2]["train"]["ok"] and "bank-2" not in rounds[1]["evaluate"]["ok"]
    assert sorted(rounds[2]["train"]["ok"]) == ["bank-0", "bank-1"]
    assert sorted(rounds[4]["train"]["ok"]) == ["bank-0", "bank-1", "bank-2"]
    assert history["status"] == "completed"


ACCESS_LINE = re.compile(r'\] (\d+) "\S+ (\S+) [^"]*" (\d+) .*upstream=(\S+)')  # fedcredit proxy's log format


def _flwr_json(dep: LocalDeployment, *args: str) -> tuple[int, dict]:
    """`flwr ... --format json`: its exit code and answer (flwr exits 0 on most refusals: read `success`)."""
    done = dep.flwr(*args, "--format", "json")
    return done.returncode, json.loads(done.stdout or "{}")


def test_only_the_admin_listener_submits_registers_and_stops_while_banks_join_through_the_proxy(tmp_path):
    """A partner bank holding ca.crt reaches the banks' listener: it cannot run its own app, register or stop."""
    csvs = split_builtin(tmp_path / "banks", 2, "iid")
    out = tmp_path / "out"
    with LocalDeployment(tmp_path / "dep", csvs) as dep:
        dep.wait_for_nodes(2)  # joined through nginx's banks' listener, with TLS and their registered keys
        _, late_key = make_bank_keys(dep.workdir / "certs" / "late", "late")
        run_config = config_string({"num-server-rounds": 1, "output-dir": str(tmp_path / "bank-run")})
        refused = {
            "run": _flwr_json(dep, "run", str(APP_DIR), BANK_SIDE_CONNECTION, "--run-config", run_config),
            "supernode register": _flwr_json(dep, "supernode", "register", str(late_key), BANK_SIDE_CONNECTION),
        }
        registered = _flwr_json(dep, "supernode", "register", str(late_key), CONNECTION)
        started = time.monotonic()
        run_id = dep.submit({"num-server-rounds": 1, "output-dir": str(out)})
        refused["stop"] = _flwr_json(dep, "stop", run_id, BANK_SIDE_CONNECTION)
        result = dep.wait(run_id, started)
        second = dep.submit({"num-server-rounds": 1, "output-dir": str(tmp_path / "out-stopped")})
        stopped = _flwr_json(dep, "stop", second, CONNECTION)
        second_result = dep.wait(second, time.monotonic(), timeout=300)
        nodes = _flwr_json(dep, "supernode", "list", CONNECTION)[1]["nodes"]
        access = (dep.proxy_dir / "logs" / "access.log").read_text().splitlines()
        supernode_args = [b.process.args for b in dep.banks.values()]
    for call, (code, answer) in refused.items():
        print(f"banks' listener: flwr {call} -> exit {code}, {answer}")
        assert answer["success"] is False and "403 Forbidden" in answer["error-message"], call
    print(f"admin listener: register -> {registered}; stop -> {stopped}; runs {result.status}, {second_result.status}")
    assert registered[1]["success"] and str(registered[1]["node-id"]) in {str(n["node-id"]) for n in nodes}
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    assert stopped[1]["success"] and second_result.status == "finished:stopped"
    assert not (tmp_path / "bank-run").exists()
    # The SuperNodes dial the banks' listener; nginx forwarded nothing but the Fleet API from it.
    assert all(dep.address in args and dep.superlink_address not in args for args in supernode_args)
    by_port: dict[str, list[tuple[str, str, str]]] = {}  # listener port -> (path, status, upstream status)
    for line in access:
        port, path, status, upstream = ACCESS_LINE.search(line).groups()
        by_port.setdefault(port, []).append((path, status, upstream))
    bank, admin = by_port[str(dep.bank_port)], by_port[str(dep.admin_port)]
    assert any(path == "/v1/fleet/push-messages" and status == "200" for path, status, _ in bank)
    assert all(path.startswith("/v1/fleet/") for path, _, upstream in bank if upstream != "-")
    assert sorted(path for path, _, upstream in bank if upstream == "-") == [
        "/v1/control/register-node",
        "/v1/control/start-run",
        "/v1/control/stop-run",
    ]
    assert all(path.startswith("/v1/control/") and upstream != "-" for path, _, upstream in admin)
    assert set(by_port) == {str(dep.bank_port), str(dep.admin_port)}


def test_a_run_cut_short_by_the_coordinators_crash_resumes_to_the_same_model(tmp_path):
    """SuperLink and ServerApp killed after round 2, restarted on the same database, resumed with resume-from."""
    from fedcredit.federation.outputs import load_checkpoint

    csvs = split_builtin(tmp_path / "banks", 3, "iid")
    out = tmp_path / "out"
    config = {
        "num-server-rounds": 4,
        "local-epochs": 1,
        "hidden-units": "16",
        "personalize.epochs": 0,
        "round-timeout": 240.0,
    }
    with LocalDeployment(tmp_path / "dep", csvs) as dep:
        dep.wait_for_nodes(3)
        whole = dep.run({**config, "output-dir": str(out / "whole")})
        started = time.monotonic()
        dep.submit({**config, "output-dir": str(out / "crashed")})
        _wait_for_recorded_round(out / "crashed", 2, started)
        dep.kill_superlink()
        dep.restart_superlink()
        dep.wait_for_nodes(3)
        (crashed,) = list((out / "crashed").iterdir())
        resumed = dep.run({**config, "output-dir": str(out / "resumed"), "resume-from": str(crashed)})
    assert whole.completed and resumed.completed, f"{resumed.status}: {resumed.details}\n{resumed.logs[-3000:]}"
    _, history = _history(out / "resumed")
    assert history["resumed-from"]["run-dir"] == str(crashed) and history["resumed-from"]["rounds"] >= 2
    assert [r["round"] for r in history["rounds"]] == [0, 1, 2, 3, 4]
    final = [load_checkpoint(max(d.glob("*/checkpoints/round-004.npz"))) for d in (out / "whole", out / "resumed")]
    gap = max(float(abs(a - b).max()) for a, b in zip(*final, strict=True))
    print(f"resumed vs uninterrupted: max |weight difference| {gap:.3g}")
    assert gap == 0.0, gap  # per-round seeds and node-ordered aggregation: exactly the uninterrupted run


def test_chaos_banks_killed_and_restarted_at_random_moments(tmp_path):
    """Seeded chaos: 4 banks, 8 rounds, three times one SuperNode killed mid-run and restarted (one down at a time)."""
    import random

    from fedcredit.core import model as mdl
    from fedcredit.federation.outputs import load_checkpoint

    rng = random.Random(20261128)
    csvs = split_builtin(tmp_path / "banks", 4, "iid")
    out = tmp_path / "out"
    config = {
        "num-server-rounds": 8,
        "local-epochs": 1,
        "hidden-units": "16",
        "personalize.epochs": 0,
        "round-timeout": 150.0,
        "min-banks": 2,
        "output-dir": str(out),
    }
    events = []
    with LocalDeployment(tmp_path / "dep", csvs) as dep:
        dep.wait_for_nodes(4)
        started = time.monotonic()
        run_id = dep.submit(config)
        for after in sorted(rng.sample(range(1, 7), 3)):
            _wait_for_round(out, after, started)
            bank = rng.choice(sorted(csvs))
            time.sleep(rng.uniform(0.0, 4.0))
            dep.kill_bank(bank)
            down = rng.uniform(3.0, 20.0)
            time.sleep(down)
            dep.start_supernode(bank)
            events.append(f"{bank} killed after round {after}, restarted {down:.0f} s later")
        result = dep.wait(run_id, started)
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    run_dir, history = _history(out)
    print("chaos:", "; ".join(events))
    for entry in history["rounds"][1:]:
        row = []
        for phase in ("train", "evaluate"):
            p = entry[phase]
            named = p["ok"] + list(p["failed"]) + list(p["refused"]) + p["missing"] + p.get("not-sampled", [])
            assert sorted(named) == sorted(csvs), (entry["round"], phase, p)  # every bank accounted for, once
            row.append(
                f"{phase} ok {sorted(p['ok'])} failed {sorted(p['failed'])} missing {p['missing']} "
                f"not asked {p.get('not-sampled', [])}"
            )
        if entry["aggregated"]:
            assert len(entry["train"]["ok"]) >= config["min-banks"]
        print(f"round {entry['round']}: aggregated={entry['aggregated']} | " + " | ".join(row))
    # Nothing written is lost or truncated.
    assert [r["round"] for r in history["rounds"]] == list(range(9))
    for r in range(1, 9):
        assert len(load_checkpoint(run_dir / "checkpoints" / f"round-{r:03d}.npz")) > 0
    assert mdl.load(str(run_dir / "model-final.keras")) is not None
    assert not list(run_dir.rglob("*.partial*"))
