"""Fixtures for every test: each test has its own per-user state directory.

The default journal lives in $XDG_STATE_HOME/xksmigrate (cli/environment.py), shared by every command a
user runs; a test that runs the CLI without --state must not share it with other tests (or the developer).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _own_state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-home")))
