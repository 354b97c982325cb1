"""Record which params keys code reads, on real validated params.

`recording(params)` returns a deep copy whose every section is an instance of a recording
subclass of its own class (so isinstance checks, pydantic methods and attribute access work as
before). Reading a leaf field records its dotted key; `section.model_dump()` records the
section whole. Dumping the root records nothing: that is the run's audit record (MLflow's
full_params, an override's re-validation), not a read of any one setting.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from timoe.config import Params

_PATH_ATTR = "_recorded_path"


def _recording_class(cls: type[BaseModel], log: set[str], paths: dict[int, str]) -> type[BaseModel]:
    def __getattribute__(self: BaseModel, name: str) -> Any:
        value = super(sub, self).__getattribute__(name)
        if name in type(self).model_fields and not isinstance(value, BaseModel):
            log.add(paths[id(self)] + name)
        return value

    def model_dump(self: BaseModel, *args: Any, **kwargs: Any) -> dict[str, Any]:
        path = paths[id(self)]
        if path:
            log.add(path.rstrip("."))
        return super(sub, self).model_dump(*args, **kwargs)

    sub = type(
        cls.__name__,
        (cls,),
        {"__getattribute__": __getattribute__, "model_dump": model_dump, "__slots__": ()},
    )
    return sub


def _instrument(model: BaseModel, path: str, log: set[str], paths: dict[int, str], made: dict) -> None:
    paths[id(model)] = path
    for name in type(model).model_fields:
        value = model.__dict__[name]
        if isinstance(value, BaseModel):
            _instrument(value, f"{path}{name}.", log, paths, made)
    cls = type(model)
    if cls not in made:
        made[cls] = _recording_class(cls, log, paths)
    object.__setattr__(model, "__class__", made[cls])


class ReadLog:
    """The keys read through params made by `record`; one log for several params objects."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self._paths: dict[int, str] = {}
        self._classes: dict[type, type] = {}
        self._kept: list[Params] = []  # keeps ids in _paths valid for the log's lifetime

    def record(self, params: Params) -> Params:
        copy = params.model_copy(deep=True)
        _instrument(copy, "", self.keys, self._paths, self._classes)
        self._kept.append(copy)
        return copy
