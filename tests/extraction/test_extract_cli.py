"""`sae-sweep extract`: the store path is the last line of stdout, progress with tokens/s on stderr."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flows.cli import main
from sae_core.store import ActivationStore


def test_cli_extract_prints_the_store_last_and_shows_progress(tmp_path, capsys, tiny_gpt2, tiny_corpus):
    sets = [
        f"data_root={tmp_path}",
        f"model.name={tiny_gpt2}",
        "model.layer=0",
        "data.dataset=json",
        f"data.data_files={tiny_corpus}",
        "data.num_documents=20",
        "data.context_length=64",
    ]
    argv = ["extract", "--preset", "demo"] + [x for s in sets for x in ("--set", s)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    path = captured.out.strip().splitlines()[-1]
    store = ActivationStore.open(path)
    assert store.manifest["model"]["layer"] == 0 and "embeddings" in store.manifest["model"]["layer_meaning"]
    assert "tok/s" in captured.err
    assert np.all([len(t) <= 64 for t in store.documents("train").values()])
    assert main([*argv[:-2], "--set", "model.layer=9"]) == 2
    assert "model.layer" in capsys.readouterr().err


def test_a_corrupt_store_is_named_and_force_rebuilds_it(tmp_path, capsys, tiny_gpt2, tiny_corpus):
    """A truncated shard was answered 'store already complete', with no way to rebuild (issue 20 item 8)."""
    sets = [
        f"data_root={tmp_path}",
        f"model.name={tiny_gpt2}",
        "model.layer=1",
        "data.dataset=json",
        f"data.data_files={tiny_corpus}",
        "data.num_documents=20",
        "data.context_length=64",
    ]
    argv = ["extract", "--preset", "demo"] + [x for s in sets for x in ("--set", s)]
    assert main(argv) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    shard = sorted(Path(path).glob("part-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated, as by a full disk or an interrupted copy
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and f"shard {shard} does not match its checksum" in err[0], err
    assert "sae-sweep extract --force" in err[0]
    assert main([*argv, "--force"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == path
    assert main(argv) == 0  # verified again, and whole
    assert ActivationStore.open(path).manifest["shards"]
