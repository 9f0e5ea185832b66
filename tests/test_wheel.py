"""The built wheel works outside the checkout: recipes and the web page ship inside it."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (built,) = out.glob("domainkit-*.whl")
    return built


def test_wheel_carries_recipes_and_the_web_page(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {p.name for p in (ROOT / "recipes").glob("*.yaml")}
    assert {f"domainkit/_recipes/{name}" for name in recipes} <= names
    assert any(n.startswith("domainkit/runtime/static/") for n in names)
    assert not any(n.startswith(("tests/", "corpora/", "recipes/")) for n in names)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel installed; dependencies come from this environment's
    site-packages through a .pth file (offline, and without this checkout on the path)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    return env_dir


def _run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DOMAINKIT_RECIPES", "PYTHONPATH")}
    return subprocess.run(
        [str(env_dir / "bin" / "domainkit"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.integration
def test_installed_wheel_lists_recipes_and_starts_a_domain(installed, tmp_path):
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import domainkit; print(domainkit.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(installed)), f"imported from {where}, not the wheel"
    listed = _run(installed, "recipes", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("legal", "customer-support", "education", "medical"):
        assert name in listed.stdout
    created = _run(installed, "init", "clinic", "--recipe", "medical", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    config = (tmp_path / "clinic" / "domain.yaml").read_text()
    assert "recipe: medical" in config
