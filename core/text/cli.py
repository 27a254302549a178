"""`lienzo text …`: generate (streamed to stdout), summarize, translate, classify, search, models, templates.

Results go to stdout, progress and notices to stderr. Work runs through the same job functions as
the editor; with --project the run and the generation are recorded in that project.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from core.errors import AppError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="text_command", metavar="ACTION", required=True)

    gen = sub.add_parser("generate", help="generate text with a causal language model (streams to stdout)")
    gen.add_argument("--model", required=True, help="model folder (Hugging Face layout)")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="text to continue or instruction (chat models)")
    source.add_argument("--template", help="template id (see `lienzo text templates`)")
    gen.add_argument("--field", action="append", default=[], metavar="NAME=VALUE", help="template field value")
    gen.add_argument("--mode", choices=["prompt", "continue"], default="prompt",
                     help="prompt: the text is a request; continue: write on from the text")
    gen.add_argument("--max-new-tokens", type=int)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--preset", help="precise, balanced, creative or deterministic")
    gen.add_argument("--project", help="record the generation in this project file")

    for name, help_text in (("summarize", "summarise text with a text-to-text model (T5, BART)"),
                            ("translate", "translate text with a text-to-text model (T5, Marian)"),
                            ("classify", "classify text (labels and scores) with a sequence classifier")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--model", required=True, help="model folder")
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--text")
        src.add_argument("--file", help="a UTF-8 text file")
        p.add_argument("--project", help="record the result in this project file")
        if name == "translate":
            p.add_argument("--source", default="English")
            p.add_argument("--target", default="German")
        if name != "classify":
            p.add_argument("--max-new-tokens", type=int)
        if name == "classify":
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    search = sub.add_parser("search", help="semantic + keyword search over a project's documents")
    search.add_argument("--project", required=True, help="project file (.lienzo)")
    search.add_argument("query")
    search.add_argument("--top", type=int, default=5)
    search.add_argument("--mode", choices=["hybrid", "semantic", "keyword"], default="hybrid")
    search.add_argument("--encoder", help="sentence encoder folder (default: bundled all-MiniLM-L6-v2)")
    search.add_argument("--json", action="store_true")

    models = sub.add_parser("models", help="list registered models and models in the Hugging Face cache")
    models.add_argument("--register", metavar="PATH", help="register a model folder or .safetensors file")
    models.add_argument("--name", help="name for --register")
    models.add_argument("--verify", metavar="NAME", help="re-check a registered model's files against their sha256")

    sub.add_parser("templates", help="list the writers' templates and their fields")


def _read_text(args) -> str:
    if args.text is not None:
        return args.text
    path = Path(args.file)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AppError(f"'{path}' does not exist.", "Check the file name.") from None
    except UnicodeDecodeError:
        raise AppError(f"'{path.name}' is not UTF-8 text.", "Save it as UTF-8 and try again.") from None


def _open_project(path: str | None, read_only_ok: bool = False):
    if not path:
        return None
    from core.project import Project, ProjectError

    if not Path(path).exists():
        raise AppError(f"The project '{path}' does not exist.", "Give the path of a .lienzo file.")
    try:
        return Project.open(path)
    except ProjectError:
        if not read_only_ok:
            raise
        print("note: the project is open elsewhere; searching it read-only (the index is not updated)",
              file=sys.stderr)
        return Project.open(path, read_only=True)


def _run(fn, params: dict, kind: str, project=None, quiet: bool = False):
    """Run one job to its end, printing progress on stderr; Ctrl+C cancels it."""
    from core.cli import progress_printer, run_job

    printer = progress_printer(logs=False)  # its log lines (notices) come as progress messages too
    # While text streams to stdout, per-token progress lines would only interleave with it.
    listener = (lambda e: printer(e) if not e.step else None) if quiet else printer
    return run_job(fn, params, kind=kind, project=project, listener=listener).result


def _parse_fields(items: list[str]) -> dict:
    fields = {}
    for item in items:
        if "=" not in item:
            raise AppError(f"--field '{item}' is not NAME=VALUE.", "Write e.g. --field topic='Offline AI'.")
        key, value = item.split("=", 1)
        fields[key.strip()] = value
    return fields


def main(args: argparse.Namespace) -> int:
    command = args.text_command
    if command == "templates":
        from core.text.templates import list_templates

        for t in list_templates():
            fields = ", ".join(f"{f.name}{'*' if f.required else ''}" for f in t.fields)
            print(f"{t.id:26} {t.title} — {fields}")
        return 0
    if command == "models":
        return _models(args)
    if command == "generate":
        return _generate(args)
    if command == "search":
        return _search(args)
    return _seq2seq_or_classify(args)


def _generate(args) -> int:
    from core.text.generate import generate_job

    settings = {k: v for k, v in dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                      top_p=args.top_p, top_k=args.top_k,
                                      repetition_penalty=args.repetition_penalty, seed=args.seed,
                                      stop=args.stop or None, preset=args.preset).items() if v is not None}
    params = {"model": args.model, "settings": settings}
    if args.template:
        params.update(mode="template", template=args.template, fields=_parse_fields(args.field))
    else:
        params.update(mode=args.mode, text=args.prompt)

    def to_stdout(delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    project = _open_project(args.project)
    try:
        result = _run(functools.partial(generate_job, on_text=to_stdout), params, "text.generate", project,
                      quiet=True)
    finally:
        if project is not None:
            project.close()
    sys.stdout.write("\n")
    for notice in result["notices"]:
        print(f"note: {notice}", file=sys.stderr)
    first = f"{result['first_token_s']:.3f}s" if result["first_token_s"] is not None else "-"
    print(f"{result['new_tokens']} tokens in {result['seconds']:.2f}s ({result['tokens_per_s']:.1f} tokens/s, "
          f"first token {first}), seed {result['seed']}, finished by {result['finish']}", file=sys.stderr)
    return 0


def _seq2seq_or_classify(args) -> int:
    text = _read_text(args)
    project = _open_project(args.project)
    try:
        if args.text_command == "classify":
            from core.text.classify import classify_job

            result = _run(classify_job, {"model": args.model, "text": text}, "text.classify", project)
            scores = result["results"][0]
            if args.json:
                print(json.dumps(scores, indent=1))
            else:
                for row in scores:
                    print(f"{row['label']}\t{row['score']:.4f}")
            return 0
        from core.text.seq2seq import run_seq2seq

        params = {"model": args.model, "task": args.text_command, "text": text,
                  "max_new_tokens": args.max_new_tokens}
        if args.text_command == "translate":
            params.update(source=args.source, target=args.target)
        result = _run(run_seq2seq, params, f"text.{args.text_command}", project)
    finally:
        if project is not None:
            project.close()
    for notice in result["notices"]:
        print(f"note: {notice}", file=sys.stderr)
    print(result["text"])
    return 0


def _search(args) -> int:
    from core.text.search import search_job

    project = _open_project(args.project, read_only_ok=True)
    try:
        params = {"query": args.query, "top_k": args.top, "mode": args.mode, "encoder": args.encoder}
        result = _run(search_job, params, "text.search", None if project.read_only else project)
    finally:
        project.close()
    hits = result["hits"]
    if args.json:
        print(json.dumps(hits, indent=1, ensure_ascii=False))
        return 0
    if not hits:
        print("no results", file=sys.stderr)
    for i, hit in enumerate(hits, 1):
        snippet = " ".join(hit["text"].split())[:160]
        print(f"{i}. [{hit['document_id']}] {hit['title']}  chars {hit['start']}-{hit['end']}  "
              f"score {hit['score']:.4f}\n   {snippet}")
    return 0


def _models(args) -> int:
    from core.models import registry

    reg = registry.ModelRegistry()
    if args.verify:
        info = reg.verify(args.verify)
        print(f"ok: {len(info.files_sha256)} files of '{info.name}' match their recorded sha256")
        return 0
    if args.register:
        info = reg.register(args.register, args.name)
        print(f"registered: {info.summary()}")
        return 0
    rows = [("registered", m) for m in reg.list()]
    found, skipped = registry.find_cached_models()
    rows += [("hf-cache", m) for m in found]
    for where, m in rows:
        print(f"{where:10} {m.kind:20} {m.name:40} {registry.format_count(m.parameters):>7} params  "
              f"{registry.format_bytes(m.size_bytes):>9}  {m.path}")
    for repo, why in skipped:
        print(f"skipped    {repo}: {why}", file=sys.stderr)
    if not rows:
        print("no models registered and none in the Hugging Face cache", file=sys.stderr)
    return 0
