"""nginx in front of the SuperLink, so that only the coordinator can submit runs (`fedcredit proxy`).

Flower 1.42's SuperLink serves three HTTP APIs on one port (uvicorn, HTTP/1.1,
protobuf bodies): the Fleet API under `/v1/fleet/` (SuperNodes), the Control
API under `/v1/control/` (`flwr run`, `flwr supernode register`, `flwr stop`)
and the Runtime API under `/v1/runtime/` (the ServerApp). The open-source
SuperLink does not authenticate Control API callers: anyone who reaches the
port with `ca.crt` could submit an app whose ClientApp then runs inside every
bank. So the SuperLink listens on loopback only and nginx, with the
consortium certificate, exposes

- the banks' listener: the Fleet API only (everything else answers 403);
- the admin listener: the Control API only, on loopback or the addresses the
  consortium lists;
- the Runtime API nowhere (the ServerApp dials the SuperLink on loopback).

The written file is a whole nginx configuration that a non-root user can run
(`nginx -c FILE -p WORKDIR -e WORKDIR/logs/error.log`): pid, logs and temp
directories live under the work directory.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

# Default ports: Flower's historical ones (9091 ServerApp side, 9092 Fleet, 9093 Control).
SUPERLINK = "127.0.0.1:9091"
BANK_LISTEN = "0.0.0.0:9092"
ADMIN_LISTEN = "127.0.0.1:9093"

# A FAB is at most 10 MB (flwr.common.constant.FAB_MAX_SIZE) and goes up in one `start-run` body; model
# weights go up in chunks of at most 5 MiB (FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE). nginx's default is 1 MB.
MAX_BODY = "32m"
# `flwr run --stream` / `flwr log` hold one response open for the whole run and the SuperLink sends nothing
# while the ServerApp is silent (a long training round): nginx's 60 s default would cut the stream.
CONTROL_READ_TIMEOUT = "24h"
# Fleet calls are short (the SuperNode's own timeout is 30 s); generous for a slow bank link moving weights.
FLEET_TIMEOUT = "300s"

FLEET_PATH = "/v1/fleet/"
CONTROL_PATH = "/v1/control/"
RUNTIME_PATH = "/v1/runtime/"


class ProxyError(ValueError):
    """A proxy setting that cannot work; the message says which and how to fix it."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> Endpoint:
        """`HOST:PORT` or `[IPv6]:PORT`."""
        host, sep, port = text.strip().rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ProxyError(f"{what} {text!r} is not HOST:PORT (e.g. 127.0.0.1:9091 or [::1]:9091)")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _networks(entries: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Validate allow-list entries (addresses or CIDR networks) so that nginx never sees a typo."""
    out = []
    for entry in entries:
        try:
            out.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError as err:
            raise ProxyError(
                f"{what} {entry!r} is not an IP address or network (e.g. 10.0.0.5 or 10.1.0.0/16)"
            ) from err
    return tuple(out)


@dataclass(frozen=True)
class ProxySettings:
    """Everything the nginx configuration depends on; `check()` refuses settings that cannot work."""

    certs: Path  # holds ca.crt, superlink.crt and superlink.key (`fedcredit certs --out`)
    workdir: Path  # nginx's pid file, logs and temp files
    superlink: str = SUPERLINK
    bank_listen: str = BANK_LISTEN
    admin_listen: str = ADMIN_LISTEN
    admin_allow: tuple[str, ...] = ()  # beyond loopback: who may reach the admin listener
    bank_allow: tuple[str, ...] = ()  # empty: every address (the firewall decides)
    max_body: str = MAX_BODY

    @property
    def ca_cert(self) -> Path:
        return Path(self.certs).resolve() / "ca.crt"

    @property
    def cert(self) -> Path:
        return Path(self.certs).resolve() / "superlink.crt"

    @property
    def key(self) -> Path:
        return Path(self.certs).resolve() / "superlink.key"

    def endpoints(self) -> tuple[Endpoint, Endpoint, Endpoint]:
        """(SuperLink, banks' listener, admin listener), validated."""
        superlink = Endpoint.parse(self.superlink, "--superlink")
        bank = Endpoint.parse(self.bank_listen, "--bank-listen")
        admin = Endpoint.parse(self.admin_listen, "--admin-listen")
        if not superlink.loopback:
            raise ProxyError(
                f"--superlink {superlink} is not a loopback address: behind the proxy the SuperLink must listen on "
                "127.0.0.1 (flower-superlink --host 127.0.0.1), or its Control API stays open to the banks"
            )
        if len({superlink.port, bank.port, admin.port}) < 3:
            raise ProxyError(
                f"the SuperLink ({superlink}), the banks' listener ({bank}) and the admin listener ({admin}) "
                "need three different ports"
            )
        if not admin.loopback and not self.admin_allow:
            raise ProxyError(
                f"--admin-listen {admin} is reachable from other machines: list who may submit runs with "
                "--admin-allow ADDRESS (repeat for each), or listen on 127.0.0.1 and use an SSH tunnel"
            )
        return superlink, bank, admin

    def check(self) -> tuple[Endpoint, Endpoint, Endpoint]:
        """Validate addresses and certificate files; returns the endpoints."""
        endpoints = self.endpoints()
        _networks(self.admin_allow, "--admin-allow")
        _networks(self.bank_allow, "--bank-allow")
        for path in (self.ca_cert, self.cert, self.key):
            if not path.is_file():
                raise ProxyError(
                    f"{path} is missing: create the consortium's files with "
                    f"`fedcredit certs --out {self.certs} --host <name banks dial>`"
                )
        backend_name(self.cert, endpoints[0])
        return endpoints


def certificate_names(cert: Path) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    loaded = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    try:
        sans = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in sans]


def backend_name(cert: Path, superlink: Endpoint) -> str:
    """The name nginx checks the SuperLink's certificate against.

    The ServerApp dials the SuperLink at its loopback address and verifies it with
    ca.crt, so superlink.crt must list that address. nginx (1.22) matches only DNS
    names when it verifies an upstream, so the certificate must list a DNS name
    too; `localhost` is preferred, any other works (nginx dials the address).
    """
    names = certificate_names(cert)
    fix = (
        f"rerun `fedcredit certs --out {Path(cert).parent} --host <name banks dial>` (it adds 127.0.0.1 and localhost)"
    )
    address = "127.0.0.1" if superlink.host == "localhost" else superlink.host
    if address not in names and superlink.host not in names:
        raise ProxyError(f"{cert} is not valid for {superlink.host} (it lists {names}); the ServerApp dials it: {fix}")
    dns = [n for n in names if not _is_ip(n)]
    if not dns:
        raise ProxyError(f"{cert} lists no DNS name (only {names}); nginx verifies the SuperLink by name: {fix}")
    return "localhost" if "localhost" in dns else dns[0]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _listen(endpoint: Endpoint) -> str:
    return f"listen {endpoint} ssl;"


def _access(allow: tuple[str, ...], loopback: bool) -> str:
    if not allow and not loopback:
        return ""
    rules = (["allow 127.0.0.0/8;", "allow ::1;"] if loopback else []) + [f"allow {n};" for n in allow]
    return "\n        ".join([*rules, "deny all;"])


def _refuse(api: str, where: str) -> str:
    return f'return 403 "fedcredit proxy: the {api} is not served on {where}\\n";'


def render_nginx_config(settings: ProxySettings) -> str:
    """The whole nginx.conf text for `settings` (validated first)."""
    superlink, bank, admin = settings.check()
    work = Path(settings.workdir).resolve()
    name = backend_name(settings.cert, superlink)
    bank_access = _access(_networks(settings.bank_allow, "--bank-allow"), loopback=False)
    admin_access = _access(_networks(settings.admin_allow, "--admin-allow"), loopback=True)
    return f"""# Written by `fedcredit proxy`: nginx in front of a Flower 1.42 SuperLink (see docs/deployment.md).
# Start:  nginx -c THIS_FILE -p {work} -e {work}/logs/error.log
# Check:  nginx -t -c THIS_FILE -p {work} -e {work}/logs/error.log
# SuperLink: flower-superlink --host {superlink.host} --port {superlink.port} (TLS, --enable-supernode-auth)

daemon off;                       # stays in the foreground: run it under systemd or a supervisor
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/logs/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    # Paths under the work directory, so that a non-root user can run it.
    client_body_temp_path {work}/tmp/client_body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;

    log_format fedcredit '$remote_addr [$time_local] $server_port "$request" $status req=$request_length '
                         'sent=$body_bytes_sent upstream=$upstream_status $request_time';
    access_log {work}/logs/access.log fedcredit;
    server_tokens off;

    # TLS for banks and admins, with the consortium certificate (`fedcredit certs`).
    ssl_certificate {settings.cert};
    ssl_certificate_key {settings.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:fedcredit:10m;

    # FAB (<= 10 MB) in `start-run`, weight chunks (<= 5 MiB) in `push-object`; nginx's default is 1 MB.
    client_max_body_size {settings.max_body};

    # The SuperLink: uvicorn on loopback, HTTP/1.1 with keep-alive, TLS checked against the consortium CA.
    upstream superlink {{
        server {superlink};
        keepalive 16;
    }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto https;
    proxy_ssl_trusted_certificate {settings.ca_cert};
    proxy_ssl_verify on;
    proxy_ssl_name {name};
    proxy_ssl_session_reuse on;
    proxy_connect_timeout 10s;
    # Requests and responses (log streams, weights) pass straight through: nothing waits in nginx's buffers or
    # on its disk, so no temp file is written (workers of a root-started nginx run as nobody and could not).
    proxy_buffering off;
    proxy_request_buffering off;

    # Banks' listener: the Fleet API only. Open this port (and only this one) to the banks.
    server {{
        {_listen(bank)}
        {bank_access}
        location ~ ^/v1/fleet/[A-Za-z0-9_-]+$ {{
            limit_except POST {{ deny all; }}
            proxy_read_timeout {FLEET_TIMEOUT};
            proxy_send_timeout {FLEET_TIMEOUT};
            proxy_pass https://superlink;
        }}
        location {CONTROL_PATH} {{ {_refuse("Control API", "the banks' listener")} }}
        location {RUNTIME_PATH} {{ {_refuse("Runtime API", "any listener")} }}
        location / {{ {_refuse("path", "the banks' listener")} }}
    }}

    # Admin listener: the Control API (flwr run, flwr stop, flwr supernode register) for the coordinator only.
    server {{
        {_listen(admin)}
        {admin_access}
        location ~ ^/v1/control/[A-Za-z0-9_-]+$ {{
            limit_except POST {{ deny all; }}
            proxy_read_timeout {CONTROL_READ_TIMEOUT};
            proxy_send_timeout {FLEET_TIMEOUT};
            proxy_pass https://superlink;
        }}
        location {FLEET_PATH} {{ {_refuse("Fleet API", "the admin listener")} }}
        location {RUNTIME_PATH} {{ {_refuse("Runtime API", "any listener")} }}
        location / {{ {_refuse("path", "the admin listener")} }}
    }}
}}
"""


def write_nginx_config(settings: ProxySettings, out: Path) -> Path:
    """Write the configuration and create the work directory's logs/ and tmp/; returns `out`."""
    text = render_nginx_config(settings)
    work = Path(settings.workdir).resolve()
    for sub in ("logs", "tmp"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def find_nginx() -> str | None:
    """The nginx binary: $FEDCREDIT_NGINX, then PATH, then /usr/sbin (not on a non-root user's PATH)."""
    for candidate in (os.environ.get("FEDCREDIT_NGINX"), shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_nginx() -> str:
    """The nginx binary, or a ProxyError that says how to install it."""
    nginx = find_nginx()
    if nginx is None:
        raise ProxyError(
            "nginx is not installed: install it from the OS packages (Debian/Ubuntu: apt-get install nginx; "
            "the system service need not run), or set FEDCREDIT_NGINX to the binary"
        )
    return nginx


def nginx_command(config: Path, workdir: Path, *extra: str, nginx: str | None = None) -> list[str]:
    """`nginx -c CONFIG -p WORKDIR -e WORKDIR/logs/error.log [extra]` (-e keeps it off /var/log at start-up)."""
    work = Path(workdir).resolve()
    return [
        nginx or require_nginx(),
        "-c",
        str(Path(config).resolve()),
        "-p",
        str(work),
        "-e",
        str(work / "logs" / "error.log"),
        *extra,
    ]
