"""JSON Schema (draft 2020-12, as OpenAPI 3.1 uses it) generated from Python types.

The API's answers are TypedDicts and dataclasses; this turns them into schemas, each named
type once under `components/schemas`, so the description is derived from the very types the
views build their answers with. Keywords on scalars come from `rollup.jsonshape.Keywords` in
`Annotated` metadata. Objects are closed (`additionalProperties: false`): a field a view adds
without its type saying so fails validation, and the type checker refuses it first."""

import dataclasses
import types
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from rollup.jsonshape import Keywords

REF_PREFIX = "#/components/schemas/"
_SCALARS: dict[type, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


class SchemaBuilder:
    """Collects the named object types it meets into `components`."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def ref(self, tp: Any) -> dict[str, Any]:
        """The schema of `tp`: a `$ref` for a TypedDict or dataclass, inline otherwise."""
        origin = get_origin(tp)
        if origin is Annotated:
            return self._annotated(tp)
        if origin in (NotRequired, Required):
            return self.ref(get_args(tp)[0])
        if tp is Any:
            return {}
        if tp is type(None):
            return {"type": "null"}
        if origin is Literal:
            return _literal(get_args(tp))
        if origin in (Union, types.UnionType):
            return self._union(get_args(tp))
        if origin is list or (origin is tuple and get_args(tp)[1:] == (Ellipsis,)):
            return {"type": "array", "items": self.ref(get_args(tp)[0])}
        if origin is tuple:
            members = [self.ref(a) for a in get_args(tp)]
            return {
                "type": "array",
                "prefixItems": members,
                "minItems": len(members),
                "maxItems": len(members),
            }
        if origin is dict:
            key, value = get_args(tp)
            if key is not str:
                raise TypeError(f"JSON object keys are strings, not {key!r}")
            return {"type": "object", "additionalProperties": self.ref(value)}
        if is_typeddict(tp) or dataclasses.is_dataclass(tp):
            return self._named(tp)
        supertype = getattr(tp, "__supertype__", None)  # typing.NewType
        if supertype is not None:
            return self.ref(supertype)
        if isinstance(tp, type) and tp in _SCALARS:
            return {"type": _SCALARS[tp]}
        raise TypeError(f"no JSON Schema for {tp!r}")

    def _annotated(self, tp: Any) -> dict[str, Any]:
        base, *extras = get_args(tp)
        schema = dict(self.ref(base))
        for extra in extras:
            if isinstance(extra, Keywords):
                schema.update(extra.as_dict())
        return schema

    def _union(self, members: tuple[Any, ...]) -> dict[str, Any]:
        return {"anyOf": [self.ref(m) for m in members]}

    def _named(self, tp: type) -> dict[str, Any]:
        name = tp.__name__
        if name not in self.components:
            self.components[name] = {}  # reserved first: a type may refer to itself
            self.components[name] = self._object(tp)
        elif self.components[name].get("x-python-type") not in (None, _qualname(tp)):
            raise TypeError(f"two API types are named {name}")
        return {"$ref": REF_PREFIX + name}

    def _object(self, tp: type) -> dict[str, Any]:
        hints = get_type_hints(tp, include_extras=True)
        if is_typeddict(tp):
            required = sorted(getattr(tp, "__required_keys__", frozenset()))
        else:
            fields = dataclasses.fields(tp)
            hints = {f.name: hints[f.name] for f in fields}
            required = sorted(hints)
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: self.ref(hint) for name, hint in hints.items()},
            "required": required,
            "additionalProperties": False,
            "x-python-type": _qualname(tp),
        }
        doc = tp.__doc__
        if doc and not doc.startswith(tp.__name__ + "("):  # skip dataclasses' generated doc
            schema["description"] = " ".join(doc.split())
        return schema


def _literal(values: tuple[Any, ...]) -> dict[str, Any]:
    kinds = {_SCALARS[type(v)] for v in values}
    schema: dict[str, Any] = {"enum": list(values)}
    if len(kinds) == 1:
        schema["type"] = kinds.pop()
    return schema


def _qualname(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"
