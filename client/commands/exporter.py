"""``gpuprof exporter``: serve gpuprofd's metrics to Prometheus over HTTP (client/exporter.py)."""

from __future__ import annotations

import json
import signal
import threading

import click

from .common import endpoint_option, json_option

DEFAULT_LISTEN = "127.0.0.1:9464"


def _address(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    return host.strip("[]") or "0.0.0.0", int(port)


@click.command()
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Where to serve /metrics (0.0.0.0:9464 for every interface).",
)
@json_option
@endpoint_option
def exporter(listen: str, as_json: bool, endpoint: str) -> None:
    """Serve gpuprofd's GPUs and jobs as Prometheus metrics on http://HOST:PORT/metrics.

    Needs no privileges: it asks gpuprofd (a member of its users group may) at every scrape, so gpuprofd
    itself stays off the network. Series: each GPU's energy counter, power, clocks and clock-event
    reasons, its running job and queue; each running or lately ended job's energy; the sampler's misses
    (docs/metrics.md). No user or job names. Runs until SIGTERM or Ctrl-C. With --json it prints one JSON
    line once it listens ({"metrics_url": ..., "endpoint": ...}), for a script that starts it.

    \b
    Examples:
      gpuprof exporter                                   127.0.0.1:9464, the system gpuprofd
      gpuprof exporter --listen 0.0.0.0:9464             reachable from a Prometheus elsewhere
      curl -s localhost:9464/metrics | grep gpuprof_gpu_power_watts
    """
    from prometheus_client import CollectorRegistry, start_http_server

    from ..exporter import GpuprofCollector

    host, port = _address(listen)
    registry = CollectorRegistry()
    registry.register(GpuprofCollector(endpoint))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    url = f"http://{host}:{server.server_port}/metrics"
    if as_json:
        click.echo(json.dumps({"metrics_url": url, "endpoint": endpoint}))
    click.echo(f"serving gpuprofd's metrics ({endpoint}) on {url}", err=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(timeout=5)
