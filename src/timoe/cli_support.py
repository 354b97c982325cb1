"""What every `timoe` command shares: the exit codes, the one error handler, the params option.

Exit codes (the same for `timoe <stage>` and `timoe audit ...`):

    0  success
    1  a bug: an error timoe did not expect; the traceback is printed before the one-line summary
    2  a user error: bad params or arguments, missing or malformed input, an unknown run; one line
       naming the problem, no traceback, nothing half-written
    3  `timoe audit reproduce` ran, and the rerun's metrics differ from the recorded ones

Params: `--params/-p FILE` (repeatable, later files override earlier ones). Without it, every
command reads `params.yaml` in the working directory, and says so when it is missing.
"""

from __future__ import annotations

import functools
import pickle
import traceback
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from timoe.config import ConfigError, Params, load_params

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_PARAMS = Path("params.yaml")


class ExitCode(IntEnum):
    OK = 0
    BUG = 1
    USER_ERROR = 2
    MISMATCH = 3


class UsageError(ValueError):
    """A command-line argument that does not make sense."""


ParamsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--params", "-p", help=f"params files, later ones override earlier ones [default: {DEFAULT_PARAMS}]"
    ),
]


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input, not a bug: they end in one line and exit 2.

    Imported lazily: the data, audit and MLflow modules are heavy, and `--help` needs none of them.
    """
    from mlflow.exceptions import MlflowException

    from timoe.audit import AuditError
    from timoe.data import errors as data_errors

    data = [v for v in vars(data_errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    return (
        ConfigError,
        UsageError,
        AuditError,
        MlflowException,  # an unknown run or experiment, an unreachable tracking server
        FileNotFoundError,
        NotADirectoryError,
        PermissionError,
        pickle.UnpicklingError,
        *data,
    )


def handle_errors(fn: F) -> F:
    """Run a command; map user errors to one line and exit 2, anything else to a traceback and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except Exception as err:
            if isinstance(err, user_errors()):
                typer.echo(f"timoe: error: {err}", err=True)
                raise typer.Exit(ExitCode.USER_ERROR) from None
            traceback.print_exc()
            typer.echo(f"timoe: error: unexpected {type(err).__name__}: {err}", err=True)
            raise typer.Exit(ExitCode.BUG) from None

    return wrapper  # type: ignore[return-value]


def read_params(paths: list[Path] | None) -> Params:
    """The validated params from `paths`, or from ./params.yaml when none are given."""
    files = paths or [DEFAULT_PARAMS]
    missing = [str(p) for p in files if not Path(p).is_file()]
    if missing:
        hint = "" if paths else " (run in the project folder, or pass --params)"
        raise ConfigError(f"params file(s) not found: {', '.join(missing)}{hint}")
    return load_params(*files)


def tracking_uri(uri: str | None, params: list[Path] | None) -> str:
    """--tracking-uri when given, else tracking.uri from the params files (read as every command does)."""
    return uri if uri else read_params(params).tracking.uri
