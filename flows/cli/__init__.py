"""The `sae-sweep` command line. Each command group lives in its own module and registers on `app`.

Errors caused by the user's input (`SaeSweepError`, and an `OSError` of a full or read-only disk) print
as one line on standard error and exit 2; anything else is a bug and keeps its traceback. SIGTERM and
SIGINT end any command within seconds, its child processes with it (`flows.cli.stopping`).
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

from flows.cli import stopping
from flows.cli.app import app
from sae_core.errors import SaeSweepError
from sae_core.io import storage_error

# Command modules; each imports `app` and registers its commands. Heavy imports (torch, prefect)
# happen inside the commands so that `--help` and `config show` stay fast.
_COMMAND_MODULES = [
    "flows.cli.config_cmd",
    "flows.cli.plan_cmd",
    "flows.cli.run_cmd",
    "flows.cli.extract_cmd",
    "flows.cli.train_cmd",
    "flows.cli.analyze_cmd",
    "flows.cli.check_cmd",
    "flows.cli.label_cmd",
    "flows.cli.report_cmd",
    "flows.cli.serve_cmd",
    "flows.cli.runpod_cmd",
]


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside an existing module
                raise


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the process's own command line (not a test calling main in its process)
        stopping.install()
    try:
        code = _main(argv)
    except BaseException:
        if stopping.received() is None:
            raise
        # What the interrupt became on its way up: Prefect's TerminationSignal (its own SIGTERM handler
        # during a flow run), or an error of a stage it cut short.
        print("interrupted", file=sys.stderr)
        return _interrupted()
    # A flow that caught the interrupt ends Crashed and returns (or exits 1): the signal decides.
    return _interrupted() if stopping.received() is not None else code


def _interrupted() -> int:
    """Stop the children now (Prefect's temporary server would stop only at exit, after the worker
    threads were joined: minutes in a labelling stage) and exit with 128 + the signal."""
    stopping.stop_children()
    return stopping.exit_code()


def _main(argv: list[str] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # One INFO line per HTTP request (Prefect's API, the LLM endpoint, the Hub) drowns the output.
    for noisy in ("httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _register()
    try:
        # Without standalone mode, click returns a command's exit code (typer.Exit) instead of exiting.
        result = app(args=argv, prog_name="sae-sweep", standalone_mode=False)
    except SaeSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A directory or lock made outside the atomic writers, on a full or read-only data_root.
        error = storage_error(exc, Path(exc.filename)) if exc.filename else None
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:
        # Typer >= 0.20 carries its own copy of click (typer._click); match either by duck typing.
        exit_code = getattr(exc, "exit_code", None)
        if type(exc).__name__ == "Exit" and isinstance(exit_code, int):
            return exit_code
        if hasattr(exc, "show") and isinstance(exit_code, int):  # a usage or parameter error
            exc.show()
            return exit_code
        if type(exc).__name__ == "Abort":
            print("aborted", file=sys.stderr)
            return 1
        raise
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
