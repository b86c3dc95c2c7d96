"""Set-up files agree: environment.yml lists what pyproject.toml requires; README holds the test command
that .ci/run calls."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names(specs):
    return {re.split(r"[<>=\[ ]", s.strip())[0].lower().replace("_", "-") for s in specs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = _names(project["dependencies"])
    for extra, specs in project["optional-dependencies"].items():
        if extra != "all":
            required |= _names(specs)
    required = {"pytorch" if n == "torch" else n for n in required}
    required = {"dask" if n == "dask" else n for n in required}
    env = (ROOT / "environment.yml").read_text().lower()
    listed = set(re.findall(r"^\s*-\s+([a-z0-9_.-]+)", env, flags=re.M))
    listed = {n.replace("_", "-") for n in listed}
    missing = {n for n in required if n not in listed and n.replace("-", "") not in listed}
    assert not missing, f"environment.yml lacks {sorted(missing)}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "CI=true python -m pytest"  # the CI configuration: passes in minutes on a fresh machine
    assert command in readme and re.search(rf"^{re.escape(command)}\s*$", ci, flags=re.M)
    assert "torch==2.13.0" in ci
