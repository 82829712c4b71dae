"""The presets, installed as the package data of ``vidrestore.configs`` (see pyproject.toml)."""
