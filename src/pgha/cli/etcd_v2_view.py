"""`pgha etcd-v2-view`: etcd v2's read-only keys API answered from etcd v3 keys, for vip-manager 1.x
(src/pgha/dcs/etcd_v2_view.py).

It needs no cluster config: only where to listen and etcd's client URLs. `register(cli)` adds it to the `pgha`
group (one line in main.py).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import urllib.parse

import click

from pgha.cli.errors import CliError


def _host_port(text: str, default_port: int | None) -> tuple[str, int]:
    """"host:port", "[v6]:port" (or the bare host when ``default_port``): ValueError saying what is wrong."""
    split = urllib.parse.urlsplit("//" + text)
    try:
        host, port = split.hostname, split.port
    except ValueError:
        raise ValueError("the port must be a number from 0 to 65535") from None
    if not host or split.path or split.query or split.fragment or split.username is not None:
        raise ValueError("expected HOST:PORT")
    if port is None:
        if default_port is None:
            raise ValueError("expected HOST:PORT (no port given)")
        port = default_port
    return host, port


def parse_listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return _host_port(value, None)
    except ValueError as e:
        raise click.BadParameter(f"{value!r}: {e}", ctx, param) from None


def parse_etcd(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, list]:
    """(scheme, [(host, port), ...]) of the --etcd URLs: http or https (one for all), no path, no credentials."""
    schemes, hosts = set(), []
    for value in values:
        split = urllib.parse.urlsplit(value)
        if "@" in split.netloc:  # never echo it: it may hold a password
            raise click.BadParameter("credentials in the URL are not accepted: use --username and "
                                     "PGHA_ETCD_PASSWORD", ctx, param)
        if split.scheme not in ("http", "https"):
            raise click.BadParameter(f"{value!r}: expected http://HOST[:PORT] or https://HOST[:PORT]", ctx, param)
        if split.path not in ("", "/") or split.query or split.fragment:
            raise click.BadParameter(f"{value!r}: a client URL has no path or query", ctx, param)
        try:
            host, port = _host_port(split.netloc, 2379)
        except ValueError as e:
            raise click.BadParameter(f"{value!r}: {e}", ctx, param) from None
        schemes.add(split.scheme)
        hosts.append((f"[{host}]" if ":" in host else host, port))
    if len(schemes) > 1:
        raise click.BadParameter("all URLs must use the same scheme (http or https)", ctx, param)
    return schemes.pop(), hosts


@click.command("etcd-v2-view")
@click.option("--listen", required=True, callback=parse_listen, metavar="HOST:PORT",
              help="where to serve the view (e.g. 127.0.0.1:2381, beside vip-manager)")
@click.option("--etcd", "etcd", required=True, multiple=True, callback=parse_etcd, metavar="URL",
              help="an etcd client URL, http[s]://HOST[:2379] (repeatable: failover in order)")
@click.option("--timeout", default=0.9, show_default=True, type=click.FloatRange(0.1, 60),
              help="seconds each read may take across all the etcd URLs, then 503 (vip-manager 1.x waits 1 s)")
@click.option("--cacert", type=click.Path(exists=True, dir_okay=False), help="CA bundle for https etcd URLs")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="client certificate for etcd")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="the client certificate's key")
@click.option("--username", help="etcd user (its password from the environment variable PGHA_ETCD_PASSWORD)")
@click.option("-v", "--verbose", is_flag=True, help="log every request and its status")
def etcd_v2_view(listen: tuple[str, int], etcd: tuple[str, list], timeout: float, cacert: str | None,
                 cert: str | None, key: str | None, username: str | None, verbose: bool) -> None:
    """Serve etcd v2's GET /v2/keys/<key> (read-only) from the etcd v3 key of the same name, for vip-manager 1.x,
    which reads only v2 keys (SIGTERM stops it)."""
    import os
    from pgha.dcs.etcd3_client import Etcd3Client
    from pgha.dcs.etcd_v2_view import EtcdV2View, etcd_reader
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s", stream=sys.stderr)
    scheme, hosts = etcd
    if key and not cert:
        raise click.BadParameter("needs --cert as well", param_hint="'--key'")
    if (cacert or cert) and scheme != "https":
        raise click.BadParameter("TLS options need https:// etcd URLs", param_hint="'--etcd'")
    password = os.environ.get("PGHA_ETCD_PASSWORD")
    if password is not None and not username:
        raise click.BadParameter("PGHA_ETCD_PASSWORD is set: give the user's name as well", param_hint="'--username'")
    client = Etcd3Client(hosts, protocol=scheme, username=username or None, password=password, cacert=cacert,
                         cert=cert, key=key, timeout=timeout)
    try:
        view = EtcdV2View(etcd_reader(client), *listen, timeout=max(timeout, 5.0), log_requests=verbose)
    except OSError as e:
        raise CliError(f"--listen {listen[0]}:{listen[1]}: cannot listen: {e.strerror or e}") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    view.start()
    logging.info("etcd v2 view on %s, reading v3 keys from %s", view.url, ", ".join(client.endpoints))
    try:
        while not stop.wait(1.0):
            pass
    finally:
        view.stop()


def register(group: click.Group) -> None:
    group.add_command(etcd_v2_view)
