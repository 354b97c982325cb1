"""`timoe audit ...`: list, show, compare, trace and reproduce past runs.

The store is the one in the params files (tracking.uri; params.yaml unless --params names
others) unless --tracking-uri names another: a local SQLite file or a tracking-server URL.
Exit codes as for every `timoe` command (timoe.cli_support); `reproduce` exits 0 on an exact
match and 3 when the metrics differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from timoe.cli_support import ExitCode, ParamsOpt, handle_errors, tracking_uri

audit_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

UriOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI; default: tracking.uri from the params files"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]


def _store(uri: str | None, params: list[Path] | None) -> Any:
    from timoe.audit.store import Store

    return Store(tracking_uri(uri, params))


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


@audit_app.command("list")
@handle_errors
def list_cmd(
    dataset: Annotated[str | None, typer.Option(help="data set (tag wildcard.dataset)")] = None,
    model: Annotated[str | None, typer.Option(help="model (tag wildcard.model)")] = None,
    stage: Annotated[
        str | None, typer.Option(help="prepare, quantify, sweep, sweep-trial, train, evaluate")
    ] = None,
    status: Annotated[str | None, typer.Option(help="FINISHED, FAILED, RUNNING, KILLED")] = None,
    since: Annotated[str | None, typer.Option(help="started on or after (YYYY-MM-DD[THH:MM])")] = None,
    until: Annotated[
        str | None, typer.Option(help="started on or before (a bare date includes that day)")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="threshold, e.g. 'test_accuracy>=0.9' (repeatable)")
    ] = None,
    column: Annotated[list[str] | None, typer.Option(help="extra metric column (repeatable)")] = None,
    experiment: Annotated[str | None, typer.Option(help="only this MLflow experiment")] = None,
    trials: Annotated[bool, typer.Option("--trials", help="include Optuna trial runs")] = False,
    limit: Annotated[int, typer.Option(min=1, help="at most this many runs, newest first")] = 50,
    tracking_uri: UriOpt = None,
    params: ParamsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Runs matching the filters, newest first, as a table."""
    from timoe.audit.store import RunFilter, parse_metric_filter
    from timoe.audit.views import list_table, metric_columns, run_record

    store = _store(tracking_uri, params)
    thresholds = [parse_metric_filter(m) for m in metric or []]
    flt = RunFilter(
        dataset=dataset,
        model=model,
        stage=stage,
        status=status,
        since=since,
        until=until,
        experiment=experiment,
        metrics=thresholds,
        include_trials=trials,
    )
    runs = store.list_runs(flt, limit=limit)
    if as_json:
        _print_json([run_record(r, store) for r in runs])
        return
    cols = metric_columns(runs, [*(m.name for m in thresholds), *(column or [])])
    typer.echo(list_table(runs, cols))


@audit_app.command()
@handle_errors
def show(
    run: Annotated[str, typer.Argument(help="run id (or a unique prefix) or an output path with run_id.txt")],
    tracking_uri: UriOpt = None,
    params: ParamsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One run: params, metrics, tags, artifacts, parent and children."""
    from timoe.audit.lineage import resolve_target
    from timoe.audit.views import run_record, show_text

    store = _store(tracking_uri, params)
    r = resolve_target(store, run)
    if as_json:
        rec = run_record(r, store)
        rec["children"] = [c.info.run_id for c in store.children(r.info.run_id)]
        rec["artifacts"] = [{"path": p, "size": s} for p, s in store.artifacts(r.info.run_id)]
        _print_json(rec)
        return
    typer.echo(show_text(store, r))


@audit_app.command()
@handle_errors
def compare(
    runs: Annotated[list[str], typer.Argument(help="two or more run ids (or prefixes, or output paths)")],
    show_all: Annotated[bool, typer.Option("--all", help="show equal keys too")] = False,
    tracking_uri: UriOpt = None,
    params: ParamsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Differences in params, metrics and lineage tags between runs."""
    from timoe.audit import AuditError
    from timoe.audit.lineage import resolve_target
    from timoe.audit.views import compare_data, compare_text

    if len(runs) < 2:
        raise AuditError("compare needs at least two runs")
    store = _store(tracking_uri, params)
    data = compare_data([resolve_target(store, r) for r in runs], show_all=show_all)
    if as_json:
        _print_json(data)
        return
    typer.echo(compare_text(data))


@audit_app.command()
@handle_errors
def lineage(
    target: Annotated[str, typer.Argument(help="run id (or prefix) or an output path containing run_id.txt")],
    root: Annotated[
        Path, typer.Option(help="directory that recorded relative input paths start from")
    ] = Path("."),
    verify: Annotated[
        bool, typer.Option(help="hash the local inputs and compare with the recorded hashes")
    ] = True,
    tracking_uri: UriOpt = None,
    params: ParamsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A result's tree of inputs and the runs that made them, down to git commits and data hashes."""
    from timoe.audit.lineage import build_lineage, render

    store = _store(tracking_uri, params)
    tree = build_lineage(store, target, root=root, verify=verify)
    if as_json:
        _print_json(tree)
        return
    typer.echo(render(tree))


@audit_app.command()
@handle_errors
def reproduce(
    run: Annotated[str, typer.Argument(help="run id (or prefix) or an output path containing run_id.txt")],
    repo: Annotated[Path, typer.Option(help="the git repository the run was made in")] = Path("."),
    device: Annotated[
        str, typer.Option(help="recorded (CPU unless the run used CUDA and CUDA is here), cpu, cuda")
    ] = "recorded",
    rerun_uri: Annotated[
        str | None,
        typer.Option(
            help="tracking URI the rerun logs to; default: a scratch SQLite store that is deleted afterwards"
        ),
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="where to make the temporary directory")] = None,
    keep: Annotated[bool, typer.Option(help="keep the worktree, params and outputs for inspection")] = False,
    ignore_metric: Annotated[
        list[str] | None,
        typer.Option(help="glob of metrics not to compare (repeatable; timing metrics are never compared)"),
    ] = None,
    tracking_uri: UriOpt = None,
    params: ParamsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rerun a job at its commit with its config and inputs; exit 0 if the metrics match exactly, 3 if not."""
    from timoe.audit import AuditError
    from timoe.audit.lineage import resolve_target
    from timoe.audit.reproduce import outcome_json, report, reproduce
    from timoe.audit.rerun import DEFAULT_IGNORE

    if device not in ("recorded", "cpu", "cuda"):
        raise AuditError(f"--device must be recorded, cpu or cuda, not {device!r}")
    store = _store(tracking_uri, params)
    run_id = resolve_target(store, run).info.run_id

    def echo(line: str) -> None:
        typer.echo(line, err=as_json)  # progress to stderr when stdout carries JSON

    outcome = reproduce(
        store,
        run_id,
        repo=repo,
        device=device,
        rerun_uri=rerun_uri,
        workdir=workdir,
        keep=keep,
        ignore=(*DEFAULT_IGNORE, *(ignore_metric or [])),
        echo=echo,
    )
    if as_json:
        _print_json(outcome_json(outcome))
    else:
        typer.echo(report(outcome))
    raise typer.Exit(ExitCode.MISMATCH if outcome.exit_code else ExitCode.OK)
