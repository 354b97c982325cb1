"""`timoe <stage>`: the command line that Snakemake rules (and people) call.

Every command validates the params first. Expected failures (bad params, a missing data
package, a corrupted input, an unknown data set) end with one line naming the problem and
exit code 2; outputs are written atomically, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import functools
import pickle
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from timoe.config import DATASET_NAMES, ConfigError, Params, load_params

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
F = TypeVar("F", bound=Callable[..., Any])

ParamsOpt = Annotated[
    list[Path] | None,
    typer.Option("--params", "-p", help="params files, later ones override earlier ones"),
]
DEFAULT_PARAMS = [Path("params.yaml")]


class UsageError(ValueError):
    """A command-line argument that does not make sense."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from timoe.data import errors as data_errors

    return (
        ConfigError,
        UsageError,
        FileNotFoundError,
        pickle.UnpicklingError,
        *[v for v in vars(data_errors).values() if isinstance(v, type) and issubclass(v, Exception)],
    )


def clean_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except Exception as err:
            if isinstance(err, _expected_errors()):
                typer.echo(f"timoe: error: {err}", err=True)
                raise typer.Exit(2) from None
            traceback.print_exc()
            typer.echo(f"timoe: error: unexpected {type(err).__name__}: {err}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _params(paths: list[Path] | None) -> Params:
    return load_params(*(paths or DEFAULT_PARAMS))


def _dataset(name: str) -> str:
    if name not in DATASET_NAMES:
        from timoe.data.registry import get_dataset

        get_dataset(name)  # raises the registry's error listing known data sets
    return name


@app.command()
@clean_errors
def validate(params: ParamsOpt = None) -> None:
    """Validate params files and print the resolved config."""
    import yaml

    p = _params(params)
    typer.echo(yaml.safe_dump(p.model_dump(), sort_keys=False))


@app.command("init-tracking")
@clean_errors
def init_tracking(params: ParamsOpt = None) -> None:
    """Create the MLflow store once, before parallel jobs start."""
    from timoe.tracking import init_store

    p = _params(params)
    init_store(p.tracking.uri)
    typer.echo(f"tracking store ready: {p.tracking.uri}")


@app.command("dvc-remote")
@clean_errors
def dvc_remote(params: ParamsOpt = None) -> None:
    """Point DVC's default remote at tracking.dvc_remote (written to .dvc/config.local)."""
    from timoe.workflow_support import configure_dvc_remote

    p = _params(params)
    url = configure_dvc_remote(p.tracking.dvc_remote, Path("."))
    typer.echo(f"DVC remote 'default' -> {url}")


@app.command()
@clean_errors
def prepare(
    dataset: Annotated[str, typer.Option(help="data set name")],
    out: Annotated[Path, typer.Option(help="output directory")],
    params: ParamsOpt = None,
) -> None:
    """Windows, labels, subjects, split and modality map as parquet."""
    from timoe.stages.prepare import run_prepare

    p = _params(params)
    info = run_prepare(p, dataset=_dataset(dataset), out_dir=out)
    typer.echo(f"prepared {dataset}: {info.get('counts', info)}")


@app.command()
@clean_errors
def quantify(
    dataset: Annotated[str, typer.Option()],
    data: Annotated[Path, typer.Option(help="prepared data directory")],
    out: Annotated[Path, typer.Option()],
    params: ParamsOpt = None,
) -> None:
    """Temporal RUS per modality pair × lag on the training split."""
    from timoe.stages.quantify import run_quantify

    p = _params(params)
    summary = run_quantify(p, dataset=_dataset(dataset), data_dir=data, out_dir=out)
    typer.echo(f"quantified {dataset}: {summary['n_rows']} rows in {summary['seconds']:.1f} s")


def _model(name: str, p: Params) -> str:
    from timoe.config import MODEL_NAMES

    if name not in MODEL_NAMES:
        raise UsageError(f"unknown model {name!r}; known: {list(MODEL_NAMES)}")
    return name


@app.command()
@clean_errors
def sweep(
    dataset: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option()],
    data: Annotated[Path, typer.Option()],
    out: Annotated[Path | None, typer.Option(help="output directory (not with --worker)")] = None,
    rus: Annotated[Path | None, typer.Option(help="quantify output (RUS models)")] = None,
    n_trials: Annotated[int | None, typer.Option(help="override sweep.n_trials")] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL or journal file; overrides $TIMOE_SWEEP_STORAGE and sweep.storage. "
            "Prefer the environment variable for URLs with a password (a command line is visible in ps)."
        ),
    ] = None,
    worker: Annotated[
        bool, typer.Option("--worker", help="join a running study from its shared storage; write nothing")
    ] = False,
    worker_index: Annotated[
        int | None, typer.Option(help="--worker: offsets the sampler seed (default: the process id)")
    ] = None,
    study_name: Annotated[
        str | None, typer.Option(help="--worker: the study to join (default: derived from the params)")
    ] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads; 0: train.num_threads")] = 0,
    join_timeout: Annotated[
        float, typer.Option(help="--worker: seconds to wait for the driver to create the study")
    ] = 60.0,
    params: ParamsOpt = None,
) -> None:
    """Optuna study over the model's search space; best params to best_params.json.

    With --worker, join a study that a `timoe sweep` driver started (same params, same shared
    storage, e.g. PostgreSQL) and run trials until it holds n_trials; the driver summarises.
    """
    from timoe.stages.sweep import run_sweep, run_sweep_worker

    p = _params(params)
    if worker:
        if out is not None:
            raise UsageError("--worker writes no output; the driver (without --worker) owns --out")
        report = run_sweep_worker(
            p,
            dataset=_dataset(dataset),
            model=_model(model, p),
            data_dir=data,
            rus_dir=rus,
            name=study_name,
            storage=storage,
            worker_index=worker_index,
            n_trials=n_trials,
            threads=threads,
            join_timeout_s=join_timeout,
        )
        typer.echo(f"sweep worker {report.worker}: ran {len(report.trials)} trial(s) {report.trials}")
        return
    if out is None:
        raise UsageError("--out is required (except with --worker)")
    if worker_index is not None or study_name is not None:
        raise UsageError("--worker-index and --study-name only apply with --worker")
    best = run_sweep(
        p,
        dataset=_dataset(dataset),
        model=_model(model, p),
        data_dir=data,
        out_dir=out,
        rus_dir=rus,
        n_trials=n_trials,
        storage=storage,
    )
    typer.echo(f"sweep {dataset}/{model}: best {best['value']} with {best['params']}")


@app.command("train")
@clean_errors
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

    p = _params(params)
    job = TrainJob(
        dataset=_dataset(dataset),
        model=_model(model, p),
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
@clean_errors
def evaluate(
    models: Annotated[list[Path], typer.Argument(help="train output directories")],
    out: Annotated[Path, typer.Option()],
    rus: Annotated[list[Path] | None, typer.Option(help="quantify outputs, for the RUS figures")] = None,
    sweeps: Annotated[list[Path] | None, typer.Option(help="sweep outputs, for the sweep history")] = None,
    checks: Annotated[
        Path | None,
        typer.Option(help="folder with optional claim inputs (estimator_check.csv, lag_runs.csv)"),
    ] = None,
    params: ParamsOpt = None,
) -> None:
    """Test metrics, mean ± std over seeds, paired tests, claims, figures and the HTML/Markdown report."""
    from timoe.stages.evaluate import run_evaluate, to_markdown

    p = _params(params)
    summary = run_evaluate(
        p, model_dirs=models, out_dir=out, rus_dirs=rus, sweep_dirs=sweeps, checks_dir=checks
    )
    typer.echo(to_markdown(summary, [*p.evaluate.metrics, "auroc"]))
    typer.echo(f"report: {out / 'report.html'}")


@app.command()
@clean_errors
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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
