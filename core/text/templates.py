"""Writers' templates: Markdown files with a YAML header that declares the fields to fill in.

    ---
    title: Blog post
    description: …
    fields:
      - {name: topic, label: Topic, required: true}
      - {name: tone, label: Tone, default: friendly}
      - {name: points, label: Key points, multiline: true}
    ---
    Write a blog post about {topic} …

Shipped templates live in resources/templates; a file of the same name in the user's
<config>/templates folder replaces it, and new files there add templates. Only declared
{field} names are replaced, so other braces in a template are left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import AppError

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "resources" / "templates"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class TemplateField:
    name: str
    label: str
    default: str = ""
    required: bool = False
    multiline: bool = False
    help: str = ""


@dataclass
class Template:
    id: str
    title: str
    description: str
    body: str
    fields: list[TemplateField] = field(default_factory=list)
    path: str = ""
    settings: dict = field(default_factory=dict)  # suggested generation settings (e.g. max_new_tokens)

    def render(self, values: dict) -> str:
        missing = [f.label for f in self.fields if f.required and not str(values.get(f.name) or f.default).strip()]
        if missing:
            raise AppError(f"Fill in: {', '.join(missing)}.", f"The '{self.title}' template needs these fields.")
        filled = {f.name: str(values.get(f.name) or f.default).strip() for f in self.fields}
        return re.sub(r"\{([a-z][a-z0-9_]*)\}", lambda m: filled.get(m.group(1), m.group(0)), self.body).strip()


def user_templates_dir() -> Path:
    from core.paths import config_dir

    return config_dir() / "templates"


def parse_template(path: Path) -> Template:
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n(.*)$", text, flags=re.S)
    if not match:
        raise AppError(f"The template '{path.name}' has no header.",
                       "Start the file with a '---' block giving title and fields, then '---' and the text.")
    try:
        header = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise AppError(f"The header of template '{path.name}' is not valid YAML: {exc}", "Fix the header.") from None
    if not isinstance(header, dict) or not header.get("title"):
        raise AppError(f"The template '{path.name}' needs a title in its header.", "Add 'title: …'.")
    fields = []
    for raw in header.get("fields") or []:
        if not isinstance(raw, dict) or not NAME_RE.match(str(raw.get("name", ""))):
            raise AppError(f"The template '{path.name}' has a field without a valid name ({raw!r}).",
                           "Field names use lowercase letters, digits and _.")
        fields.append(TemplateField(name=raw["name"], label=str(raw.get("label") or raw["name"]),
                                    default=str(raw.get("default") or ""), required=bool(raw.get("required")),
                                    multiline=bool(raw.get("multiline")), help=str(raw.get("help") or "")))
    body = match.group(2)
    declared = {f.name for f in fields}
    unknown = sorted(set(re.findall(r"\{([a-z][a-z0-9_]*)\}", body)) - declared)
    if unknown:
        raise AppError(f"The template '{path.name}' uses fields it does not declare: {', '.join(unknown)}.",
                       "Declare them under 'fields:' in the header.")
    return Template(id=path.stem, title=str(header["title"]), description=str(header.get("description") or ""),
                    body=body, fields=fields, path=str(path), settings=dict(header.get("settings") or {}))


def list_templates(user_dir: Path | None = None) -> list[Template]:
    """Shipped templates, replaced or extended by the user's own (damaged user files are skipped)."""
    found: dict[str, Template] = {}
    for path in sorted(SHIPPED_DIR.glob("*.md")):
        found[path.stem] = parse_template(path)
    user_dir = user_dir if user_dir is not None else user_templates_dir()
    if user_dir.is_dir():
        for path in sorted(user_dir.glob("*.md")):
            try:
                found[path.stem] = parse_template(path)
            except AppError:
                continue  # one bad user file must not hide every template
    return sorted(found.values(), key=lambda t: t.title.lower())


def get_template(template_id: str, user_dir: Path | None = None) -> Template:
    for template in list_templates(user_dir):
        if template.id == template_id:
            return template
    raise AppError(f"There is no template '{template_id}'.", "Choose one of the listed templates.")


def render(template_id: str, values: dict) -> str:
    return get_template(template_id).render(values)


def copy_for_editing(template_id: str) -> Path:
    """Copy a shipped template into the user's folder (once) and return the path to edit."""
    template = get_template(template_id)
    target = user_templates_dir() / f"{template.id}.md"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Path(template.path).read_text(encoding="utf-8"), encoding="utf-8")
    return target
