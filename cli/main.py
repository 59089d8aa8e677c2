"""Entry point of the `loracle` console script."""

from __future__ import annotations

import typer

from cli import catalog, evaluate, generate, keys, rank, search, serve, threads, world

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="Choose and mix LoRA adapters for a prompt.")
app.add_typer(catalog.app, name="catalog")
app.add_typer(catalog.adapters_app, name="adapters")
app.command("search")(search.search)
app.command("generate")(generate.generate)
app.add_typer(evaluate.app, name="eval")
app.command("serve")(serve.serve)
app.add_typer(keys.app, name="keys")
app.add_typer(threads.app, name="threads")
app.add_typer(world.app, name="world")
app.add_typer(rank.app, name="rank")

if __name__ == "__main__":
    app()
