"""`forge init`: the project folder, its .gitignore and a first forge.yaml."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgellm.config.io import CONFIG_FILENAME, load_config, save_config
from forgellm.config.schema import AdvisorSection, ForgeConfig, ModelSection, ProjectSection
from forgellm.config.settings import store_api_key
from forgellm.errors import ErrorCode, ForgeError
from forgellm.files import atomic_write_text
from forgellm.project.layout import ProjectLayout

PROJECT_DIRS = tuple(ProjectLayout(Path(".")).folders())
GITIGNORE_LINES = ("# Forge outputs: large and reproducible from forge.yaml", *ProjectLayout(Path(".")).gitignored())
DEFAULT_ADVISOR_MODELS = {"gemini": "gemini-2.5-flash", "openai": "gpt-4o-mini"}
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


@dataclass
class InitResult:
    project_dir: Path
    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    credentials_file: Path | None = None
    # forge.yaml as written (created now, or read once if it was there); None when it is not valid.
    config: ForgeConfig | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("config")
        data["project_dir"] = str(self.project_dir)
        data["credentials_file"] = str(self.credentials_file) if self.credentials_file else None
        return data


def advisor_settings(provider: str, model: str | None = None, base_url: str | None = None) -> AdvisorSection:
    """The advisor section for a provider, with sensible model and URL defaults filled in."""
    if provider == "rules":
        if model or base_url:
            raise ForgeError(
                "The offline `rules` advisor takes no model or base URL.",
                fix="Drop --advisor-model/--base-url, or choose --advisor gemini or --advisor openai.",
                code=ErrorCode.USAGE_INVALID,
            )
        return AdvisorSection(provider="rules")
    # For gemini a base URL points at a proxy or a compatible test server; None = Google's endpoint.
    url = base_url or (DEFAULT_OPENAI_BASE_URL if provider == "openai" else None)
    return AdvisorSection(provider=provider, model=model or DEFAULT_ADVISOR_MODELS[provider], base_url=url)


def init_project(
    directory: str | Path,
    *,
    name: str | None = None,
    model_ref: str | None = None,
    advisor: AdvisorSection | None = None,
    api_key: str | None = None,
) -> InitResult:
    """Create the project layout; never overwrites an existing file."""
    root = Path(directory).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ForgeError(
            f"{root} exists and is a file, not a folder.",
            fix="Choose another project folder.",
            code=ErrorCode.USAGE_INVALID,
        )
    advisor = advisor or AdvisorSection()
    if api_key is not None and advisor.provider == "rules":
        raise ForgeError(
            "The offline `rules` advisor needs no API key.",
            fix="Add --advisor gemini or --advisor openai.",
            code=ErrorCode.USAGE_INVALID,
        )
    result = InitResult(root)
    root.mkdir(parents=True, exist_ok=True)
    for sub, folder in ProjectLayout(root).folders().items():
        (result.existed if folder.is_dir() else result.created).append(sub + "/")
        folder.mkdir(parents=True, exist_ok=True)
    _write_gitignore(root, result)
    _write_config(root, result, name or root.name, model_ref, advisor)
    if api_key is not None:
        result.credentials_file = store_api_key(advisor.provider, api_key)
        if advisor.base_url:  # the user gave the key and the server together: the key may go there
            from forgellm.config.key_hosts import allow_origin

            allow_origin(advisor.provider, advisor.base_url)
    return result


def _write_gitignore(root: Path, result: InitResult) -> None:
    path = root / ".gitignore"
    if not path.exists():
        atomic_write_text(path, "\n".join(GITIGNORE_LINES) + "\n")
        result.created.append(".gitignore")
        return
    result.existed.append(".gitignore")
    present = set(path.read_text(encoding="utf-8", errors="replace").split())
    missing = [line for line in GITIGNORE_LINES[1:] if line not in present]
    if missing:
        result.warnings.append(f".gitignore kept as it is; consider adding: {' '.join(missing)}")


def _write_config(root: Path, result: InitResult, name: str, model_ref: str | None, advisor: AdvisorSection) -> None:
    path = ProjectLayout(root).config_file
    if not path.exists():
        config = ForgeConfig(
            project=ProjectSection(name=name),
            model=ModelSection(ref=model_ref) if model_ref else ModelSection(),
            advisor=advisor,
        )
        save_config(config, path)
        result.created.append(CONFIG_FILENAME)
        result.config = config
        return
    result.existed.append(CONFIG_FILENAME)
    try:
        existing = result.config = load_config(path, environ={}).config
    except ForgeError as exc:
        result.warnings.append(
            f"{CONFIG_FILENAME} already exists but is not a valid Forge plan ({exc.message.rstrip(':')}); "
            "it was left untouched. Run `forge config validate` to see why."
        )
        return
    if existing.advisor != advisor and advisor != AdvisorSection():
        result.warnings.append(
            f"{CONFIG_FILENAME} exists, so the advisor settings given were not applied "
            f"(it keeps provider '{existing.advisor.provider}'); edit the `advisor:` section to change them."
        )
