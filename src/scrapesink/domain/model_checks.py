"""The checks behind :func:`scrapesink.domain.declarations.parse_declaration`, one per part."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any, cast

from scrapesink.domain.models import (
    FIELD_TYPES,
    IDENTIFIER,
    RESERVED_PREFIXES,
    SYSTEM_COLUMNS,
    SYSTEM_TABLES,
    ChildDef,
    Declaration,
    FieldDef,
    FieldType,
    IndexDef,
    LinkDef,
    ModelDef,
    Relation,
)

MAX_MODEL_NAME = 63 - len("deleted_")  # 55


class Checker:
    """Walks a declaration, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.tables: dict[str, str] = {}  # table name -> path that declared it

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def declaration(self, data: Any) -> Declaration:
        if not isinstance(data, dict):
            self.problem("(top)", 'must be an object like {"models": {...}}')
            return Declaration()
        self.unknown_keys(data, {"models"}, "(top)")
        models = data.get("models")
        if not isinstance(models, dict) or not models:
            self.problem("models", "must be a non-empty object of model declarations")
            return Declaration()
        parsed: dict[str, ModelDef] = {}
        for name, spec in models.items():
            model = self.model(name, spec, f"models.{name}")
            if model is not None:
                parsed[name] = model
        for model in parsed.values():  # links may point at models declared after them
            for i, link in enumerate(model.links):
                if link.model not in models:
                    self.problem(
                        f"models.{model.name}.links[{i}].model",
                        f"unknown model {link.model!r}",
                    )
        return Declaration(parsed)

    def model(self, name: str, spec: Any, path: str) -> ModelDef | None:
        if self.identifier(name, path, "model name") and len(name) > MAX_MODEL_NAME:
            # PostgreSQL cuts identifiers at 63 bytes, silently: two long names would share
            # one upsert_/delete_/deleted_ function (the other model's records deleted).
            self.problem(
                path,
                f"model name {name!r} is {len(name)} characters: at most {MAX_MODEL_NAME}, so"
                " that its functions' names (deleted_<name>) fit PostgreSQL's 63",
            )
        if not isinstance(spec, dict):
            self.problem(path, "must be an object")
            return None
        self.unknown_keys(
            spec,
            {"table_name", "natural_key", "strict", "fields", "indexes", "children", "links"},
            path,
        )
        table = self.table(spec.get("table_name", name), f"{path}.table_name")
        fields = self.fields(spec.get("fields"), f"{path}.fields", required=True)
        names = {f.name for f in fields}
        natural = spec.get("natural_key")
        if natural is None:
            natural_key = tuple(f.name for f in fields if f.primary_key)
            if not natural_key and fields:
                self.problem(path, "no natural key: set natural_key or mark a primary_key field")
        else:
            natural_key = self.names(natural, f"{path}.natural_key", names)
            if not natural_key:
                self.problem(f"{path}.natural_key", "must name at least one field")
        for key in natural_key:
            f = next((f for f in fields if f.name == key), None)
            if f is not None and f.type == "json":
                self.problem(f"{path}.natural_key", f"{key!r} is json and cannot be a key")
        strict = self.boolean(spec.get("strict", False), f"{path}.strict")
        indexes = self.indexes(spec.get("indexes", []), f"{path}.indexes", fields)
        children = self.children(spec.get("children", []), f"{path}.children")
        links = self.links(spec.get("links", []), f"{path}.links", name)
        return ModelDef(name, table, natural_key, fields, indexes, children, links, strict)

    def fields(self, data: Any, path: str, *, required: bool) -> tuple[FieldDef, ...]:
        if data is None and not required:
            return ()
        if not isinstance(data, list) or (required and not data):
            self.problem(path, "must be a non-empty list of fields")
            return ()
        parsed: list[FieldDef] = []
        seen: set[str] = set()
        for i, spec in enumerate(data):
            f = self.field(spec, f"{path}[{i}]")
            if f is None:
                continue
            if f.name in seen:
                self.problem(f"{path}[{i}].name", f"field {f.name!r} is declared twice")
            seen.add(f.name)
            parsed.append(f)
        return tuple(parsed)

    def field(self, spec: Any, path: str) -> FieldDef | None:
        if not isinstance(spec, dict):
            self.problem(path, "must be an object")
            return None
        self.unknown_keys(
            spec, {"name", "type", "nullable", "primary_key", "default", "index", "search"}, path
        )
        name = spec.get("name")
        ok = self.identifier(name, f"{path}.name", "field name")
        if ok and name in SYSTEM_COLUMNS:
            self.problem(f"{path}.name", f"{name!r} is a column scrapesink adds itself")
        kind = spec.get("type")
        if kind not in FIELD_TYPES:
            shown = json.dumps(kind) if kind is not None else "missing"
            self.problem(f"{path}.type", f"unknown type {shown} (one of {', '.join(FIELD_TYPES)})")
            kind = "text"  # a stand-in that triggers no further, derived complaints
        primary = self.boolean(spec.get("primary_key", False), f"{path}.primary_key")
        nullable = self.boolean(spec.get("nullable", not primary), f"{path}.nullable")
        if primary and nullable:
            self.problem(f"{path}.nullable", "a primary_key field cannot be nullable")
        index = spec.get("index", False)
        if index not in (False, True, "gin"):
            self.problem(f"{path}.index", 'must be true, false or "gin"')
            index = False
        if index == "gin" and kind != "json":
            self.problem(f"{path}.index", "a gin index needs a json field")
        search = self.boolean(spec.get("search", False), f"{path}.search")
        if search and kind not in ("string", "text"):
            self.problem(f"{path}.search", "only string and text fields can be searched")
        default = spec.get("default")
        if default is not None and not _fits(kind, default):
            self.problem(f"{path}.default", f"{json.dumps(default)} is not a valid {kind}")
        if not ok:
            return None
        return FieldDef(str(name), cast(FieldType, kind), nullable, primary, default, index, search)

    def indexes(self, data: Any, path: str, fields: tuple[FieldDef, ...]) -> tuple[IndexDef, ...]:
        names = {f.name for f in fields}
        parsed = []
        for where, spec in self.objects(data, path):
            self.unknown_keys(spec, {"fields", "unique", "using"}, where)
            columns = self.names(spec.get("fields"), f"{where}.fields", names)
            if not columns:
                self.problem(f"{where}.fields", "must name at least one field")
            using = spec.get("using", "btree")
            if using not in ("btree", "gin"):
                self.problem(f"{where}.using", 'must be "btree" or "gin"')
                using = "btree"
            unique = self.boolean(spec.get("unique", False), f"{where}.unique")
            parsed.append(IndexDef(columns, unique, using))
        return tuple(parsed)

    def children(self, data: Any, path: str) -> tuple[ChildDef, ...]:
        parsed = []
        for where, spec in self.objects(data, path):
            self.unknown_keys(spec, {"name", "table_name", "relation", "key", "fields"}, where)
            name = spec.get("name")
            if not self.identifier(name, f"{where}.name", "child name"):
                continue
            table = self.table(spec.get("table_name", name), f"{where}.table_name")
            relation = spec.get("relation")
            if relation not in ("one", "many"):
                self.problem(f"{where}.relation", 'must be "one" (1:1) or "many" (1:N)')
                relation = "one"
            fields = self.fields(spec.get("fields"), f"{where}.fields", required=True)
            key: tuple[str, ...] = ()
            if relation == "many":
                key = self.names(spec.get("key"), f"{where}.key", {f.name for f in fields})
                if not key:
                    self.problem(f"{where}.key", "a many child needs the fields telling rows apart")
            elif "key" in spec:
                self.problem(f"{where}.key", "only a many child has a key")
            parsed.append(ChildDef(str(name), table, cast(Relation, relation), fields, key))
        return tuple(parsed)

    def links(self, data: Any, path: str, owner: str) -> tuple[LinkDef, ...]:
        parsed = []
        for where, spec in self.objects(data, path):
            self.unknown_keys(spec, {"name", "model", "table_name", "fields"}, where)
            name = spec.get("name")
            model = spec.get("model")
            ok = self.identifier(name, f"{where}.name", "link name")
            ok = self.identifier(model, f"{where}.model", "model name") and ok
            if not ok:
                continue
            table = self.table(spec.get("table_name", f"{owner}_{name}"), f"{where}.table_name")
            fields = self.fields(spec.get("fields"), f"{where}.fields", required=False)
            parsed.append(LinkDef(str(name), str(model), table, fields))
        return tuple(parsed)

    # -- small checks ---------------------------------------------------------------------------
    def objects(self, data: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
        """The objects of a list, each with its path; anything else is reported."""
        if not isinstance(data, list):
            self.problem(path, "must be a list")
            return []
        found = []
        for i, spec in enumerate(data):
            if isinstance(spec, dict):
                found.append((f"{path}[{i}]", spec))
            else:
                self.problem(f"{path}[{i}]", "must be an object")
        return found

    def identifier(self, value: Any, path: str, what: str) -> bool:
        if not isinstance(value, str) or not IDENTIFIER.match(value):
            shown = json.dumps(value) if value is not None else "missing"
            self.problem(
                path, f"{what} {shown} is not an identifier (a-z, 0-9, _; at most 63 characters)"
            )
            return False
        return True

    def table(self, value: Any, path: str) -> str:
        if not self.identifier(value, path, "table name"):
            return "invalid"
        if value in SYSTEM_TABLES:
            self.problem(path, f"table name {value!r} is one of scrapesink's own tables")
        elif value.startswith(RESERVED_PREFIXES):
            prefix = next(p for p in RESERVED_PREFIXES if value.startswith(p))
            self.problem(path, f"table name {value!r}: names starting with {prefix!r} are reserved")
        if value in self.tables:
            self.problem(path, f"table {value!r} is already used by {self.tables[value]}")
        self.tables[value] = path.rsplit(".", 1)[0]
        return str(value)

    def names(self, value: Any, path: str, known: set[str]) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(path, "must be a list of field names")
            return ()
        for i, name in enumerate(value):
            if name not in known:
                self.problem(f"{path}[{i}]", f"unknown field {name!r}")
        if len(set(value)) != len(value):
            self.problem(path, "names a field twice")
        return tuple(value)

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.problem(path, f"must be true or false, got {json.dumps(value)}")
            return False
        return value

    def unknown_keys(self, spec: dict[str, Any], allowed: set[str], path: str) -> None:
        for key in spec:
            if key not in allowed:
                self.problem(
                    f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )


def _fits(kind: str, value: Any) -> bool:
    """Whether a declared default is a value of the field's type."""
    match kind:
        case "integer" | "bigint":
            return isinstance(value, int) and not isinstance(value, bool)
        case "float" | "numeric":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "string" | "text":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "date":
            return isinstance(value, str) and _parses(date.fromisoformat, value)
        case "datetime":
            return isinstance(value, str) and _parses(datetime.fromisoformat, value)
    return True  # json: anything JSON can hold


def _parses(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True
