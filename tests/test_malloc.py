"""glibc malloc tuning: applied by the CLI, never by importing the library, skipped off glibc."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from vil_seg import cli, malloc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_applied_on_glibc():
    assert malloc.tune_glibc_malloc() is True


def test_left_alone_without_glibc(monkeypatch):
    monkeypatch.setattr(malloc.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert malloc.tune_glibc_malloc() is False


def test_cli_applies_it_and_import_does_not(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "tune_glibc_malloc", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert calls == []  # argument errors and --help exit before any work
    assert cli.main(["prepare", "loveda", "/nonexistent/raw", "/nonexistent/out"]) == 2
    assert calls == [1]


def test_importing_the_library_leaves_malloc_alone():
    """No module of the package looks up mallopt when imported (a spy on ctypes library lookups)."""
    code = """
import ctypes
looked_up = []
class Spy(ctypes.CDLL):
    def __getattr__(self, name):
        looked_up.append(name)
        return super().__getattr__(name)
ctypes.CDLL = Spy
import vil_seg, vil_seg.cli, vil_seg.models, vil_seg.engine
assert "mallopt" not in looked_up, looked_up
from vil_seg.malloc import tune_glibc_malloc
tune_glibc_malloc()
print("mallopt" in looked_up)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    expected = platform.libc_ver()[0] == "glibc"  # the spy sees the explicit call
    assert out.strip() == str(expected)
