"""Entry point of the `loracle` console script.

Command groups that live outside the product (evaluation, training) plug in through the `loracle.commands`
entry point group, so the CLI lists them without importing them itself.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from loracle.cli import catalog, generate, keys, search, serve, threads

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="Choose and mix LoRA adapters for a prompt.")
app.add_typer(catalog.app, name="catalog")
app.add_typer(catalog.adapters_app, name="adapters")
app.command("search")(search.search)
app.command("generate")(generate.generate)
app.command("serve")(serve.serve)
app.add_typer(keys.app, name="keys")
app.add_typer(threads.app, name="threads")
for plugin in entry_points(group="loracle.commands"):
    app.add_typer(plugin.load(), name=plugin.name)

if __name__ == "__main__":
    app()
