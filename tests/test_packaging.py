"""The built wheel installs and imports in a clean virtual environment."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODULES = ["xtmail.app.cli", "xtmail.sync.db.schema", "xtmail.sync.mail.registry",
           "xtmail.widgets", "xtmail.dialogs", "xtmail.designer_plugins"]


def test_wheel_installs_and_imports_in_a_clean_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(dist), str(REPO)],
        check=True, cwd=tmp_path,
    )
    wheels = list(dist.glob("xtmail-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp_path / "clean"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(wheels[0])],
        check=True, cwd=tmp_path,
    )
    # Run from tmp_path so the source folders cannot be imported by accident.
    code = "import importlib, sys\n" + "".join(
        f"m = importlib.import_module({name!r}); assert 'site-packages' in m.__file__, m\n"
        for name in MODULES
    ) + "from xtmail.sync.db.schema import migrations; assert len(migrations()) >= 3\n" + (
        # The wheel carries the compiled text loops, not only their Python fallback.
        "from xtmail.sync.mail import textops; assert textops.COMPILED\n"
    )
    subprocess.run([str(python), "-c", code], check=True, cwd=tmp_path)
    help_text = subprocess.run(
        [str(env_dir / "bin" / "xtmail"), "--help"], check=True, cwd=tmp_path,
        capture_output=True, text=True,
    ).stdout
    assert "init-db" in help_text
