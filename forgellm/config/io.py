"""Reading and writing forge.yaml: YAML in, validated ForgeConfig out, every problem reported at once."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from forgellm.config.migrate import migrate
from forgellm.config.schema import SCHEMA_VERSION, ForgeConfig
from forgellm.errors import ErrorCode, ForgeError, cause
from forgellm.files import atomic_write_text

CONFIG_FILENAME = "forge.yaml"
ENV_PREFIX = "FORGE_"
_SECRET_WORDS = ("api_key", "apikey", "token", "secret", "password")
# Names other trainers (transformers, axolotl, LLaMA-Factory) use for our keys: better hints than spelling.
_FAMILIAR_NAMES = {
    "lr": "learning_rate",
    "batch_size": "micro_batch_size",
    "per_device_train_batch_size": "micro_batch_size",
    "micro_batch": "micro_batch_size",
    "grad_accum": "gradient_accumulation",
    "gradient_accumulation_steps": "gradient_accumulation",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "scheduler": "lr_scheduler",
    "lr_scheduler_type": "lr_scheduler",
    "sequence_len": "max_length",
    "max_seq_length": "max_length",
    "cutoff_len": "max_length",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "lora_target_modules": "target_modules",
    "bf16": "precision",
    "fp16": "precision",
    "name": "ref",
    "template": "chat_template",
}

_HEADER = (
    "# forge.yaml — the plan of this Forge project. Edit freely; `forge config validate` checks it.\n"
    "# API keys never belong here: use `forge login` or the GEMINI_API_KEY / OPENAI_API_KEY variables.\n"
)


@dataclass
class LoadedConfig:
    """A validated config plus what happened on the way: migrations and environment overrides."""

    config: ForgeConfig
    path: Path | None
    file_version: int
    migration_notes: list[str] = field(default_factory=list)
    env_overrides: dict[str, str] = field(default_factory=dict)  # dotted key -> variable name


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML document to its 1-based line, so errors can point into the file."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node | None, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                if sub in lines:
                    # YAML keeps the last of two equal keys silently; the first one's values would vanish.
                    raise ForgeError(
                        f"forge.yaml has the key `{'.'.join(sub)}` twice (lines {lines[sub]} and "
                        f"{key.start_mark.line + 1}); the first would be ignored.",
                        fix="Merge the two into one entry.",
                        code=ErrorCode.CONFIG_SYNTAX,
                    )
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):  # list items as pydantic names them: data.sources.0.ratio
            for index, item in enumerate(node.value):
                sub = (*path, str(index))
                lines.setdefault(sub, item.start_mark.line + 1)
                walk(item, sub)

    walk(root, ())
    return lines


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ForgeError(
            f"{source} is not valid YAML{where}: {problem}.",
            fix="Check indentation (spaces, not tabs) and that every `key: value` pair has a colon and a space.",
            code=ErrorCode.CONFIG_SYNTAX,
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ForgeError(
            f"{source} must be a mapping of sections (project:, model:, training: ...), "
            f"but it holds a {type(raw).__name__}.",
            fix="Start from `forge init`, which writes a complete forge.yaml.",
            code=ErrorCode.CONFIG_SYNTAX,
        )
    return raw


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[tuple[str, ...], tuple[str, Any]]:
    """FORGE_<SECTION>__<KEY>[__<SUBKEY>]=value -> {(section, key, ...): (variable, parsed value)}.

    Values are parsed as YAML scalars, so `FORGE_TRAINING__LEARNING_RATE=1e-4` is a number and
    `FORGE_TRAINING__PACKING=false` a boolean. Variables without `__` (FORGE_HOME ...) are user settings.
    """
    environ = os.environ if environ is None else environ
    found: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        try:
            parsed = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError:
            parsed = value
        found[path] = (name, parsed)
    return found


def _apply_overrides(raw: dict[str, Any], overrides: dict[tuple[str, ...], tuple[str, Any]]) -> None:
    for path, (_variable, value) in overrides.items():
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Names of the keys allowed at a location of the schema (for 'did you mean' and 'allowed')."""
    model: type[BaseModel] | None = ForgeConfig
    for part in loc:
        if model is None:
            return []
        info = model.model_fields.get(str(part))
        annotation = getattr(info, "annotation", None)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return list(model.model_fields) if model else []


def describe_errors(
    exc: ValidationError, lines: dict[tuple[str, ...], int], overrides: dict[tuple[str, ...], tuple[str, Any]]
) -> list[str]:
    """One plain sentence per problem: where (line, key), what was found, what is allowed."""
    problems = []
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"])
        key = ".".join(loc) or "(top level)"
        where = f"line {lines[loc]}: " if loc in lines else ""
        origin = f" (set by {overrides[loc][0]})" if loc in overrides else ""
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            if any(word in loc[-1].lower() for word in _SECRET_WORDS):
                problems.append(
                    f"{where}{key}: secrets must not be stored in forge.yaml. Remove this line and run "
                    "`forge login` (or set GEMINI_API_KEY / OPENAI_API_KEY)."
                )
                continue
            allowed = _fields_at(loc[:-1])
            familiar = _FAMILIAR_NAMES.get(loc[-1].lower())
            close = [familiar] if familiar in allowed else difflib.get_close_matches(loc[-1], allowed, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            problems.append(f"{where}{key}{origin}: unknown key.{hint} Allowed here: {', '.join(allowed)}.")
        elif error["type"] == "missing":
            problems.append(f"{where}{key}: required but missing.")
        else:
            got = error.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            problems.append(f"{where}{key}{origin}: {message}{shown}.")
    return problems


def config_from_mapping(
    raw: Mapping[str, Any],
    *,
    source: str = "forge.yaml",
    text: str = "",
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Migrate, apply FORGE_* overrides and validate a raw mapping; all problems in one ForgeError."""
    file_version = raw.get("version", SCHEMA_VERSION)
    migrated, notes = migrate(dict(raw))
    overrides = env_overrides(environ)
    _apply_overrides(migrated, overrides)
    try:
        config = ForgeConfig.model_validate(migrated)
    except ValidationError as exc:
        problems = describe_errors(exc, _key_lines(text), overrides)
        count = len(problems)
        raise ForgeError(
            f"{source} has {count} problem{'s' if count != 1 else ''}:",
            details=problems,
            fix="Correct the keys above (see `forge config show` for a complete valid file) and run "
            "`forge config validate` again.",
            code=ErrorCode.CONFIG_INVALID,
        ) from None
    names = {".".join(path): variable for path, (variable, _) in overrides.items()}
    return LoadedConfig(config, None, file_version, notes, names)


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read forge.yaml (or the given file) into a validated config."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILENAME
    if not path.exists():
        raise ForgeError(
            f"No {path.name} at {path.parent.resolve()}.",
            fix="Run `forge init` to create a project here, or change to your project folder.",
            code=ErrorCode.PROJECT_NOT_FOUND, data={"path": str(path.parent.resolve())},
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ForgeError(
            f"Cannot read {path}: {exc}.",
            fix="Check the file's permissions and encoding (UTF-8).",
            code=ErrorCode.FILE_UNREADABLE,
            data={"path": str(path), "cause": cause(exc)},
        ) from None
    raw = parse_yaml(text, str(path))
    _key_lines(text)  # refuses duplicate keys before anything else
    loaded = config_from_mapping(raw, source=str(path), text=text, environ=environ)
    loaded.path = path
    return loaded


class _ConfigDumper(yaml.SafeDumper):
    """Readable YAML that still loads back exactly (plain YAML mangles NEL/LS/PS and control chars)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None
    if any(ch in value for ch in "\x85\u2028\u2029") or not value.replace("\n", "").isprintable():
        style = '"'  # escaped, so the text survives byte for byte
    elif "\n" in value:
        style = "|"  # multi-line prompts stay readable; PyYAML falls back when a block can't hold it
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ConfigDumper.add_representer(str, _represent_str)


def dump_config(config: ForgeConfig) -> str:
    data = config.model_dump(mode="json")
    if not data.get("stages"):  # a single-stage project's forge.yaml stays as it always was
        data.pop("stages", None)
    body = yaml.dump(data, Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True, width=100)
    return _HEADER + body


def save_config(config: ForgeConfig, path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILENAME
    atomic_write_text(path, dump_config(config))
    return path


def with_environment(config: ForgeConfig, environ: Mapping[str, str] | None = None) -> ForgeConfig:
    """forge.yaml's settings as written (a plan just made, say) with the FORGE_* overrides applied, as
    `load_config` gives them, without reading the file again."""
    return config_from_mapping(config.model_dump(mode="json"), environ=environ).config
