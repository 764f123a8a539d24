"""The ``jitplan`` command line: the app, command registration and ``main`` with the error map.

Each command lives in its own module ``jitplan.cli.<name>`` exposing ``register(app)``; this file only
wires them up. Nothing here may import torch or vastai (``jitplan --help`` must be instant).

    jitplan plan --gpus 2xRTX3060 --host-ram 24GB
    jitplan probe --out hardware.yaml
    jitplan doctor --plan plan.yaml --data /data/imagenet
"""

from __future__ import annotations

import importlib
import os
import sys

# pydantic looks for plugins through importlib.metadata at its first model (~20 ms of the CLI's start-up: it
# scans every installed distribution); the CLI uses none. Set before any model is built; a value the user set
# (e.g. an empty one, to keep their plugins) wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer  # noqa: E402

from jitplan.cli._errors import run_with_error_map  # noqa: E402

app = typer.Typer(
    name="jitplan",
    help="Plan, check and launch JiT diffusion-transformer training on the GPUs you can rent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold API keys
)

# One module per command family; a module that does not exist yet is skipped.
_COMMAND_MODULES = ("plan", "probe", "doctor", "data", "launch", "runs", "pull", "demo", "compare", "calibrate",
                    "report", "watch")


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        modname = f"jitplan.cli.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue
            raise
        mod.register(app)


_register_all()


def _print_version(value: bool) -> None:
    # A callback of an eager option runs while the arguments are parsed, before the group asks for a command.
    if value:
        from jitplan import __version__  # lazy: CLI start-up

        typer.echo(f"jitplan {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Plan, check and launch JiT diffusion-transformer training on the GPUs you can rent."""


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return the exit code (the error map applied). Used by tests."""
    return run_with_error_map(app, argv)


def main() -> None:
    sys.exit(run())
