"""Every setting is documented in the README with its default (like datasette's test_docs)."""

import re
from pathlib import Path

import pytest

from bluerocktel.settings import SETTINGS, get_setting, resolve_data_dir

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _documented() -> dict[str, str]:
    rows = re.findall(r"^\| `(BLUEROCKTEL_[A-Z0-9_]+)` \| ([^|]*) \|", README, flags=re.M)
    return {name: default.strip() for name, default in rows}


def test_every_setting_is_documented_with_its_default():
    documented = _documented()
    for setting in SETTINGS:
        assert setting.env_var in documented, f"{setting.env_var} is not in the README settings table"
        shown = documented[setting.env_var]
        assert shown == (f"`{setting.default}`" if setting.default else "(empty)"), setting.env_var
    assert set(documented) == {s.env_var for s in SETTINGS}, "the README documents a setting that does not exist"


def test_environment_overrides_default(monkeypatch, tmp_path):
    monkeypatch.setenv("BLUEROCKTEL_VAT_RATE", "0.055")
    assert get_setting("vat_rate") == "0.055"
    monkeypatch.setenv("BLUEROCKTEL_DATA_DIR", str(tmp_path / "d"))
    assert resolve_data_dir() == tmp_path / "d"
    assert (tmp_path / "d").is_dir()
    assert resolve_data_dir(tmp_path / "e") == tmp_path / "e"


def test_unknown_setting_is_a_programming_error():
    with pytest.raises(KeyError):
        get_setting("no_such_setting")
