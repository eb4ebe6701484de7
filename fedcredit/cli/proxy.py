"""`fedcredit proxy --certs DIR --out FILE`: the nginx configuration that keeps the Control API away from banks.

Writes FILE (a whole nginx.conf), creates WORKDIR/logs and WORKDIR/tmp, and,
when nginx is installed, checks the file with `nginx -t`. Exit code 0 when
the file is written (and accepted), 1 when a setting cannot work or nginx
rejects the file (the message says which and how to fix it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from fedcredit.deploy.proxy import (
    ADMIN_LISTEN,
    BANK_LISTEN,
    SUPERLINK,
    ProxyError,
    ProxySettings,
    certificate_names,
    find_nginx,
    nginx_command,
    write_nginx_config,
)

EXAMPLE = "fedcredit proxy --certs certs --out coordinator/nginx.conf"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--certs", required=True, help="the `fedcredit certs --out` directory (ca.crt, superlink.*)")
    parser.add_argument("--out", required=True, help="the nginx configuration file to write")
    parser.add_argument(
        "--workdir", default="", help="nginx's pid file, logs/ and tmp/ (default: the directory of --out)"
    )
    parser.add_argument("--superlink", default=SUPERLINK, help="where flower-superlink listens, loopback only")
    parser.add_argument(
        "--bank-listen",
        default=BANK_LISTEN,
        help="the banks' listener: Fleet API only; the port banks dial",
    )
    parser.add_argument(
        "--admin-listen",
        default=ADMIN_LISTEN,
        help="the admin listener: Control API only, for flwr run/stop/supernode",
    )
    parser.add_argument(
        "--admin-allow",
        action="append",
        default=[],
        help="an address or network besides loopback that may use the admin listener (repeat for each)",
    )
    parser.add_argument(
        "--bank-allow",
        action="append",
        default=[],
        help="an address or network that may use the banks' listener, repeat for each (default: any, the firewall decides)",
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    settings = ProxySettings(
        certs=Path(args.certs),
        workdir=Path(args.workdir).resolve() if args.workdir else out.parent,
        superlink=args.superlink,
        bank_listen=args.bank_listen,
        admin_listen=args.admin_listen,
        admin_allow=tuple(args.admin_allow),
        bank_allow=tuple(args.bank_allow),
    )
    try:
        superlink, bank, admin = settings.check()
        write_nginx_config(settings, out)
    except (ProxyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    nginx = find_nginx()
    start = nginx_command(out, settings.workdir, nginx=nginx or "nginx")
    if nginx is None:
        print("nginx is not installed here: install it (apt-get install nginx), then check the file with -t")
    else:
        checked = subprocess.run([*start, "-t"], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            print(f"error: nginx rejects {out}:\n{checked.stderr.strip()}", file=sys.stderr)
            return 1
        print("nginx -t: the configuration is accepted")
    print(f"start nginx:      {' '.join(start)}")
    print(
        f"start SuperLink:  flower-superlink --host {superlink.host} --port {superlink.port} "
        f"--ssl-ca-certfile {settings.ca_cert} --ssl-certfile {settings.cert} --ssl-keyfile {settings.key} "
        "--enable-supernode-auth --disable-runtime-dependency-installation"
    )
    names = [n for n in certificate_names(settings.cert) if n not in ("127.0.0.1", "localhost", "::1")]
    print(
        f"banks' listener {bank} (Fleet API only): banks dial {' or '.join(names) or 'this host'} port {bank.port}; "
        f"open {bank.port}/tcp to the banks' addresses, and no other port"
    )
    print(
        f"admin listener {admin} (Control API only): flwr run / stop / supernode register from the coordinator host "
        "(or an --admin-allow address, or an SSH tunnel), Flower connection with root-certificates ca.crt"
    )
    return 0
