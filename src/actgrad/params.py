"""params.yaml: read as YAML 1.2 (ruamel, as DVC reads it), a key written twice refused, and
validated one section at a time against pydantic models, each error one line naming its key.

The schema of each section stands with what it configures: the data sections here (they need
no torch), the pieces in pieces/, the recipes in recipes.py. Every model derives from
`Section`: frozen, strict (no "1" for 1) and closed (an unknown key is named with the keys
allowed).
"""

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .errors import ParamsError


class Section(BaseModel):
    """A mapping of params.yaml: its keys are the fields, nothing else."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
    unnamed: ClassVar = ()  # fields that params.yaml does not write as keys

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, values):
        if isinstance(values, dict):
            for key in values:
                if key not in cls.model_fields:
                    allowed = ", ".join(k for k in cls.model_fields if k not in cls.unnamed)
                    raise invalid(key, f"unknown key; allowed keys are {allowed}")
        return values


def invalid(key, message):
    """The error of a validator that judges `key` of its section: `key: message`."""
    return PydanticCustomError("invalid", message, {"key": str(key)})


def load_yaml(text):
    """YAML text as plain values, read as YAML 1.2 (`1e-3` is a number) the way DVC reads
    params.yaml and writes dvc.lock; a key written twice is an error."""
    return YAML(typ="safe", pure=True).load(text)


def read_values(path="params.yaml"):
    """params.yaml as plain values (dicts, lists, numbers, strings), unvalidated."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        return load_yaml(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        problem = " ".join(str(e.problem or e.context).split())
        raise ParamsError(f"{path}: {where}{problem}") from None
    except YAMLError as e:
        raise ParamsError(f"{path}: {' '.join(str(e).split())}") from None


def _frozen(values):
    """YAML sequences as tuples, so that a frozen section holds no list."""
    if isinstance(values, dict):
        return {k: _frozen(v) for k, v in values.items()}
    if isinstance(values, list | tuple):
        return tuple(_frozen(v) for v in values)
    return values


def validate(model, values, key):
    """`values` (the mapping at dotted `key` of params.yaml) as a `model`; ParamsError naming the
    first bad key."""
    values = _frozen(values)
    try:
        return model.model_validate({} if values is None else values)
    except ValidationError as e:
        raise ParamsError(_message(e.errors()[0], values, key)) from None


def _where(key, loc, values):
    """(the dotted key of a pydantic error location, the value written there). The tag that
    pydantic adds for a piece written as {name: ..., ...} is left out: it is no key of the
    file."""
    parts, node = [key] if key else [], values
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("name") == part:
            continue  # the discriminator's tag
        if not isinstance(node, dict):
            break  # a value written in short, as {constant: 0.1}
        parts.append(str(part))
        node = node.get(part)
    return ".".join(parts), node


def _kind(limit):
    """What a bound is on, from the bound's own type: the field's."""
    return "an integer" if isinstance(limit, int) else "a number"


def _message(error, values, key):
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    where, written = _where(key, error["loc"], values)
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}
    bounds["less_than_equal"] = "<="
    expected = {
        "int_type": "an integer",
        "float_type": "a number",
        "bool_type": "true or false",
        "string_type": "a string",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "tuple_type": "a list",
        "literal_error": f"one of {ctx.get('expected')}",
    }
    if kind == "invalid":
        return f"{'.'.join(filter(None, (where, ctx['key'])))}: {error['msg']}"
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"{where}: must be {_kind(limit)} {bounds[kind]} {limit:g}, got {got}"
    if kind == "union_tag_invalid":
        tags = ctx["expected_tags"].replace("'", "")
        named = f"{where}.name" if isinstance(written, dict) and "name" in written else where
        return f"{named}: unknown {_field(where)} {ctx['tag']!r}; choose one of {tags}"
    if kind == "union_tag_not_found":
        return f"{where}: expected {_field(where)} name, or a mapping with a name, got {got!r}"
    if kind == "missing":
        return f"{where}: missing; params.yaml must set it"
    if kind in expected:
        return f"{where}: expected {expected[kind]}, got {got!r}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}"


def _field(where):
    """What the piece at `where` is: activation, norm, optimizer or an init scheme."""
    *_, parent, last = ["", *where.split(".")]
    return "init scheme" if parent == "init" else last


def section(path, name, model):
    """One section of params.yaml, validated alone."""
    values = read_values(path) or {}
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {values!r}")
    return validate(model, values.get(name), name)


# --- the data sections -----------------------------------------------------------------------


class DataParams(Section):
    """Where names.txt comes from, and the hash it must have."""

    url: str
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value):
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"expected 64 lowercase hex digits, got {value!r}")
        return value


class SplitParams(Section):
    """The lecture's split: contexts of block_size characters, words shuffled with
    random.seed(shuffle_seed), cut at the fractions (train, val, test)."""

    block_size: int = Field(ge=1)
    shuffle_seed: int
    fractions: tuple[float, float, float]

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, fractions):
        if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
            raise ValueError(
                f"three positive fractions (train, val, test) summing to 1, got {list(fractions)}"
            )
        return fractions
