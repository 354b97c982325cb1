"""Hostile and probe-style params files: opening one never runs it, and bad values stop at validation.

The YTE cases run the real Snakemake in a copy of the repository. A params file holding
`__use_yte__: true` is a template whose Python Snakemake evaluates while it parses the file, so a
dry run (`-n`) is enough to show it: the bare route creates the canary file, the documented route
(`timoe study`, which `make run` and `make smoke` use) refuses the file and creates nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from repo_support import copy_repo, sh
from timoe.cli import _configfiles_in, app
from timoe.config import ConfigError, read_yaml, validate

pytestmark = pytest.mark.e2e

CANARY = "CANARY"
YTE_CANARY = f'__use_yte__: true\ntrain:\n  epochs: ?__import__("os").system("touch {CANARY}") + 2\n'


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("params") / "repo"
    dest.mkdir()
    copy_repo(dest)
    (dest / "evil.yaml").write_text(YTE_CANARY)
    return dest


def _fresh(repo: Path) -> Path:
    canary = repo / CANARY
    canary.unlink(missing_ok=True)
    return canary


def test_bare_snakemake_runs_a_yte_params_file(repo: Path) -> None:
    # the hazard the README warns about, shown on the real Snakemake: the code runs at parse time
    canary = _fresh(repo)
    sh(["snakemake", "-n", "--cores", "1", "--configfile", "evil.yaml"], repo, check=False)
    assert canary.exists()


def test_timoe_study_refuses_a_yte_params_file_before_snakemake(repo: Path) -> None:
    canary = _fresh(repo)
    r = sh(
        ["timoe", "study", "-n", "--cores", "1", "--configfile", "workflow/smoke.yaml", "evil.yaml"],
        repo,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert "evil.yaml: '__use_yte__' is refused" in r.stderr and "Traceback" not in r.stderr
    assert not canary.exists()
    assert not (repo / ".snakemake").exists()  # Snakemake never started


@pytest.mark.parametrize(
    "route",
    [
        ["--profile", "hostile"],  # a profile's configfile: timoe study cannot see it on its command line
        ["--configf", "evil.yaml"],  # argparse's abbreviation of --configfile
    ],
    ids=["profile-configfile", "abbreviated-flag"],
)
def test_timoe_studys_snakemake_reads_configfiles_as_data(repo: Path, route: list[str]) -> None:
    (repo / "hostile").mkdir(exist_ok=True)
    (repo / "hostile" / "config.yaml").write_text("configfile: [evil.yaml]\n")
    canary = _fresh(repo)
    r = sh(["timoe", "study", "-n", "--cores", "1", *route], repo, check=False)
    assert r.returncode != 0
    assert "'__use_yte__' is refused" in r.stdout + r.stderr
    assert not canary.exists()


def test_timoe_study_runs_snakemake_on_valid_params(repo: Path) -> None:
    r = sh(["timoe", "study", "-n", "--cores", "1", "--profile", "workflow/profiles/default",
            "--configfile", "workflow/smoke.yaml"], repo)  # fmt: skip
    assert "This was a dry-run" in r.stdout


def test_the_makefile_routes_snakemake_through_timoe_study() -> None:
    root = Path(__file__).resolve().parents[1]
    make = (root / "Makefile").read_text()
    assert "SNAKEMAKE := $(BIN)/timoe study " in make
    assert "$(BIN)/snakemake" not in make


def test_configfiles_are_found_in_every_spelling() -> None:
    args = [
        "-n",
        "--configfile",
        "a.yaml",
        "b.yaml",
        "--cores",
        "2",
        "--configfiles=c.yaml",
        "--configfil",
        "d.yaml",
    ]
    assert _configfiles_in([*args, "--config", "x=1", "target"]) == [Path(f"{p}.yaml") for p in "abcd"]
    assert _configfiles_in(["--config", "e.yaml"]) == []


# (id, file text, fragment of the refusal)
CODE_FILES = [
    ("yte-true", YTE_CANARY, "'__use_yte__' is refused"),
    ("yte-false", "__use_yte__: false\n", "'__use_yte__' is refused"),
    ("python-apply", 'train: !!python/object/apply:os.system ["true"]\n', "python/object/apply"),
    ("python-name", "train: !!python/name:os.system\n", "python/name"),
    ("local-tag", "train: !custom {epochs: 1}\n", "'!custom'"),
    ("tag-on-key", "!!python/str train: {epochs: 1}\n", "python/str"),
]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in CODE_FILES], ids=[c[0] for c in CODE_FILES])
def test_params_files_that_could_run_code_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.yaml") as err:
        read_yaml(bad)
    assert fragment in str(err.value)
    code, out = _cli(tmp_path, "validate", "-p", str(bad))
    assert code == 2 and fragment in out and "Traceback" not in out


def test_plain_tags_and_anchors_stay_data(tmp_path: Path) -> None:
    # params.yaml shares one sweep space through an anchor; the core schema's tags are plain data
    f = tmp_path / "ok.yaml"
    f.write_text("train: &t {epochs: !!int '3', lr: !!float '0.01'}\nsweep: {epochs: 2}\nx: *t\n")
    assert read_yaml(f)["x"] == {"epochs": 3, "lr": 0.01}


def _cli(cwd: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


# ---------------------------------------------------------------- tracking.uri
@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("not-a-uri://x", "unknown scheme 'not-a-uri'"),
        ("mlflow.db", "has no scheme"),
        ("sqlite:///", "names no database file"),
        ("sqlite://", "names no database file"),
        ("sqlite:///:memory:", "names no database file"),
        ("http://", "names no host"),
        ("file:///tmp/mlruns", "unknown scheme 'file'"),
    ],
)
def test_bad_tracking_uri_is_refused_naming_the_key(uri: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate({"tracking": {"uri": uri}})
    assert "tracking.uri" in str(err.value) and fragment in str(err.value)


def test_a_sqlite_store_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    with pytest.raises(ConfigError, match=r"tracking\.uri.*cannot be made"):
        validate({"tracking": {"uri": f"sqlite:///{tmp_path}/plain/sub/mlflow.db"}})


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///mlflow.db",
        "sqlite:///results/new/folder/mlflow.db",  # made by init_store
        "http://127.0.0.1:5000",
        "https://mlflow.example.org/base",
        "postgresql://user@dbhost/mlflow",
        "postgresql+psycopg2://user@dbhost/mlflow",
        "mysql://user@dbhost/mlflow",
    ],
)
def test_known_tracking_stores_pass(uri: str) -> None:
    assert validate({"tracking": {"uri": uri}}).tracking.uri == uri


def test_snakefile_refuses_a_bad_tracking_uri_before_mlflow(repo: Path) -> None:
    (repo / "bad-uri.yaml").write_text("tracking:\n  uri: not-a-uri://x\n")
    r = sh(["snakemake", "-n", "--cores", "1", "--configfile", "bad-uri.yaml"], repo, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "tracking.uri" in out and "unknown scheme 'not-a-uri'" in out
    assert "Traceback" not in out and "MlflowException" not in out and "UnsupportedModelRegistry" not in out


def test_timoe_study_refuses_a_bad_tracking_uri(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "bad-uri.yaml").write_text("tracking:\n  uri: not-a-uri://x\n")
    monkeypatch.chdir(repo)
    code, out = _cli(repo, "study", "-n", "--configfile", "bad-uri.yaml")
    assert code == 2 and "tracking.uri" in out and "Traceback" not in out


# ---------------------------------------------------------------- sweep ranges over their whole range
def _space(key: str, spec: dict, **model: int) -> dict:
    return {"model": {"n_heads": 2, **model}, "sweep": {"space": {"transformer": {key: spec}}}}


@pytest.mark.parametrize(
    ("key", "spec", "fragment"),
    [
        ("model.d_model", {"type": "int", "low": 30, "high": 34}, "value 31 of the range 30..34"),
        (
            "model.d_model",
            {"type": "int", "low": 32, "high": 4096},
            "value 33 of the range",
        ),  # walked in part
        ("model.d_model", {"type": "int", "low": 31, "high": 32}, "bound 31"),
        ("model.top_k", {"type": "int", "low": 1, "high": 9}, "bound 9"),
        ("model.d_model", {"type": "categorical", "choices": [32, 33]}, "choice 33"),
    ],
)
def test_a_sweep_range_with_an_invalid_value_is_refused(key: str, spec: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(_space(key, spec))
    assert f"sweep.space.transformer.{key}" in str(err.value) and fragment in str(err.value)


def test_sweep_ranges_whose_every_value_fits_pass() -> None:
    assert validate(_space("model.d_model", {"type": "int", "low": 32, "high": 32}))
    assert validate(_space("model.d_model", {"type": "int", "low": 30, "high": 34}, n_heads=1))
    assert validate(_space("model.d_model", {"type": "categorical", "choices": [30, 32, 34]}))
    assert validate(_space("model.top_k", {"type": "int", "low": 1, "high": 8}))
