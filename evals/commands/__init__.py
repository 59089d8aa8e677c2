"""The `loracle eval`, `loracle world` and `loracle rank` command groups.

They are registered with the `loracle` command through the `loracle.commands` entry point group
(pyproject.toml), so the product's CLI never imports its own evaluation.
"""
