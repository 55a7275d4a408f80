"""The engine registry: built-in engines, and an engine another distribution installs
through the ``gitops_push.engines`` entry-point group (tests/toy_engine/), driven through
the real CLI: ``changed``, ``plan`` and ``apply``."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import GitRepo

from gitops_push.cli.app import run
from gitops_push.engines import ENTRY_POINT_GROUP, names, registry, spec
from gitops_push.errors import ExitCode, UserError

TOY_DIR = Path(__file__).resolve().parent / "toy_engine"


def install(site: Path, entry_points: str, dist: str = "gitops_push_toy-1.0") -> None:
    """A distribution's metadata as pip leaves it: a dist-info with entry_points.txt."""
    info = site / f"{dist}.dist-info"
    info.mkdir(parents=True)
    name = dist.split("-")[0]
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(TOY_DIR))
    monkeypatch.syspath_prepend(str(site))
    registry.clear()
    yield site
    registry.clear()


def gp(r: GitRepo, *args: str) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = run(["-C", str(r.path), *args, "--output", "json"])
    return code, json.loads(out.getvalue())


def test_the_built_in_engines_are_registered() -> None:
    assert {"kubernetes", "terraform"} <= set(names())
    assert spec("terraform").name == "terraform"
    with pytest.raises(KeyError):
        spec("helm")


def test_an_installed_engine_runs_changed_plan_and_apply_through_the_cli(
        site: Path, make_repo: Callable[..., GitRepo], tmp_path: Path) -> None:
    install(site, "toy = gitops_push_toy:ENGINE")
    live = tmp_path / "live"
    r = make_repo({
        "gitops-push.yaml": ("version: 1\nstacks:\n"
                             f"  - {{name: notes, path: toy/notes, type: toy, "
                             f"toy: {{target: '{live}'}}}}\n"
                             "  - {name: other, path: toy/other, type: toy, "
                             f"toy: {{target: '{tmp_path / 'other'}'}}}}\n"),
        "toy/notes/a.txt": "one\n",
        "toy/other/b.txt": "two\n",
    })
    assert "toy" in names()

    code, env = gp(r, "apply")
    assert code == ExitCode.OK, env
    assert (live / "a.txt").read_text() == "one\n"

    base = r.head()
    r.commit("notes: a is two", {"toy/notes/a.txt": "two\n", "toy/notes/c.txt": "new\n"},
             push=True)
    code, env = gp(r, "changed", "--base", base)
    assert code == ExitCode.OK
    assert [s["name"] for s in env["data"]["stacks"]] == ["notes"]

    code, env = gp(r, "plan")
    assert code == ExitCode.OK, env
    [planned] = env["data"]["stacks"]
    assert planned["name"] == "notes" and planned["result"] == "planned"
    assert planned["counts"]["add"] == 1 and planned["counts"]["change"] == 1

    code, env = gp(r, "apply")
    assert code == ExitCode.OK, env
    assert {s["name"]: s["result"] for s in env["data"]["stacks"]} == {"notes": "applied"}
    assert sorted(p.name for p in live.iterdir()) == ["a.txt", "c.txt"]
    assert (live / "a.txt").read_text() == "two\n"


def test_an_engine_may_not_replace_a_built_in_one(site: Path) -> None:
    install(site, "terraform = gitops_push_toy:ENGINE")
    with pytest.raises(UserError, match="would replace the built-in terraform engine"):
        names()


def test_an_entry_point_must_name_an_engine_spec_of_its_own_name(site: Path) -> None:
    install(site, "toy2 = gitops_push_toy:ENGINE\nbroken = gitops_push_toy:missing")
    assert {"toy2", "broken"} <= set(names())
    with pytest.raises(UserError, match="must name an EngineSpec whose name is 'toy2'"):
        spec("toy2")
    with pytest.raises(UserError, match=r"'broken' .* failed to load"):
        spec("broken")


def test_without_plugins_the_built_in_engines_are_all_there_is() -> None:
    assert set(names()) == set(registry.BUILTIN)


def test_an_engine_declared_by_an_egg_info_distribution_is_found(site: Path) -> None:
    info = site / "gitops_push_toy-1.0-py3.11.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: gitops_push_toy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntoy = gitops_push_toy:ENGINE\n")
    assert "toy" in names()


def test_a_zip_on_sys_path_is_left_to_importlib_metadata(
        site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick look at entry_points.txt files cannot see inside a zip, so it does not
    answer for one: importlib.metadata does."""
    import zipfile
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("gitops_push_toy-1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: gitops_push_toy\nVersion: 1.0\n")
        z.writestr("gitops_push_toy-1.0.dist-info/entry_points.txt",
                   f"[{ENTRY_POINT_GROUP}]\ntoy = gitops_push_toy:ENGINE\n")
    monkeypatch.syspath_prepend(str(archive))
    registry.clear()
    assert "toy" in names()


def test_without_plugins_importlib_metadata_is_never_imported() -> None:
    """It costs about 25 ms of start-up on every run (issue 14)."""
    import subprocess
    import sys
    code = ("import sys; from gitops_push.engines import names; "
            "assert set(names()) == {'kubernetes', 'terraform'}, names(); "
            "print('importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_the_registry_loads_an_engine_only_when_a_run_asks_for_it() -> None:
    """Settings, discovery and inputs come from the engine's spec module; ``changed``
    never imports what lint, plan, apply and drift need (issue 14)."""
    import subprocess
    import sys
    code = ("import sys; from gitops_push.engines import spec; "
            "specs = [spec('terraform'), spec('kubernetes')]; "
            "before = sorted(m for m in sys.modules if m.endswith('.engine')); "
            "engines = [s.factory() for s in specs]; "
            "after = sorted(m for m in sys.modules if m.endswith('.engine')); "
            "print(before, after, [type(e).__name__ for e in engines])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == ("[] ['gitops_push.engines.kubernetes.engine', "
                           "'gitops_push.engines.terraform.engine'] "
                           "['TerraformEngine', 'KubernetesEngine']")
