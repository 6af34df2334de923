"""The ``gpuprofd`` command: serve, and check a configuration before serving it."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from gpuprof.client.wire.command import run_command
from gpuprof.client.wire.errors import GpuprofError

from .config import DEFAULT_CONFIG, DaemonConfig, load_config

_JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=str))


_CONFIG_OPTION = click.option(
    "--config", "config_path", help=f"TOML configuration (default {DEFAULT_CONFIG} if present)."
)
_FLAGS = [
    _CONFIG_OPTION,
    click.option(
        "--simulate", is_flag=True, default=None, help="Use gpuprof's simulated GPUs instead of the driver's."
    ),
    click.option("--state-dir", help="Where jobs, results and traces are kept (default /var/lib/gpuprof)."),
    click.option(
        "--endpoint", help="Local request socket, ipc:// (default ipc:///run/gpuprof/gpuprofd.sock)."
    ),
    click.option(
        "--allow-dvfs",
        is_flag=True,
        default=None,
        help="Let jobs change clocks (allow_dvfs); for a daemon of your own, which only you use.",
    ),
]


def _with_config(function: Callable[..., None], flags: int = len(_FLAGS)) -> Callable[..., None]:
    """The command with the first ``flags`` flags above, called with the configuration they and the file
    make (and with ``as_json`` where the command has --json)."""

    @functools.wraps(function)
    def command(config_path: str | None, **overrides: Any) -> None:
        own = {key: overrides.pop(key) for key in ("as_json",) if key in overrides}
        function(load_config(config_path, overrides), **own)

    for flag in reversed(_FLAGS[:flags]):
        command = flag(command)
    return command


def _with_state(function: Callable[..., None]) -> Callable[..., None]:
    """The command with --config, --simulate and --state-dir only: it runs no socket and no job."""
    return _with_config(function, flags=3)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gpuprof", prog_name="gpuprofd")
def cli() -> None:
    """gpuprofd, the gpuprof daemon that owns a node's GPUs.

    It samples every configured GPU continuously, runs submitted jobs one at a time per GPU in worker
    processes, and keeps every job's trace and energy result in its state directory. Flags override the
    TOML configuration.

    \b
    Examples:
      gpuprofd serve --simulate --endpoint ipc:///tmp/gpuprof/d.sock --state-dir /tmp/gpuprof/state
      gpuprofd check-config --config /etc/gpuprof/gpuprofd.toml
      gpuprofd reset-clocks                 put back clocks a crashed daemon left changed
      gpuprofd keys add alice alice.key     let alice connect over tcp_endpoint with her key
    """


@cli.command()
@_with_config
def serve(config: DaemonConfig) -> None:
    """Serve requests and run jobs until SIGTERM or SIGINT (the systemd unit runs it as root).

    \b
    Examples:
      gpuprofd serve                                  /etc/gpuprof/gpuprofd.toml, the driver's GPUs
      gpuprofd serve --simulate --endpoint ipc:///tmp/gpuprof/d.sock --state-dir /tmp/gpuprof/state
      GPUPROF_ENDPOINT=ipc:///tmp/gpuprof/d.sock gpuprof submit examples/burn.yaml   (then, elsewhere)
    """
    from .server.daemon import Daemon

    logging.basicConfig(level=logging.INFO, format="gpuprofd: %(levelname)s: %(message)s", stream=sys.stderr)
    Daemon(config).serve()


@cli.command("check-config")
@_with_config
@_JSON_OPTION
def check_config(config: DaemonConfig, as_json: bool) -> None:
    """Validate the configuration and print what gpuprofd would use.

    \b
    Examples:
      gpuprofd check-config
      gpuprofd check-config --config systemd/gpuprofd.toml --allow-dvfs
    """
    if as_json:
        extra = {"publish_endpoint": config.publish_endpoint}
        if config.tcp_endpoint:
            extra["tcp_publish_endpoint"] = config.tcp_publish_endpoint
        _echo_json({**vars(config), **extra, "ok": True})
        return
    for key, value in vars(config).items():
        click.echo(f"{key} = {value!r}")
    click.echo(f"publish_endpoint = {config.publish_endpoint!r}")
    if config.tcp_endpoint:
        click.echo(f"tcp_publish_endpoint = {config.tcp_publish_endpoint!r}")
    click.echo("configuration OK")


@cli.command("reset-clocks")
@_with_state
@_JSON_OPTION
def reset_clocks(config: DaemonConfig, as_json: bool) -> None:
    """Put back every clock and power limit gpuprofd changed and has not reset (its journal).

    The systemd unit runs this after the daemon stops, however it stopped; gpuprofd also does it
    itself when it starts. GPUs it never changed are not touched.

    \b
    Examples:
      gpuprofd reset-clocks                                  the system daemon's journal
      gpuprofd reset-clocks --simulate --state-dir /tmp/gpuprof/state
    """
    from gpuprof.sampler.library import resolve

    from .server.clocks import ClockControl, ClockJournal

    journal = ClockJournal(config.state_dir)
    if not journal.load():
        if as_json:
            _echo_json({"journal": str(journal.path), "reset": [], "left": []})
        else:
            click.echo(f"nothing to reset ({journal.path} lists no changed GPU)")
        return
    lines = ClockControl(resolve(simulate=config.simulate), journal).reset_all()
    left = sorted(journal.load())
    if as_json:
        _echo_json({"journal": str(journal.path), "reset": lines, "left": left})
    else:
        for line in lines:
            click.echo(line)
    if left:  # an entry leaves the journal only once its GPU is reset
        raise GpuprofError(f"some GPUs could not be reset; they stay listed in {journal.path}")


@cli.group()
def keys() -> None:
    """Remote clients' CURVE keys: who may connect over tcp_endpoint, and the daemon's own keypair.

    A remote user runs `gpuprof keygen` and sends you their client.key (the public half); you register
    it for their account on this node. They need the daemon's public key in return: `keys server`
    prints where it is.

    \b
    Examples:
      gpuprofd keys add alice /tmp/alice-client.key
      gpuprofd keys list
      gpuprofd keys remove alice
      gpuprofd keys server
    """


def _key_store(config_path: str | None) -> Any:
    from .server.keys import KeyStore

    return KeyStore(load_config(config_path, {}).keys_dir)


@keys.command("add")
@click.argument("user")
@click.argument("key_file", type=click.Path(dir_okay=False))
@_CONFIG_OPTION
@_JSON_OPTION
def keys_add(user: str, key_file: str, config_path: str | None, as_json: bool) -> None:
    """Let USER connect over tcp with the public key in KEY_FILE (replaces USER's previous key)."""
    written = _key_store(config_path).add(user, key_file)
    if as_json:
        _echo_json({"user": user, "key_file": str(written)})
        return
    click.echo(f"registered {user}'s key: {written} (a running gpuprofd uses it for new connections)")


@keys.command("remove")
@click.argument("user")
@_CONFIG_OPTION
@_JSON_OPTION
def keys_remove(user: str, config_path: str | None, as_json: bool) -> None:
    """Stop USER connecting over tcp (connections already open stay until they close)."""
    removed = _key_store(config_path).remove(user)
    if as_json:
        _echo_json({"user": user, "removed": str(removed)})
        return
    click.echo(f"removed {removed}")


@keys.command("list")
@_CONFIG_OPTION
@_JSON_OPTION
def keys_list(config_path: str | None, as_json: bool) -> None:
    """Every registered user and their public key."""
    store = _key_store(config_path)
    entries = store.entries()
    if as_json:
        _echo_json(
            {"directory": str(store.directory),
             "keys": [{"user": e.user, "public_key": e.public_key, "path": str(e.path)} for e in entries]}
        )  # fmt: skip
        return
    for entry in entries:
        click.echo(f"{entry.user:<24} {entry.public_key}  {entry.path}")
    if not entries:
        click.echo(f"no keys in {store.directory}")


@keys.command("server")
@_CONFIG_OPTION
@_JSON_OPTION
def keys_server(config_path: str | None, as_json: bool) -> None:
    """Make the daemon's keypair if there is none, and print its public file for clients."""
    from .server.keys import public_file, server_keypair

    config = load_config(config_path, {})
    public, _secret = server_keypair(config.server_key, create=True)
    if as_json:
        _echo_json({"public_key_file": str(public_file(config.server_key)), "public_key": public.decode()})
        return
    click.echo(f"{public_file(config.server_key)}  (public key {public.decode()})")
    click.echo("clients put it at ~/.config/gpuprof/servers/HOST.key or point GPUPROF_SERVER_KEY at it")


def main(argv: list[str] | None = None) -> int:
    """Run the daemon's command line."""
    return run_command(cli, argv, "gpuprofd")


if __name__ == "__main__":
    sys.exit(main())
