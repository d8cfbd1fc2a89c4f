"""``python -m lmbook doctor``: fake versions, missing and corrupt data, no accelerator, the exit status."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmbook import _versions, doctor
from lmbook.data import datasets as ds

ROOT = Path(__file__).resolve().parents[1]
GOOD = "tinyshakespeare.txt"


def fake(versions: dict[str, str]):
    return lambda name: versions.get(name)


def by_name(checks):
    return {c.name: c for c in checks}


def test_python_floor_is_pyprojects():
    declared = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert tuple(map(int, declared.groups())) == doctor.REQUIRES_PYTHON
    assert doctor.check_python((3, 11, 0)).status == "OK"
    old = doctor.check_python((3, 10, 12))
    assert old.status == "FAIL" and "3.11" in old.fix


def test_packages_against_the_floors():
    versions = {name: "99.0" for name in _versions.MINIMUMS} | {name: "1.0" for name in doctor.CHAPTER_LIBRARIES}
    versions |= {"flax": "0.11.2", "jax": "0.7.1"}  # flax too old, jax exactly at its floor
    del versions["tqdm"]
    del versions["sacrebleu"]
    checks = by_name(doctor.check_packages(fake(versions)))
    assert checks["flax"].status == "FAIL" and checks["flax"].fix == 'pip install -U "flax>=0.12.0"'
    assert checks["tqdm"].status == "FAIL" and "not installed" in checks["tqdm"].detail
    assert checks["jax"].status == "OK" and checks["numpy"].status == "OK"
    assert checks["sacrebleu"].status == "WARN" and checks["scikit-learn"].status == "OK"
    assert set(checks) == set(_versions.MINIMUMS) | set(doctor.CHAPTER_LIBRARIES)


def test_devices_without_an_accelerator():
    cpu = lambda: ("cpu", ["cpu", "cpu"])  # noqa: E731
    checks = by_name(doctor.check_devices(cpu, gpu_hardware=lambda: False))
    assert checks["jax devices"].detail == "cpu: 2 x cpu"
    assert checks["accelerator"].status == "OK" and "CPU only" in checks["accelerator"].detail
    unused = by_name(doctor.check_devices(cpu, gpu_hardware=lambda: True))["accelerator"]
    assert unused.status == "WARN" and "jax[cuda12]" in unused.fix
    gpu = by_name(doctor.check_devices(lambda: ("gpu", ["NVIDIA H100"]), gpu_hardware=lambda: True))
    assert gpu["accelerator"].status == "OK" and "gpu" in gpu["accelerator"].detail


def test_devices_when_jax_cannot_start():
    def broken():
        raise RuntimeError("no backend")

    (check,) = doctor.check_devices(broken)
    assert check.status == "FAIL" and "no backend" in check.detail


@pytest.fixture()
def data_dirs(tmp_path, monkeypatch):
    """An offline folder holding only a copy of tinyshakespeare, and an empty cache."""
    offline, cache = tmp_path / "offline", tmp_path / "cache"
    offline.mkdir()
    cache.mkdir()
    shutil.copy(ds.path(GOOD, download=False), offline / GOOD)
    monkeypatch.setenv(ds.ENV_OFFLINE, str(offline))
    monkeypatch.setenv(ds.ENV_CACHE, str(cache))
    return offline, cache


def test_data_present_and_missing(data_dirs):
    offline, _ = data_dirs
    checks = by_name(doctor.check_data())
    assert checks["data tinyshakespeare"].status == "OK" and str(offline) in checks["data tinyshakespeare"].detail
    missing = checks["data multi30k"]
    assert missing.status == "WARN" and "6 of 6" in missing.detail
    assert f"python -m lmbook data fetch multi30k --to {offline}" in missing.fix


def test_corrupt_data_fails(data_dirs):
    offline, _ = data_dirs
    (offline / GOOD).write_bytes(b"not Shakespeare")
    check = by_name(doctor.check_data())["data tinyshakespeare"]
    assert check.status == "FAIL" and "SHA-256" in check.detail and str(offline / GOOD) in check.detail


def test_data_dir_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.setenv(ds.ENV_OFFLINE, str(tmp_path / "nowhere"))
    monkeypatch.setenv(ds.ENV_CACHE, str(tmp_path))
    assert by_name(doctor.check_data())["LMBOOK_DATA_DIR"].status == "FAIL"


def test_disk_and_memory_thresholds(tmp_path):
    gb = doctor.GB
    checks = by_name(doctor.check_resources(tmp_path, memory=16 * gb, disk_free=50 * gb))
    assert checks["disk"].status == "OK" and checks["memory"].status == "OK"
    checks = by_name(doctor.check_resources(tmp_path, memory=3 * gb, disk_free=0.1 * gb))
    assert checks["disk"].status == "FAIL" and checks["memory"].status == "WARN"


def test_speed_factor(monkeypatch):
    rate = doctor.matmul_gflops(seconds=0.05, n=64)
    assert rate > 0
    monkeypatch.setattr(doctor, "matmul_gflops", lambda seconds: 50.0)
    check, factor = doctor.check_speed(0.0)
    assert factor == pytest.approx(0.25) and check.status == "WARN" and "4.0x their CPU budgets" in check.detail
    monkeypatch.setattr(doctor, "matmul_gflops", lambda seconds: 300.0)
    check, factor = doctor.check_speed(0.0)
    assert factor == pytest.approx(1.5) and check.status == "OK"


def test_main_exit_status_and_json(monkeypatch, capsys):
    ok = [doctor.Check("a", "OK", "fine"), doctor.Check("b", "WARN", "hm", "do this")]
    monkeypatch.setattr(doctor, "run_checks", lambda seconds: (ok, 1.2))
    assert doctor.main() == 0
    out = capsys.readouterr().out
    assert "WARN  b" in out and "fix: do this" in out and "ready: 1 OK, 1 WARN, 0 FAIL" in out
    monkeypatch.setattr(doctor, "run_checks", lambda seconds: (ok + [doctor.Check("c", "FAIL", "broken", "x")], None))
    assert doctor.main(as_json=True) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and [c["status"] for c in report["checks"]] == ["OK", "WARN", "FAIL"]


def test_command_line_runs_even_with_outdated_packages(tmp_path):
    """``import lmbook`` stops on an old package, but ``python -m lmbook doctor`` reports it as a FAIL line."""
    fake_meta = tmp_path / "sitecustomize.py"
    fake_meta.write_text(
        "import importlib.metadata as m\n_v = m.version\n"
        "m.version = lambda name: '0.11.0' if name == 'flax' else _v(name)\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-m", "lmbook", "doctor", "--json", "--seconds", "0.05"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    report = json.loads(run.stdout)
    assert run.returncode == 1, run.stderr
    flax = next(c for c in report["checks"] if c["name"] == "flax")
    assert flax["status"] == "FAIL" and "0.11.0" in flax["detail"]
