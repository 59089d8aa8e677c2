"""Entry point of the `loracle` console script.

Each command imports what it needs when it runs, so `loracle --help` or `loracle search` never waits
for torch. Command groups that live outside the product (evaluation, training) plug in through the
`loracle.commands` entry point group, so the CLI lists them without importing them itself.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import typer

from loracle.cli import catalog, generate, keys, search, serve, threads

# Library progress bars and advisories are noise around our own display; the libraries read these when
# they load, which is inside a command, after this.
for name, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                    ("DIFFUSERS_VERBOSITY", "error"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(name, value)

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Choose and mix LoRA adapters for a prompt.")
app.command("generate")(generate.generate)
app.command("search")(search.search)
app.add_typer(catalog.app, name="catalog")
app.add_typer(catalog.adapters_app, name="adapters")
app.add_typer(threads.app, name="threads")
app.command("serve")(serve.serve)
app.add_typer(keys.app, name="keys")
for plugin in entry_points(group="loracle.commands"):
    app.add_typer(plugin.load(), name=plugin.name)

if __name__ == "__main__":
    app()
