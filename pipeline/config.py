"""Typed, frozen stage configs loaded from ``params.yaml``.

Each stage owns one section of ``params.yaml`` and one :class:`StageConfig` subclass that declares
every key of that section with its type. There are no defaults in code: ``params.yaml`` is the
single place where values live, so a missing key is an error, as are unknown keys (usually a typo
that would otherwise be ignored silently) and values of the wrong type (validation is strict:
``64.0`` is not an ``int``, ``"yes"`` is not a ``bool``). All of these fail before the stage does
any work, with a message that names the file and the key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
import yaml

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)


class StageConfig(pydantic.BaseModel):
    """Base of every stage config: immutable, strict types, no unknown keys."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-compatible values."""
        return self.model_dump(mode="json")


ConfigT = TypeVar("ConfigT", bound=StageConfig)
PositiveInt = Annotated[int, pydantic.Field(ge=1)]  # counts, sizes, intervals in stage configs
NonNegativeFloat = Annotated[float, pydantic.Field(ge=0)]  # loss weights, penalties
NonNegativeInt = Annotated[int, pydantic.Field(ge=0)]  # counts that may be zero (e.g. workers)


def _power_of_two(value: int) -> int:
    if value < 1 or value & (value - 1):
        raise ValueError(f"must be a power of two, got {value}")
    return value


PowerOfTwo = Annotated[int, pydantic.AfterValidator(_power_of_two)]  # image resolutions


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (line {line})", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a :class:`ConfigError` naming ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def describe_errors(error: pydantic.ValidationError, section: str,
                    missing: str = "missing") -> list[str]:
    """One line per invalid key of ``error``, named as ``section.key``."""
    lines = []
    for err in error.errors():
        key = ".".join(str(part) for part in (section, *err["loc"]))
        if err["type"] == "missing":
            lines.append(f"{key}: {missing}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        else:
            lines.append(f"{key}: {err['msg']} (got {err['input']!r})")
    return lines


def _format_errors(path: Path, section: str, error: pydantic.ValidationError) -> str:
    lines = describe_errors(error, section, f"missing (every key must be set in {path.name})")
    return f"{path}: invalid '{section}' section:\n" + "\n".join(f"  - {line}" for line in lines)


def load_config(path: str | Path, section: str, cls: type[ConfigT]) -> ConfigT:
    """Load and validate section ``section`` of the params file ``path`` as ``cls``; a dotted
    ``section`` (``styles.ink``) names a mapping inside a section."""
    path = Path(path)
    values: Any = read_yaml(path)
    parts = section.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(values, dict) or part not in values:
            found = sorted(values) if isinstance(values, dict) else []
            where = f"'{'.'.join(parts[:depth])}'" if depth else "the file"
            raise ConfigError(f"{path}: no '{section}' section ({where} has {found})")
        values = values[part]
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: section '{section}' must be a mapping of keys to values")
    try:
        return cls.model_validate(values)
    except pydantic.ValidationError as e:
        raise ConfigError(_format_errors(path, section, e)) from None


def config_text(section: str, config: StageConfig) -> str:
    """The resolved config as the JSON text written beside a stage's outputs (``config.json``):
    ``{section: {key: value}}``, keys sorted."""
    return json.dumps({section: config.to_dict()}, indent=2, sort_keys=True) + "\n"


def log_config(section: str, config: StageConfig) -> None:
    """Log the resolved config (the text of :func:`config_text`)."""
    log.info("resolved config:\n%s", config_text(section, config).rstrip())
