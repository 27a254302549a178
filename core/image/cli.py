"""`lienzo image …`: generate images headlessly and read the parameters stored in PNGs.

    lienzo image generate --model PATH --prompt TEXT [--negative T] [--steps N] [--guidance G]
        [--width W --height H] [--seed S] [--init-image F --strength X] [--mask F] --out FILE.png
    lienzo image params FILE.png      (A1111, ComfyUI or Lienzo PNG -> JSON on stdout)

Progress goes to stderr, results (file, seed) to stdout. No torch import until a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.errors import AppError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION")
    gen = sub.add_parser("generate", help="text-to-image, image-to-image, inpainting or outpainting")
    gen.add_argument("--model", required=True, help="diffusers pipeline folder or single .safetensors checkpoint")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative", default="", help="negative prompt")
    gen.add_argument("--steps", type=int, default=None)
    gen.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    gen.add_argument("--width", type=int, default=None)
    gen.add_argument("--height", type=int, default=None)
    gen.add_argument("--seed", type=int, default=None, help="fixed seed (default: random, always printed)")
    gen.add_argument("--batch", type=int, default=1, help="number of images (seeds seed, seed+1, …)")
    gen.add_argument("--scheduler", default=None, help="DDIM, Euler, 'Euler a', 'DPM++ 2M', UniPC, … "
                                                       "(default: the model's own)")
    gen.add_argument("--init-image", default=None, help="start from this image (image-to-image)")
    gen.add_argument("--strength", type=float, default=None, help="how much to change the init image (0-1)")
    gen.add_argument("--mask", default=None, help="inpainting mask: white = repaint")
    gen.add_argument("--outpaint", default=None, metavar="DIR:PIXELS",
                     help="extend the init image, e.g. right:128 (left, right, up, down)")
    gen.add_argument("--memory-mode", default=None,
                     choices=["none", "attention_slicing", "vae_tiling", "cpu_offload"])
    gen.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    gen.add_argument("--prediction-type", default=None, choices=["epsilon", "v_prediction"],
                     help="override for SD 2.x checkpoints: 512 px 'base' models use epsilon (default: v_prediction)")
    gen.add_argument("--project", default=None, help="also store the images in this .lienzo project")
    gen.add_argument("--out", required=True, help="output PNG (with batch > 1: FILE-1.png, FILE-2.png …)")
    params = sub.add_parser("params", help="print the generation parameters stored in a PNG as JSON")
    params.add_argument("file")
    parser.set_defaults(_image_parser=parser)


def _outpaint(value: str | None):
    if not value:
        return None
    direction, _, pixels = value.partition(":")
    try:
        return {"direction": direction.strip().lower(), "pixels": int(pixels or 128)}
    except ValueError:
        raise AppError(f"'--outpaint {value}' is not DIRECTION:PIXELS.", "Write e.g. --outpaint right:128.") from None


def params_from_args(args) -> dict:
    params = {"model": args.model, "prompt": args.prompt, "negative_prompt": args.negative, "steps": args.steps,
              "guidance": args.guidance, "width": args.width, "height": args.height, "seed": args.seed,
              "batch": args.batch, "scheduler": args.scheduler, "init_image": args.init_image,
              "strength": args.strength, "mask": args.mask, "outpaint": _outpaint(args.outpaint),
              "memory_mode": args.memory_mode, "device": args.device, "out": args.out,
              "prediction_type": args.prediction_type}
    if params["outpaint"] and not args.init_image:
        raise AppError("Outpainting extends an image: --init-image is missing.", "Add --init-image FILE.")
    if not str(args.out).lower().endswith(".png"):
        raise AppError(f"'{args.out}' is not a .png file name.", "Use --out FILE.png.")
    return {k: v for k, v in params.items() if v is not None}


def _generate(args) -> int:
    from pathlib import Path

    from core.cli import progress_printer, run_job
    from core.image.generate import run_generation

    params = params_from_args(args)
    project = None
    if args.project:
        from core.project import Project

        project = Project.open(args.project)
    try:
        outcome = run_job(run_generation, params, kind="image.generate", title="Image generation",
                          project=project, listener=progress_printer("image ", logs=False)).result  # seeds: below
    finally:
        if project is not None:
            project.close()
    for notice in outcome.notices:
        print(f"notice: {notice}", file=sys.stderr)
    print(f"model loaded in {outcome.load_seconds:.2f} s; {outcome.seconds_per_step:.3f} s per step",
          file=sys.stderr)
    out = Path(args.out)
    for index, result in enumerate(outcome.results):
        path = out if len(outcome.results) == 1 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")
        print(f"{path}\tseed={result.seed}" + (f"\timage_id={result.image_id}" if result.image_id else ""))
    return 0


def main(args) -> int:
    command = getattr(args, "image_command", None)
    if command == "generate":
        return _generate(args)
    if command == "params":
        from core.image.metadata import read_png_parameters

        params = read_png_parameters(args.file)
        if not params:
            raise AppError(f"'{args.file}' holds no generation parameters.",
                           "Only PNGs saved by A1111, ComfyUI or Lienzo carry them.")
        params.pop("workflow", None)  # large and not parameters; still in the file
        print(json.dumps(params, indent=1, ensure_ascii=False, default=str))
        return 0
    args._image_parser.print_help(sys.stderr)
    return 2
