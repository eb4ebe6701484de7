"""`fedcredit proxy`: nginx serves the banks only the Fleet API, the Control API only on the admin listener.

The configuration is checked twice: as text (parsed into nginx's directive
tree), and live, with a real nginx in front of a stand-in SuperLink (a TLS
HTTP server that records what reaches it). The live tests need nginx and are
skipped only when it is not installed.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flwr.common.constant import FAB_MAX_SIZE, FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE

from fedcredit.cli import proxy as proxy_cli
from fedcredit.deploy.certs import make_credentials
from fedcredit.deploy.localrun import _free_port
from fedcredit.deploy.proxy import (
    ProxyError,
    ProxySettings,
    certificate_names,
    find_nginx,
    nginx_command,
    render_nginx_config,
    write_nginx_config,
)

needs_nginx = pytest.mark.skipif(
    find_nginx() is None,
    reason="runs a real nginx in front of a stand-in SuperLink: nginx is not installed (apt-get install nginx)",
)

# --- nginx's configuration as a tree ------------------------------------------------------------------


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def all(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]

    def one(self, name: str) -> Directive:
        (found,) = self.all(name)
        return found

    def walk(self):
        yield self
        for child in self.block or []:
            yield from child.walk()


_TOKEN = re.compile(r"""'[^']*'|"(?:\\.|[^"\\])*"|[{};]|[^\s{};'"]+""")


def parse_nginx(text: str) -> Directive:
    """nginx's grammar: `name args;` or `name args { ... }`; `#` starts a comment outside quotes."""
    text = re.sub(r"(^|\s)#[^\n]*", r"\1", text)
    root = Directive("main", [], [])
    stack, words = [root], []
    for token in _TOKEN.findall(text):
        if token == ";":
            stack[-1].block.append(Directive(words[0], words[1:]))
            words = []
        elif token == "{":
            child = Directive(words[0], words[1:], [])
            stack[-1].block.append(child)
            stack.append(child)
            words = []
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        else:
            words.append(token.strip("'\"") if token[0] in "'\"" else token)
    assert len(stack) == 1 and not words, "unbalanced braces"
    return root


def _servers(tree: Directive) -> dict[str, Directive]:
    """Server blocks by their `listen` address."""
    return {s.one("listen").args[0]: s for s in tree.one("http").all("server")}


def _proxied(server: Directive) -> list[str]:
    """Location patterns of a server that reach the SuperLink."""
    return [" ".join(loc.args) for loc in server.all("location") if any(d.name == "proxy_pass" for d in loc.walk())]


def _refused(server: Directive) -> list[str]:
    return [
        " ".join(loc.args) for loc in server.all("location") if loc.all("return") and loc.one("return").args[0] == "403"
    ]


def _bytes(size: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].lower() in units else int(size)


def _seconds(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(value[:-1]) * units[value[-1]] if value[-1] in units else float(value)


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("consortium") / "certs"
    make_credentials(out, ["superlink.example", "127.0.0.1", "localhost"], [])
    return out


def _settings(certs: Path, workdir: Path, **kw) -> ProxySettings:
    base = {"superlink": "127.0.0.1:9091", "bank_listen": "0.0.0.0:9092", "admin_listen": "127.0.0.1:9093"}
    return ProxySettings(certs=certs, workdir=workdir, **{**base, **kw})


# --- the configuration as text --------------------------------------------------------------------------


def test_banks_listener_forwards_only_the_fleet_api_and_the_admin_listener_only_the_control_api(certs, tmp_path):
    tree = parse_nginx(render_nginx_config(_settings(certs, tmp_path)))
    servers = _servers(tree)
    assert sorted(servers) == ["0.0.0.0:9092", "127.0.0.1:9093"]
    bank, admin = servers["0.0.0.0:9092"], servers["127.0.0.1:9093"]
    assert all(s.one("listen").args[1:] == ["ssl"] for s in servers.values())
    assert _proxied(bank) == ["~ ^/v1/fleet/[A-Za-z0-9_-]+$"]
    assert _proxied(admin) == ["~ ^/v1/control/[A-Za-z0-9_-]+$"]
    # Every other location of both listeners answers 403, the Runtime API included.
    for server in (bank, admin):
        assert sorted(_refused(server) + _proxied(server)) == sorted(
            " ".join(loc.args) for loc in server.all("location")
        )
        assert "/v1/runtime/" in _refused(server) and "/" in _refused(server)
    assert "/v1/control/" in _refused(bank) and "/v1/fleet/" in _refused(admin)
    # Only POST (all of Flower's calls) passes; the upstream is the loopback SuperLink.
    for server in (bank, admin):
        (loc,) = [loc for loc in server.all("location") if loc.args[0] == "~"]
        assert loc.one("limit_except").args == ["POST"]
        assert loc.one("proxy_pass").args == ["https://superlink"]
    assert tree.one("http").one("upstream").one("server").args == ["127.0.0.1:9091"]
    assert sum(d.name == "proxy_pass" for d in tree.walk()) == 2


def test_settings_flowers_http_apis_need(certs, tmp_path):
    http = parse_nginx(render_nginx_config(_settings(certs, tmp_path))).one("http")
    # A FAB (start-run) and a weights chunk (push-object) fit in one body; nginx's default is 1 MB.
    assert (
        _bytes(http.one("client_max_body_size").args[0]) > max(FAB_MAX_SIZE, FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE) + 65536
    )
    # uvicorn speaks HTTP/1.1: keep-alive to the upstream needs 1.1 and an empty Connection header.
    assert http.one("proxy_http_version").args == ["1.1"]
    assert ["Connection", ""] in [d.args for d in http.all("proxy_set_header")]
    # Log streams pass as they come, and a quiet run does not cut `flwr run --stream`.
    assert http.one("proxy_buffering").args == ["off"] and http.one("proxy_request_buffering").args == ["off"]
    admin = _servers(parse_nginx(render_nginx_config(_settings(certs, tmp_path))))["127.0.0.1:9093"]
    (control,) = [loc for loc in admin.all("location") if loc.args[0] == "~"]
    assert _seconds(control.one("proxy_read_timeout").args[0]) >= 3600
    # The SuperLink's certificate is checked against the consortium CA, by a DNS name it lists.
    assert http.one("proxy_ssl_verify").args == ["on"]
    assert http.one("proxy_ssl_trusted_certificate").args == [str(certs.resolve() / "ca.crt")]
    assert http.one("proxy_ssl_name").args == ["localhost"]
    assert http.one("ssl_certificate").args == [str(certs.resolve() / "superlink.crt")]


def test_every_file_nginx_writes_is_under_the_work_directory(certs, tmp_path):
    work = tmp_path / "work"
    tree = parse_nginx(render_nginx_config(_settings(certs, work)))
    writes = {"pid", "error_log", "access_log"} | {d.name for d in tree.walk() if d.name.endswith("_temp_path")}
    found = [d for d in tree.walk() if d.name in writes]
    assert {d.name for d in found} == writes and len(writes) == 8
    assert all(d.args[0].startswith(str(work.resolve()) + "/") for d in found)


def test_allow_lists(certs, tmp_path):
    open_admin = _settings(
        certs, tmp_path, admin_listen="0.0.0.0:9093", admin_allow=("10.1.0.0/16",), bank_allow=("192.0.2.7",)
    )
    servers = _servers(parse_nginx(render_nginx_config(open_admin)))
    rules = {
        listen: [(d.name, d.args[0]) for d in s.block if d.name in ("allow", "deny")] for listen, s in servers.items()
    }
    assert rules["0.0.0.0:9093"] == [
        ("allow", "127.0.0.0/8"),
        ("allow", "::1"),
        ("allow", "10.1.0.0/16"),
        ("deny", "all"),
    ]
    assert rules["0.0.0.0:9092"] == [("allow", "192.0.2.7/32"), ("deny", "all")]
    default = _servers(parse_nginx(render_nginx_config(_settings(certs, tmp_path))))
    assert not default["0.0.0.0:9092"].all("deny")  # banks: the firewall decides
    assert [d.args[0] for d in default["127.0.0.1:9093"].all("deny")] == ["all"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"superlink": "10.0.0.5:9091"}, "not a loopback address"),
        ({"superlink": "0.0.0.0:9091"}, "not a loopback address"),
        ({"admin_listen": "127.0.0.1:9092"}, "three different ports"),
        ({"admin_listen": "0.0.0.0:9093"}, "--admin-allow"),
        ({"admin_listen": "0.0.0.0:9093", "admin_allow": ("10.0.0.0/33",)}, "'10.0.0.0/33' is not an IP address"),
        ({"bank_listen": "superlink.example"}, "is not HOST:PORT"),
        ({"bank_listen": "0.0.0.0:99999"}, "is not HOST:PORT"),
    ],
)
def test_settings_that_cannot_work_are_refused_with_the_fix(certs, tmp_path, change, message):
    with pytest.raises(ProxyError, match=re.escape(message)):
        render_nginx_config(_settings(certs, tmp_path, **change))


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        (["superlink.example"], "is not valid for 127.0.0.1"),  # the ServerApp could not dial the SuperLink
        (["127.0.0.1"], "lists no DNS name"),  # nginx could not verify it
    ],
)
def test_a_certificate_without_loopback_names_is_refused(tmp_path, hosts, message):
    make_credentials(tmp_path / "certs", hosts, [])
    with pytest.raises(ProxyError, match=message) as err:
        render_nginx_config(_settings(tmp_path / "certs", tmp_path))
    assert "fedcredit certs --out" in str(err.value)


def test_fedcredit_certs_adds_the_loopback_names_the_proxy_needs(tmp_path, capsys):
    from fedcredit.cli import main

    assert main(["certs", "--out", str(tmp_path / "certs"), "--host", "superlink.example"]) == 0
    assert certificate_names(tmp_path / "certs" / "superlink.crt") == ["superlink.example", "127.0.0.1", "localhost"]
    assert "proxy_ssl_name localhost;" in render_nginx_config(_settings(tmp_path / "certs", tmp_path))


def test_missing_certificates_name_the_file_and_the_command(tmp_path):
    with pytest.raises(ProxyError, match=r"ca\.crt is missing: .*fedcredit certs --out"):
        render_nginx_config(_settings(tmp_path / "nowhere", tmp_path))


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    proxy_cli.add_arguments(parser)
    return proxy_cli.run(parser.parse_args(list(argv)))


def test_cli_writes_the_file_and_checks_it_with_nginx(certs, tmp_path, capsys):
    out = tmp_path / "coordinator" / "nginx.conf"
    assert _cli("--certs", str(certs), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and (out.parent / "logs").is_dir()
    assert "superlink.example" in printed and "open 9092/tcp" in printed and "--host 127.0.0.1 --port 9091" in printed
    if find_nginx() is None:
        assert "nginx is not installed" in printed
    else:
        assert "nginx -t: the configuration is accepted" in printed
        checked = subprocess.run(nginx_command(out, out.parent, "-t"), capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
    assert _cli("--certs", str(certs), "--out", str(out), "--superlink", "0.0.0.0:9091") == 1
    assert "must listen on 127.0.0.1" in capsys.readouterr().err


# --- live: a real nginx in front of a stand-in SuperLink ------------------------------------------------


@dataclass
class Backend:
    """A TLS HTTP/1.1 server standing in for the SuperLink: it records every request that reaches it."""

    cert: Path
    key: Path
    seen: list[tuple[str, str, int, str | None]] = field(default_factory=list)
    first_chunk_read: threading.Event = field(default_factory=threading.Event)

    def start(self) -> int:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                backend.seen.append((self.command, self.path, len(body), self.headers.get("flwr-signature")))
                if self.path.endswith("/stream-logs"):  # first frame now, the rest once the client has read it
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for part in (b"first", b"second"):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        self.wfile.flush()
                        backend.first_chunk_read.wait(timeout=10)
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.seen]


@dataclass
class Proxy:
    bank: int
    admin: int
    workdir: Path
    ca: Path

    def call(self, port: int, path: str, body: bytes = b"", method: str = "POST", headers: dict | None = None):
        context = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@pytest.fixture()
def live(certs, tmp_path):
    """Start nginx (our configuration) in front of a Backend; yields a function backend -> Proxy."""
    started: list[subprocess.Popen] = []
    backends: list[Backend] = []

    def run(backend: Backend) -> Proxy:
        backends.append(backend)
        port = backend.start()
        proxy = Proxy(_free_port(), _free_port(), tmp_path / "nginx", certs / "ca.crt")
        settings = _settings(
            certs,
            proxy.workdir,
            superlink=f"127.0.0.1:{port}",
            bank_listen=f"127.0.0.1:{proxy.bank}",
            admin_listen=f"127.0.0.1:{proxy.admin}",
        )
        conf = write_nginx_config(settings, proxy.workdir / "nginx.conf")
        proc = subprocess.Popen(nginx_command(conf, proxy.workdir), start_new_session=True, stderr=subprocess.PIPE)
        started.append(proc)
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", proxy.admin), timeout=1).close()
                socket.create_connection(("127.0.0.1", proxy.bank), timeout=1).close()
                return proxy
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen within 20 s"
                time.sleep(0.1)

    yield run
    for proc in started:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    for backend in backends:
        backend.server.shutdown()


@needs_nginx
def test_live_banks_reach_only_the_fleet_api(certs, live):
    backend = Backend(certs / "superlink.crt", certs / "superlink.key")
    proxy = live(backend)
    status, body = proxy.call(proxy.bank, "/v1/fleet/pull-messages", b"x", headers={"flwr-signature": "c2ln"})
    assert (status, body) == (200, b"ok")
    assert backend.seen[-1] == ("POST", "/v1/fleet/pull-messages", 1, "c2ln")  # node-auth headers pass
    weights = os.urandom(FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE + 4096)  # one full weights chunk
    assert proxy.call(proxy.bank, "/v1/fleet/push-object", weights)[0] == 200
    assert backend.seen[-1][2] == len(weights)
    before = list(backend.seen)
    for path in (
        "/v1/control/start-run",
        "/v1/control/register-node",
        "/v1/control/stop-run",
        "/v1/runtime/pull-task-input",
        "/v1/fleet/../control/start-run",  # raw, as sent: nginx matches the normalised path
        "/v1/fleet/%2e%2e/control/start-run",
        "/v1/fleet/..%2fcontrol/start-run",
        "/docs",
        "/openapi.json",
        "/health",
    ):
        status, body = proxy.call(proxy.bank, path, b"{}")
        assert status in (400, 403), (path, status)
    assert proxy.call(proxy.bank, "/v1/fleet/pull-messages", method="GET")[0] == 403
    assert backend.seen == before  # none of them reached the SuperLink
    assert b"Control API is not served on the banks' listener" in proxy.call(proxy.bank, "/v1/control/list-runs")[1]


@needs_nginx
def test_live_admin_listener_reaches_only_the_control_api_and_streams(certs, live):
    backend = Backend(certs / "superlink.crt", certs / "superlink.key")
    proxy = live(backend)
    fab = os.urandom(FAB_MAX_SIZE + 4096)  # the largest FAB flwr sends, in one start-run body
    assert proxy.call(proxy.admin, "/v1/control/start-run", fab)[0] == 200
    assert backend.seen[-1][1:3] == ("/v1/control/start-run", len(fab))
    before = list(backend.seen)
    for path in ("/v1/fleet/pull-messages", "/v1/runtime/pull-task-input", "/docs"):
        assert proxy.call(proxy.admin, path, b"{}")[0] == 403, path
    assert backend.seen == before
    # A log stream's first frame arrives while the SuperLink still holds the response open.
    context = ssl.create_default_context(cafile=str(proxy.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.admin, context=context, timeout=30)
    started = time.monotonic()
    conn.request("POST", "/v1/control/stream-logs", body=b"{}")
    response = conn.getresponse()
    first = response.read1(64)
    waited = time.monotonic() - started
    backend.first_chunk_read.set()
    rest = response.read()
    conn.close()
    assert first == b"first" and rest == b"second" and waited < 5


@needs_nginx
def test_live_body_limit_and_a_superlink_with_another_ca_is_refused(certs, live, tmp_path):
    stranger = make_credentials(tmp_path / "other-ca", ["127.0.0.1", "localhost"], [])
    backend = Backend(stranger.superlink_cert, stranger.superlink_key)
    proxy = live(backend)
    assert proxy.call(proxy.bank, "/v1/fleet/pull-messages", b"x")[0] == 502  # nginx checks the SuperLink's cert
    assert backend.seen == []
    context = ssl.create_default_context(cafile=str(proxy.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.bank, context=context, timeout=30)
    conn.putrequest("POST", "/v1/fleet/push-object")
    conn.putheader("Content-Length", str(64 * 1024**2))  # refused on the header alone: nothing is buffered
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
