"""``gpuprof keygen``: the CURVE keypair a remote client connects to gpuprofd with."""

from __future__ import annotations

import click

from ..keys import config_dir
from ..keys import keygen as make_keys
from .common import echo_json, json_option


@click.command()
@click.option("--force", is_flag=True, help="Replace an existing keypair (then register the new one).")
@json_option
def keygen(force: bool, as_json: bool) -> None:
    """Make your keypair for connecting to a gpuprofd over tcp.

    Writes client.key (public) and client.key_secret (private, mode 0600) in ~/.config/gpuprof.
    Send client.key to the node's admin, who runs `gpuprofd keys add YOUR_USER client.key`, and put the
    daemon's public key they give you at ~/.config/gpuprof/servers/HOST.key. Local users (ipc) need no keys.

    \b
    Example:
      gpuprof keygen && gpuprof status --endpoint tcp://node7:5555
    """
    public, secret = make_keys(config_dir(), force=force)
    if as_json:
        echo_json({"public_key_file": str(public), "secret_key_file": str(secret)})
        return
    click.echo(f"public key {public}: send this file to the node's admin")
    click.echo(f"secret key {secret}: keep it; it names you to the daemon")
