"""pyproject.toml and environment.yml declare the same dependencies, and the layout is as designed."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# PyPI name -> conda-forge name, where they differ.
CONDA_NAMES = {"duckdb": "python-duckdb", "uvicorn": "uvicorn-standard", "psycopg": "psycopg"}


def _split(requirement: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", requirement)
    return m.group(1).lower(), m.group(3).replace(" ", "")


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = data["project"]["dependencies"] + data["project"]["optional-dependencies"]["test"]
    return dict(_split(r) for r in reqs)


def _environment() -> dict[str, str]:
    deps = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("\ndependencies:"):].splitlines():
        m = re.match(r"^\s*-\s+(-e\s.*|[A-Za-z0-9_.\[\]-]+\s*[<>=!~].*|[A-Za-z0-9_.-]+)\s*$", line)
        if not m or m.group(1).startswith("-e") or line.strip().endswith(":"):
            continue
        name, spec = _split(m.group(1))
        deps[name] = spec
    return deps


def test_environment_yml_matches_pyproject():
    env = _environment()
    env.pop("python", None)
    env.pop("pip", None)
    expected = {CONDA_NAMES.get(name, name): spec for name, spec in _pyproject().items()}
    assert env == expected


def test_console_script_and_top_level_layout():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["bluerocktel"] == "bluerocktel.cli:main"
    top = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") and p.name not in {"var", "build", "dist"}
           and not p.name.endswith(".egg-info")}
    assert top == {"bluerocktel", "notebooks", "pipelines", "dashboards", "portal_app", "tests", "benchmarks",
                   "pyproject.toml", "environment.yml", "README.md"}
