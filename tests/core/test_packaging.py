"""Installing seqops puts one import package into site-packages, both as a wheel and editable."""

import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SUBPACKAGES = ["seqops.features", "seqops.models", "seqops.serving", "seqops.flows"]


def test_built_wheel_holds_only_the_seqops_package_and_imports(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("seqops-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"seqops"}

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        f"import sys; sys.path.insert(0, {str(target)!r}); import seqops, "
        + ", ".join(SUBPACKAGES)
        + f"; assert seqops.__file__.startswith({str(target)!r}), seqops.__file__"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=tmp_path)


def test_editable_install_maps_the_top_level_folders():
    """Strict editable mode: a tree of links on sys.path (what IDEs and pyright follow) to the real files."""
    probe = "import seqops.features.sequences as m; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd="/").stdout
    linked = Path(out.strip())
    assert linked.is_symlink() and linked.resolve() == REPO / "features" / "sequences.py"


def test_the_subpackages_resolve_from_the_repository_root_too():
    probe = "import seqops.models.nets.sasrec as m; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=REPO).stdout
    assert Path(out.strip()).resolve() == REPO / "models" / "nets" / "sasrec.py"


def test_a_projects_param_overrides_do_not_leak_into_the_next_project(tmp_path):
    """make_project once merged overrides into the shared SMALL dict: a Markov project made every
    later project in that process Markov (the week test's 'bad params' day then passed the gate)."""
    from tests.conftest import make_project

    make_project(tmp_path / "a", {"model": {"kind": "markov"}})
    params = yaml.safe_load((make_project(tmp_path / "b") / "params.yaml").read_text())
    assert params["model"]["kind"] == "sasrec"
