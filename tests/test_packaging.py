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


# ------------------------------------------------------------------------------ the layout
#: each layer and the layers it may import (the ground floor, common, imports nothing)
LAYERS = {"common": set(), "engine": {"common"}, "data": {"common"},
          "training": {"common", "engine", "data"},
          "studies": {"common", "engine", "data"},
          "present": {"common", "engine", "data", "studies"},
          "cli": {"common", "engine", "data", "training", "studies", "present"}}


def _imports(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tttlab"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tttlab")}
    return found


def test_layers_import_only_the_layers_below_and_no_module_runs_as_a_script():
    package = ROOT / "tttlab"
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).parts
        if len(parts) == 1:
            continue  # tttlab/__init__.py (the public API) and __main__.py
        layer = parts[0]
        allowed = LAYERS[layer] | {layer}
        for module in _imports(path):
            target = module.split(".")[1] if "." in module else None
            if target in LAYERS:
                assert target in allowed, f"{path.relative_to(ROOT)} imports {module}"
        assert 'if __name__ == "__main__"' not in path.read_text(), path


def test_no_import_circles_between_modules():
    package = ROOT / "tttlab"
    modules = {".".join(("tttlab",) + p.relative_to(package).with_suffix("").parts): p
               for p in package.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    state = {}

    def visit(m, trail):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import circle: " + " -> ".join(trail + [m])
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, trail + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    """A plain (non-editable) install of a clean copy of the sources loads tttlab-mini and runs
    ``tttlab perplexity`` from another folder: the model and the registry are package data."""
    import os
    import shutil
    import subprocess
    import sys

    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "runs", "benchmarks", "notebooks", "build", "*.egg-info", "outputs",
        "__pycache__", "figures"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "--target", str(target), str(src)], check=True,
                   capture_output=True)
    shutil.rmtree(src)  # nothing may be read from the copied sources
    env = {**os.environ, "PYTHONPATH": str(target)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import tttlab, json; m, _ = tttlab.load_model('tttlab-mini'); "
            "from tttlab.data import registry; print(json.dumps({'file': tttlab.__file__, "
            "'n': len(registry.registry())}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, check=True,
                         capture_output=True, text=True).stdout
    info = __import__("json").loads(out)
    assert info["file"].startswith(str(target)) and info["n"] > 50
    run = subprocess.run([sys.executable, "-m", "tttlab", "perplexity", "MKTAYIAKQRQISFVKSHFSRQ",
                          "--ttt-steps", "1", "--json"], cwd=elsewhere, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    row = __import__("json").loads(run.stdout.strip().splitlines()[-1])
    assert row["length"] == 22 and row["pseudo_perplexity_before"] > 1
