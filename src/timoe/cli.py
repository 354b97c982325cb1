"""`timoe <stage>`, `timoe audit ...`: the one command line that Snakemake rules (and people) call.

Every command validates the params first. Expected failures (bad params, a missing data
package, a corrupted input, an unknown data set or run) end with one line naming the problem
and exit code 2, a bug with its traceback and exit code 1 (timoe.cli_support lists the codes);
outputs are written atomically, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from timoe.cli_support import DEFAULT_PARAMS, ParamsOpt, UsageError, handle_errors, read_params
from timoe.config import DATASET_NAMES, MODEL_NAMES, ConfigError, Params

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _dataset(name: str, p: Params) -> str:
    if name not in DATASET_NAMES:
        from timoe.data.registry import get_dataset

        get_dataset(name, p.data)  # raises the registry's error listing the known data sets
    return name


def _model(name: str) -> str:
    if name not in MODEL_NAMES:
        raise UsageError(f"unknown model {name!r}; known: {list(MODEL_NAMES)}")
    return name


@app.command()
@handle_errors
def validate(params: ParamsOpt = None) -> None:
    """Validate params files and print the resolved config."""
    import yaml

    p = read_params(params)
    typer.echo(yaml.safe_dump(p.model_dump(), sort_keys=False))


@app.command("init-tracking")
@handle_errors
def init_tracking(params: ParamsOpt = None) -> None:
    """Create the MLflow store once, before parallel jobs start."""
    from timoe.tracking import init_store

    p = read_params(params)
    init_store(p.tracking.uri)
    typer.echo(f"tracking store ready: {p.tracking.uri}")


@app.command("dvc-remote")
@handle_errors
def dvc_remote(params: ParamsOpt = None) -> None:
    """Point DVC's default remote at tracking.dvc_remote (written to .dvc/config.local)."""
    from timoe.workflow_support import configure_dvc_remote

    p = read_params(params)
    url = configure_dvc_remote(p.tracking.dvc_remote, Path("."))
    typer.echo(f"DVC remote 'default' -> {url}")


@app.command()
@handle_errors
def targets(
    stage: Annotated[str, typer.Argument(help="prepare, quantify, sweep, train, check or evaluate")],
    params: ParamsOpt = None,
) -> None:
    """Print the output paths of one stage for these params (dvc.yaml's commands run them)."""
    from timoe.stage_specs import STAGES, targets

    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; known: {list(STAGES)}")
    typer.echo(" ".join(targets(read_params(params), stage)))


@app.command("lint-workflow")
@handle_errors
def lint_workflow() -> None:
    """Run Snakemake's lints on ./Snakefile; exit 2 on any but the accepted one (named in the output)."""
    from timoe.workflow_support import ACCEPTED_LINTS, workflow_lints

    left, report = workflow_lints(Path("."))
    if left:
        typer.echo(report, err=True)
        raise UsageError(f"{len(left)} Snakemake lint(s): {'; '.join(dict.fromkeys(left))}")
    typer.echo(f"Snakemake lints: none but the accepted {list(ACCEPTED_LINTS)}")


@app.command("dvc-yaml")
@handle_errors
def dvc_yaml(
    check: Annotated[bool, typer.Option("--check", help="exit 2 if dvc.yaml differs; write nothing")] = False,
    path: Annotated[Path, typer.Option(help="the file to write or check")] = Path("dvc.yaml"),
) -> None:
    """Write dvc.yaml from the stage declarations (timoe/stage_specs.py)."""
    from timoe.atomic import atomic_write_text
    from timoe.stage_specs import dvc_yaml_text

    text = dvc_yaml_text()
    if check:
        if not path.is_file() or path.read_text() != text:
            raise UsageError(f"{path} differs from the stage declarations: run `timoe dvc-yaml`")
        typer.echo(f"{path} matches the stage declarations")
        return
    atomic_write_text(path, text)
    typer.echo(f"wrote {path}")


def _configfiles_in(args: list[str]) -> list[Path]:
    """The files named after --configfile/--configfiles in Snakemake's arguments.

    Also `--configfile=F` and argparse's unambiguous abbreviations (`--configf F`); the values run
    up to the next option, as Snakemake's `nargs="+"` takes them.
    """
    files: list[Path] = []
    taking = False
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag.startswith("--configf") and "--configfiles".startswith(flag):
            taking = not eq
            files += [Path(value)] if eq else []
        elif arg.startswith("-"):
            taking = False
        elif taking:
            files.append(Path(arg))
    return files


def _snakemake_reads_data_only() -> None:
    """Make this process's Snakemake read configfiles and profiles as data, never as YTE templates.

    Snakemake hands every configfile and profile to `yte.process_yaml`, which runs the Python of a
    file holding `__use_yte__: true`. Replacing it here is the backstop for files `timoe study`
    cannot see on its command line (a profile's `configfile:`, a profile itself): such a file stops
    Snakemake with the reason named, before any of its code runs.
    """
    import yte
    from snakemake_interface_common.exceptions import WorkflowError

    from timoe.config import parse_params_text

    def data_only(file_or_str: Any, *_: Any, **__: Any) -> dict[str, Any]:
        text = file_or_str if isinstance(file_or_str, str) else file_or_str.read()
        try:
            return parse_params_text(text, getattr(file_or_str, "name", "<text>"))
        except ConfigError as err:
            raise WorkflowError(str(err)) from None

    yte.process_yaml = data_only


@app.command(
    "study",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@handle_errors
def study(ctx: typer.Context) -> None:
    """Run the study with Snakemake, every params file checked first: `timoe study [SNAKEMAKE ARGS]`.

    The arguments are Snakemake's (`--cores 2 --profile workflow/profiles/default --configfile
    F`, `-n`, targets). params.yaml and each --configfile are read as data and validated together
    first (exit 2 naming the file or key): a file with `__use_yte__` or a Python tag, which bare
    `snakemake --configfile` would execute, is refused before Snakemake opens it. Snakemake then
    runs in this process, reading configfiles and profiles as data only.
    """
    from snakemake.cli import main as snakemake_main

    from timoe.launcher import fork_server, runs_elsewhere

    args = list(ctx.args)
    read_params([DEFAULT_PARAMS, *_configfiles_in(args)])
    _snakemake_reads_data_only()
    sys.argv = ["snakemake", *args]
    # Local jobs start from a fork server that has done their imports (timoe.launcher):
    # TIMOE_FORKSERVER=off turns it off.
    with fork_server(enabled=not runs_elsewhere(args)):
        snakemake_main(args)  # exits with Snakemake's own code


@app.command()
@handle_errors
def prepare(
    dataset: Annotated[str, typer.Option(help="data set name")],
    out: Annotated[Path, typer.Option(help="output directory")],
    params: ParamsOpt = None,
) -> None:
    """Windows, labels, subjects, split and modality map as parquet."""
    from timoe.stages.prepare import run_prepare

    p = read_params(params)
    info = run_prepare(p, dataset=_dataset(dataset, p), out_dir=out)
    typer.echo(f"prepared {dataset}: {info.get('counts', info)}")


@app.command()
@handle_errors
def quantify(
    dataset: Annotated[str, typer.Option()],
    data: Annotated[Path, typer.Option(help="prepared data directory")],
    out: Annotated[Path, typer.Option()],
    params: ParamsOpt = None,
) -> None:
    """Temporal RUS per modality pair × lag on the training split."""
    from timoe.stages.quantify import run_quantify

    p = read_params(params)
    summary = run_quantify(p, dataset=_dataset(dataset, p), data_dir=data, out_dir=out)
    typer.echo(f"quantified {dataset}: {summary['n_rows']} rows in {summary['seconds']:.1f} s")


StorageOpt = Annotated[
    str | None,
    typer.Option(
        help="SQLAlchemy URL or journal file; overrides $TIMOE_SWEEP_STORAGE and sweep.storage. "
        "Prefer the environment variable for URLs with a password (a command line is visible in ps)."
    ),
]
WorkerOpt = Annotated[
    bool, typer.Option("--worker", help="join a running study from its shared storage; write nothing")
]
WorkerIndexOpt = Annotated[
    int | None, typer.Option(help="--worker: offsets the sampler seed (default: the process id)")
]
StudyNameOpt = Annotated[
    str | None, typer.Option(help="--worker: the study to join (default: derived from the params)")
]
JoinTimeoutOpt = Annotated[
    float, typer.Option(help="--worker: seconds to wait for the driver to create the study")
]


@app.command()
@handle_errors
def sweep(
    dataset: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option()],
    data: Annotated[Path, typer.Option()],
    out: Annotated[Path | None, typer.Option(help="output directory (not with --worker)")] = None,
    rus: Annotated[Path | None, typer.Option(help="quantify output (RUS models)")] = None,
    n_trials: Annotated[int | None, typer.Option(help="override sweep.n_trials")] = None,
    storage: StorageOpt = None,
    worker: WorkerOpt = False,
    worker_index: WorkerIndexOpt = None,
    study_name: StudyNameOpt = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads; 0: train.num_threads")] = 0,
    join_timeout: JoinTimeoutOpt = 60.0,
    params: ParamsOpt = None,
) -> None:
    """Optuna study over the model's search space; best params to best_params.json.

    With --worker, join a study that a `timoe sweep` driver started (same params, same shared
    storage, e.g. PostgreSQL) and run trials until it holds n_trials; the driver summarises.
    """
    from timoe.stages.sweep import run_sweep, run_sweep_worker

    p = read_params(params)
    where = {"dataset": _dataset(dataset, p), "model": _model(model), "data_dir": data, "rus_dir": rus}
    if worker:
        if out is not None:
            raise UsageError("--worker writes no output; the driver (without --worker) owns --out")
        report = run_sweep_worker(
            p, **where, name=study_name, storage=storage, worker_index=worker_index,
            n_trials=n_trials, threads=threads, join_timeout_s=join_timeout,
        )  # fmt: skip
        typer.echo(f"sweep worker {report.worker}: ran {len(report.trials)} trial(s) {report.trials}")
        return
    if out is None:
        raise UsageError("--out is required (except with --worker)")
    if worker_index is not None or study_name is not None:
        raise UsageError("--worker-index and --study-name only apply with --worker")
    best = run_sweep(p, **where, out_dir=out, n_trials=n_trials, storage=storage)
    typer.echo(f"sweep {dataset}/{model}: best {best['value']} with {best['params']}")


@app.command("train")
@handle_errors
def train_cmd(
    dataset: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option()],
    seed: Annotated[int, typer.Option()],
    data: Annotated[Path, typer.Option()],
    out: Annotated[Path, typer.Option()],
    rus: Annotated[Path | None, typer.Option()] = None,
    sweep: Annotated[Path | None, typer.Option(help="sweep output with best_params.json")] = None,
    checkpoints: Annotated[Path | None, typer.Option(help="resume-checkpoint directory")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = False,
    params: ParamsOpt = None,
) -> None:
    """Train one model × data set × seed; test predictions for evaluate."""
    from timoe.stages.train import TrainJob, run_train

    p = read_params(params)
    job = TrainJob(
        dataset=_dataset(dataset, p),
        model=_model(model),
        seed=seed,
        data_dir=data,
        out_dir=out,
        rus_dir=rus,
        sweep_dir=sweep,
        checkpoint_dir=checkpoints,
    )
    s = run_train(p, job, progress=progress)
    typer.echo(
        f"trained {dataset}/{model}/seed{seed}: val acc {s['val_accuracy']:.4f}, "
        f"test acc {s['test_accuracy']:.4f}"
    )


@app.command()
@handle_errors
def check(
    out: Annotated[Path, typer.Option(help="output directory (results/checks)")],
    params: ParamsOpt = None,
) -> None:
    """Estimator checks on data with known RUS (estimator_check.csv), for the evaluate stage's claims."""
    from timoe.stages.check import run_check

    summary = run_check(read_params(params), out_dir=out)
    worst = ", ".join(f"x{f} {v:.3f}" for f, v in summary["max_abs_diff_bits"].items())
    typer.echo(
        f"estimator check: {summary['rows']} rows in {summary['seconds']:.1f} s; "
        f"max |multi-scale - per-lag| bits by steps factor: {worst}"
    )


@app.command()
@handle_errors
def evaluate(
    models: Annotated[list[Path], typer.Argument(help="train output directories")],
    out: Annotated[Path, typer.Option()],
    rus: Annotated[list[Path] | None, typer.Option(help="quantify outputs, for the RUS figures")] = None,
    sweeps: Annotated[list[Path] | None, typer.Option(help="sweep outputs, for the sweep history")] = None,
    checks: Annotated[
        Path | None,
        typer.Option(help="folder with the check stage's claim inputs (estimator_check.csv)"),
    ] = None,
    params: ParamsOpt = None,
) -> None:
    """Test metrics, mean ± std over seeds, paired tests, claims, figures and the HTML/Markdown report."""
    from timoe.stages.evaluate import run_evaluate, to_markdown

    p = read_params(params)
    summary = run_evaluate(
        p, model_dirs=models, out_dir=out, rus_dirs=rus, sweep_dirs=sweeps, checks_dir=checks
    )
    typer.echo(to_markdown(summary, [*p.evaluate.metrics, "auroc"]))
    typer.echo(f"report: {out / 'report.html'}")


@app.command()
@handle_errors
def server(
    backend_store_uri: Annotated[
        str,
        typer.Option(
            envvar="MLFLOW_BACKEND_STORE_URI",
            help="SQLAlchemy URL of the runs' database, e.g. postgresql://user@dbhost/mlflow (created if "
            "missing). Prefer the environment variable for a URL with a password.",
            show_default=False,
        ),
    ],
    artifacts_destination: Annotated[
        Path, typer.Option(help="where the server keeps artifacts it serves to clients")
    ] = Path("mlartifacts"),
    host: Annotated[
        str, typer.Option(help="address to bind; loopback by default, 0.0.0.0 opens it to other machines")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 5000,
    allowed_hosts: Annotated[
        str | None, typer.Option(help="with --host: Host names clients use (MLflow's DNS-rebinding guard)")
    ] = None,
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for the server to answer")] = 180.0,
) -> None:
    """Shared MLflow tracking server (PostgreSQL runs, served artifacts) until Ctrl-C or SIGTERM."""
    from timoe.server import ServerConfig, serve

    cfg = ServerConfig(backend_store_uri, artifacts_destination, host, port, allowed_hosts=allowed_hosts)
    raise typer.Exit(serve(cfg, ready_timeout_s=ready_timeout))


from timoe.audit_cli import audit_app  # noqa: E402  (registered last: the sub-app is self-contained)

app.add_typer(audit_app, name="audit")


if __name__ == "__main__":
    sys.exit(app())
