"""`lienzo image generate` end to end with the tiny pipeline (in-process, as the entry point runs it)."""

import pytest
from PIL import Image

from core.image.metadata import read_png_parameters
from desktop.launcher import main
from tests.tiny_diffusion import shared_tiny_pipeline


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return shared_tiny_pipeline(tmp_path_factory), None


def test_generate_txt2img_then_inpaint(model, tmp_path, capsys):
    folder, _ = model
    out = tmp_path / "out.png"
    code = main(["image", "generate", "--model", str(folder), "--prompt", "a boat, at dawn", "--negative", "fog",
                 "--steps", "3", "--guidance", "5", "--width", "64", "--height", "60", "--seed", "21",
                 "--scheduler", "Euler a", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"{out}\tseed=21" in captured.out
    assert "[3/3]" in captured.err and "rounded to 64" in captured.err
    params = read_png_parameters(out)
    assert params["prompt"] == "a boat, at dawn" and params["negative_prompt"] == "fog" and params["seed"] == 21
    assert params["scheduler"] == "Euler a" and params["guidance"] == 5.0

    mask = tmp_path / "mask.png"
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (0, 0, 32, 32))
    m.save(mask)
    out2 = tmp_path / "inpainted.png"
    code = main(["image", "generate", "--model", str(folder), "--prompt", "a sail", "--init-image", str(out),
                 "--mask", str(mask), "--strength", "0.9", "--steps", "2", "--out", str(out2)])
    assert code == 0, capsys.readouterr().err
    assert read_png_parameters(out2)["mode"] == "inpaint"


def test_generate_a_batch_into_a_project(model, tmp_path, capsys):
    from core.project import Project

    folder, _ = model
    project_path = tmp_path / "cli.lienzo"
    Project.create(project_path).close()
    code = main(["image", "generate", "--model", str(folder), "--prompt", "x", "--steps", "1", "--width", "64",
                 "--height", "64", "--batch", "2", "--project", str(project_path), "--out", str(tmp_path / "b.png")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "b-1.png").exists() and (tmp_path / "b-2.png").exists()
    with Project.open(project_path, read_only=True) as project:
        assert len(project.list_generations("image")) == 2


def test_bad_input_gives_error_and_hint(tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x02}q\x00.")
    assert main(["image", "generate", "--model", str(ckpt), "--prompt", "x", "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "pickle" in err and "hint:" in err
    assert main(["image", "generate", "--model", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "o.jpg")]) == 2
    assert ".png" in capsys.readouterr().err
