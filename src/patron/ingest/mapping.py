"""Column mappings: which file column feeds which Patron field, as data.

A mapping comes from a preset, a small YAML file, ``--map field=column`` flags, or a mix
(flags win over the file, the file over the preset). A value in ``columns`` is a column
name, or a template such as ``"{customer_id}-{date}-{line}"`` that builds a field from
several columns and the file line.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from patron.ingest.readers import Record
from patron.ingest.schemas import ChunkResult
from patron.kit.errors import InvalidInput

PRESETS = Path(__file__).resolve().parent / "presets"
Kind = Literal["customers", "orders", "products", "events"]


class Mapping(BaseModel):
    """How to read one kind of file."""

    kind: Kind | None = None
    source: str | None = Field(default=None, description="Source system; names its ids.")
    delimiter: str | None = Field(default=None, description="',', ';', '\\t', '|' or 'whitespace'.")
    encoding: str | None = None
    header: bool = True
    names: list[str] | None = Field(
        default=None, description="Column names of a file without them."
    )
    sheet: str | None = None
    timezone: str = Field(default="UTC", description="Zone of times written without an offset.")
    currency: str | None = None
    return_prefix: str | None = Field(
        default=None, description="An order id starting with this is a return (e.g. 'C')."
    )
    columns: dict[str, str] = Field(default_factory=dict)

    def merged(self, other: Mapping) -> Mapping:
        """``other`` layered over this mapping: its set fields and columns win."""
        data = self.model_dump()
        for name in other.model_fields_set:
            if name != "columns":
                data[name] = getattr(other, name)
        data["columns"] = {**self.columns, **other.columns}
        return Mapping.model_validate(data)


def load_mapping(path: Path) -> Mapping:
    """Read a YAML mapping file; errors name the file and the field."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: cannot read mapping: {exc}") from None
    try:
        return Mapping.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{path}: {where}: {first['msg']}") from None


def preset(name: str, kind: Kind) -> Mapping:
    """A built-in mapping, e.g. ``cdnow`` or ``online-retail``."""
    path = PRESETS / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise InvalidInput(f"unknown preset {name!r}; known presets: {known}")
    mapping = load_mapping(path)
    if mapping.kind and mapping.kind != kind:
        raise InvalidInput(f"preset {name!r} reads {mapping.kind}, not {kind}")
    return mapping


def parse_map_flags(flags: list[str]) -> dict[str, str]:
    """``["email=E-mail", "phone=Tel"]`` → ``{"email": "E-mail", "phone": "Tel"}``."""
    columns: dict[str, str] = {}
    for flag in flags:
        field, sep, column = flag.partition("=")
        if not sep or not field.strip() or not column:
            raise InvalidInput(f"--map {flag!r}: write it as field=column")
        columns[field.strip()] = column
    return columns


class Extractor:
    """Reads Patron fields out of a record under a mapping; unmapped fields keep their names."""

    def __init__(self, mapping: Mapping, fields: tuple[str, ...]) -> None:
        unknown = sorted(set(mapping.columns) - set(fields) - {"attributes", "properties"})
        unknown = [u for u in unknown if not u.startswith(("attr.", "prop."))]
        if unknown:
            raise InvalidInput(
                f"mapping names unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}"
            )
        self.plain: dict[str, str] = {}
        self.templates: dict[str, str] = {}
        for field in fields:
            column = mapping.columns.get(field, field)
            if any(name for _, name, _, _ in string.Formatter().parse(column) if name is not None):
                self.templates[field] = column
            else:
                self.plain[field] = column
        self.extra = {k: v for k, v in mapping.columns.items() if k.startswith(("attr.", "prop."))}
        # one flat list, because extract() runs once per row of files with millions of rows
        self.columns = [*self.plain.items(), *self.extra.items()]

    def extract(self, values: dict[str, Any], line: int) -> dict[str, Any]:
        """Field → value, with empty strings as ``None``."""
        get = values.get
        out = {
            field: None if (value := get(column)) == "" else value for field, column in self.columns
        }
        for field, template in self.templates.items():
            try:
                out[field] = template.format(line=line, **values)
            except KeyError as exc:
                raise InvalidInput(f"mapping for {field}: no column {exc.args[0]!r}") from None
        return out

    def fields_of(self, record: Record, result: ChunkResult) -> dict[str, Any] | None:
        """The record's fields, or ``None`` after rejecting a record that is unreadable."""
        if "__error__" in record.values:
            result.reject(record.line, record.values["__error__"], record.values)
            return None
        try:
            return self.extract(record.values, record.line)
        except InvalidInput as exc:
            result.reject(record.line, exc.message, record.values)
            return None

    def columns_used(self) -> set[str]:
        """File columns the mapping reads (the rest become attributes or properties)."""
        used = set(self.plain.values()) | set(self.extra.values())
        for template in self.templates.values():
            used |= {n for _, n, _, _ in string.Formatter().parse(template) if n}
        return used
