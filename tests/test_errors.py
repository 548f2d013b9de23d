"""steelnb's own errors share one base that the command line prints in one line; any other
exception is a bug and keeps its traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import steelnb
from steelnb import cli
from steelnb.data.errors import SteelnbError


def test_every_error_class_derives_from_the_base() -> None:
    found = []
    for info in pkgutil.walk_packages(steelnb.__path__, "steelnb."):
        module = importlib.import_module(info.name)
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and issubclass(obj, Exception):
                found.append(name)
                assert issubclass(obj, SteelnbError), f"{info.name}.{name} does not derive from SteelnbError"
    assert len(found) >= 20 and issubclass(SteelnbError, ValueError)  # old `except ValueError` still catches


def test_cli_prints_our_errors_in_one_line_and_lets_bugs_through(tmp_path, monkeypatch, capsys) -> None:
    assert cli.main(["synth", str(tmp_path / "d"), "--images", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("steelnb synth: error: n_images=-1") and err.count("\n") == 1

    def bug(*args, **kwargs):
        raise ValueError("an internal mistake, not the user's")

    monkeypatch.setattr("steelnb.data.synthetic.generate", bug)
    with pytest.raises(ValueError, match="internal mistake"):
        cli.main(["synth", str(tmp_path / "d")])
