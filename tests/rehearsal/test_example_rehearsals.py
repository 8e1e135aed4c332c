"""README's first command, for every example plan: the rehearsal finishes with zero warnings and zero
unverified checks (issue #12: a rehearsal that prints WARN lines teaches operators to ignore them).

The tool runs as the operator runs it, `xksmigrate run PLAN --dry-run --yes`, from a directory that is not the
repository (nothing may depend on the working directory), with no AWS or xksmigrate settings inherited. The
example world beside each plan gives the tool the vantage point (inside the VPC) and serves the plan's
`original_credential` from its Secrets Manager, so every check can be made.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # two whole rehearsals at the examples' time scale: about 12 s each


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XKSMIGRATE_"))}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true",
               XKSMIGRATE_REHEARSAL_STATE=f"sqlite:///{tmp_path}/rehearsal.db", HOME=str(tmp_path),
               COLUMNS="200")
    return env


@pytest.mark.parametrize("name", ["public-to-vpc", "vpc-to-public", "multi-account"])
def test_the_example_rehearsal_prints_no_warning_and_no_unverified_check(name, tmp_path):
    done = subprocess.run([sys.executable, "-m", "migrator.cli", "run", str(REPO / "plans" / f"{name}.toml"),
                           "--dry-run", "--yes"], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "completed (exit 0)" in output, output
    flagged = [line for line in output.splitlines() if re.search(r"warn|unverified|accepted", line, re.IGNORECASE)]
    assert flagged == [], "\n".join(flagged)
