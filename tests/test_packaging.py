"""The built wheel carries everything the installed product needs (issue 2)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_wheel_install_finds_the_schema(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path / "dist")],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("timbal_flows-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    # From the unpacked wheel only (not the source tree): the schema loads and validates a flow.
    code = (
        "import runner, runner.schema as s, sys; "
        "assert runner.__file__.startswith(sys.argv[1]), runner.__file__; "
        "print(s.load_schema()['$schema'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "https://json-schema.org/draft/2020-12/schema"
    packaged = json.loads((site / "runner" / "flow.schema.json").read_text())
    assert packaged == json.loads((ROOT / "schemas" / "flow.schema.json").read_text())
