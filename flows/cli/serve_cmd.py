"""`sae-sweep serve`: data_root over http, read-only, so the Prefect UI's report links open."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.app import ConfigOpt, PresetOpt, SetOpt, app, resolve_config
from sae_core.serve import DEFAULT_HOST, DEFAULT_PORT, SERVE_URL_ENV


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = DEFAULT_PORT,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Interface to bind; the loopback default keeps the results off the network."
        ),
    ] = DEFAULT_HOST,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Serve the config's data_root read-only (GET/HEAD only, no hidden files) until Ctrl-C."""
    from sae_core.serve import make_server
    from tasks.paths import data_root

    root = data_root(resolve_config(preset, config, set_, command="serve"))
    server = make_server(root, host, port)
    bound_host, bound_port = server.server_address[:2]
    typer.echo(f"serving {root} read-only at http://{bound_host}:{bound_port}/ (Ctrl-C stops)")
    if bound_port != DEFAULT_PORT or bound_host != DEFAULT_HOST:
        typer.echo(
            f"the sweep's artifacts link to http://{DEFAULT_HOST}:{DEFAULT_PORT}/: set "
            f"{SERVE_URL_ENV}=http://{bound_host}:{bound_port}/ where the flow runs"
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
