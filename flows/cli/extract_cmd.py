"""`sae-sweep extract` and `sae-sweep import-activations`: build an activation store.

Both print the store's path as the last line of standard output (scripts take it with `tail -1`);
the progress bar, with tokens/s, goes to standard error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.app import ConfigOpt, PresetOpt, SetOpt, app, resolve_config


@app.command("extract")
def extract(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Remove the store first and extract it again (a corrupt one).")
    ] = False,
) -> None:
    """Extract the configured layer's residual stream into `data_root/activations/<key>/`
    (returns at once when that store exists and its checksums match; resumes an interrupted one)."""
    cfg = resolve_config(preset, config, set_, command="extract")
    from sae_core.extraction import extract_activations
    from sae_core.io import check_writable
    from sae_core.progress import TqdmProgress
    from tasks.paths import data_root

    check_writable(data_root(cfg))
    with TqdmProgress("extracting", unit="doc") as bar:
        path = extract_activations(cfg, bar, force=force)
    typer.echo(str(path))


@app.command("import-activations")
def import_activations(
    chunk_dir: Annotated[Path, typer.Argument(help="Folder of the study's chunk_<k>.pt files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store directory to create.")],
    store_dtype: Annotated[str, typer.Option(help="float16 or float32 on disk.")] = "float16",
    model: Annotated[str, typer.Option(help="Model the chunks came from (recorded).")] = "gpt2",
    layer: Annotated[int, typer.Option(help="hidden_states index the chunks hold (recorded).")] = 6,
    drop_first_token: Annotated[
        bool, typer.Option(help="Reading default: leave out each document's first token.")
    ] = True,
    shard_tokens: Annotated[int, typer.Option(help="Rows per Parquet shard.")] = 262_144,
) -> None:
    """Convert the original study's `.pt` chunks (activations, token ids, attention masks) into a store."""
    from sae_core.progress import TqdmProgress
    from sae_core.store import import_pt_chunks

    with TqdmProgress("importing", unit="tok") as bar:
        path = import_pt_chunks(
            chunk_dir,
            out,
            store_dtype=store_dtype,
            model_name=model,
            layer=layer,
            drop_first_token=drop_first_token,
            shard_tokens=shard_tokens,
            progress=bar,
        )
    typer.echo(str(path))
