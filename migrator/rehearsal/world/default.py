"""The world `sim serve` starts without `--world`: a copy of plans/worlds/public-to-vpc.toml.

It ships as package data (`migrator/rehearsal/data/default-world.toml`; pyproject's package-data already
includes `rehearsal/data/*`), so an installed xksmigrate can rehearse plans/public-to-vpc.toml anywhere.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from migrator.rehearsal.world import model

DEFAULT_WORLD_NAME = "default-world.toml"


def default_world_text() -> str:
    return resources.files("migrator.rehearsal").joinpath("data", DEFAULT_WORLD_NAME).read_text("utf-8")


def default_world_dict() -> dict:
    return model.parse_toml_text(default_world_text(), f"<packaged {DEFAULT_WORLD_NAME}>")


def load_default_world() -> model.World:
    return model.world_from_dict(default_world_dict(), f"<packaged {DEFAULT_WORLD_NAME}>")


def load_world(path: str | Path | None) -> model.World:
    """The world file at `path`, or the packaged default world when `path` is None."""
    return load_default_world() if path is None else model.load_world_file(path)
