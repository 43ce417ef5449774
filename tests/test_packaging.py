"""The configs ship with the package: a wheel installed into a fresh environment composes the
default config (and a sweep) from an empty folder, with no source tree anywhere near it."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_a_wheel_in_a_fresh_environment_composes_the_configs_from_an_empty_folder(tmp_path, repo_root):
    # Build from a copy of the sources, so the checkout gets no build/ or egg-info folders.
    src = tmp_path / "src"
    shutil.copytree(repo_root / "rlhf_scaling", src / "rlhf_scaling",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo_root / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("rlhf_scaling-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rlhf_scaling/conf/config.yaml" in names and "rlhf_scaling/conf/sweep/rm_size.yaml" in names

    # A fresh venv: the wheel's files in its site-packages, the dependencies (torch, hydra, ...)
    # borrowed from this environment's site-packages through a .pth (a plain path entry, so the
    # editable install of the checkout found there is NOT activated).
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    python = fresh / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    zipfile.ZipFile(wheel).extractall(site)
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    entry = [str(python), "-c", "import sys; from rlhf_scaling.cli import main; sys.argv[0] = 'rlhf-scaling'; main()"]

    where = subprocess.run([str(python), "-c", "import rlhf_scaling; print(rlhf_scaling.__file__)"], cwd=empty,
                           env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    job = subprocess.run([*entry, "--cfg", "job"], cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "experiment: default" in job.stdout and "name: study" in job.stdout
    sweep = subprocess.run([*entry, "+sweep=rm_size", "--cfg", "job"], cwd=empty, env=env, capture_output=True,
                           text=True, timeout=300)
    assert sweep.returncode == 0 and "experiment: rm_size" in sweep.stdout, sweep.stderr[-3000:]
    assert list(empty.iterdir()) == []  # composing writes nothing
