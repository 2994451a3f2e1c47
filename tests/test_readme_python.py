"""The README's "From Python" example runs as written (a real subprocess, the real file)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from testkit import PYTHON, ROOT, child_env


def test_the_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## From Python"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    (tmp_path / "flows").mkdir()
    shutil.copy(ROOT / "flows" / "chat.yaml", tmp_path / "flows" / "chat.yaml")
    (tmp_path / "example.py").write_text(match.group(1), encoding="utf-8")
    proc = subprocess.run([PYTHON, "example.py"], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "succeeded" in proc.stdout and "run_finished" in proc.stdout
