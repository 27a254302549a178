"""Generation with the tiny pipeline: reproducibility, cancel, inpainting, outpainting, the project."""

import numpy as np
import pytest
from PIL import Image

from core.errors import AppError
from core.image.generate import run_generation
from core.jobs import CANCELLED, DONE, FAILED, JobRunner
from tests.tiny_diffusion import shared_tiny_pipeline


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(shared_tiny_pipeline(tmp_path_factory))


def gen(model, **params):
    base = {"model": model, "prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64, "seed": 7}
    return run_generation({**base, **params})


def pixels(image):
    return np.asarray(image.convert("RGB")).astype(int)


def test_same_seed_gives_identical_pixels_and_seed_is_reported(model):
    a, b = gen(model, seed=1234), gen(model, seed=1234)
    assert a.results[0].image.tobytes() == b.results[0].image.tobytes()
    assert gen(model, seed=1235).results[0].image.tobytes() != a.results[0].image.tobytes()
    random_one = gen(model, seed=None).results[0]
    assert 0 <= random_one.seed < 2**32 and random_one.params["seed"] == random_one.seed
    again = gen(model, seed=random_one.seed).results[0]
    assert again.image.tobytes() == random_one.image.tobytes()


def test_batch_uses_consecutive_seeds_and_every_scheduler_runs(model):
    from core.image.schedulers import scheduler_names

    out = gen(model, batch=2, seed=40, scheduler="Euler a")
    assert [r.seed for r in out.results] == [40, 41]
    for name in scheduler_names():
        result = gen(model, steps=2, scheduler=name).results[0]
        assert result.params["scheduler"] == name and result.image.size == (64, 64)
    with pytest.raises(AppError, match="Unknown scheduler"):
        gen(model, scheduler="Warp drive")


def test_sizes_are_rounded_with_a_notice(model):
    out = gen(model, width=70, height=60)
    assert out.results[0].image.size == (72, 64) and out.results[0].params["width"] == 72
    assert any("70 rounded to 72" in n for n in out.notices)


def test_a_size_that_cannot_fit_is_refused_before_trying(model):
    with pytest.raises(AppError, match="does not fit in the memory") as err:
        gen(model, width=40000, height=40000)
    assert "smaller size" in err.value.hint


def test_img2img_with_init_image_of_another_size_is_resized_with_notice(model):
    init = Image.new("RGB", (100, 80), (200, 30, 30))
    out = gen(model, init_image=init, strength=0.5, width=64, height=64)
    assert out.results[0].image.size == (64, 64) and out.results[0].params["strength"] == 0.5
    assert any("init image (100×80) was resized to 64×64" in n for n in out.notices)
    with pytest.raises(AppError, match="strength"):
        gen(model, init_image=init, strength=1.5)
    with pytest.raises(AppError, match="does not exist"):
        gen(model, init_image="/nonexistent/init.png")


def test_inpainting_leaves_unmasked_pixels_close_to_the_original(model):
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    out = gen(model, init_image=original, mask=mask, steps=3).results[0]
    assert out.params["mode"] == "inpaint"
    diff = np.abs(pixels(out.image) - pixels(original)).max(axis=2)
    far = np.ones((64, 64), bool)
    far[12:52, 12:52] = False  # beyond the mask and its soft edge
    assert diff[far].max() <= 2
    assert diff[28:36, 28:36].mean() > 10  # inside the mask the model painted


def test_empty_mask_is_refused(model):
    with pytest.raises(AppError, match="mask is empty"):
        gen(model, init_image=Image.new("RGB", (64, 64)), mask=Image.new("L", (64, 64), 0))
    with pytest.raises(AppError, match="needs a mask"):
        gen(model, init_image=Image.new("RGB", (64, 64)), mode="inpaint")


def test_outpainting_extends_the_canvas_in_a_direction(model):
    original = Image.new("RGB", (64, 64), (20, 160, 60))
    out = gen(model, init_image=original, outpaint={"direction": "left", "pixels": 30}).results[0]
    assert out.image.size == (96, 64) and out.params["outpaint"] == {"direction": "left", "pixels": 32}
    # the right part is the original (away from the 16 px overlap)
    right = pixels(out.image)[:, 32 + 16 + 8:]
    assert np.abs(right - np.array([20, 160, 60])).max() <= 2
    up = gen(model, init_image=original, outpaint={"direction": "up", "pixels": 64}).results[0]
    assert up.image.size == (64, 128)
    with pytest.raises(AppError, match="direction"):
        gen(model, init_image=original, outpaint={"direction": "sideways", "pixels": 8})


def test_job_writes_each_result_into_the_project_with_previews(model, tmp_path):
    from core.image.metadata import read_png_parameters
    from core.project import Project

    events = []
    with Project.create(tmp_path / "studio.lienzo") as project:
        runner = JobRunner(project)
        runner.add_listener(lambda e: events.append(e) if e.type == "progress" else None)
        try:
            handle = runner.submit(run_generation, {"model": model, "prompt": "a fox", "steps": 3, "seed": 9,
                                                    "batch": 2, "width": 64, "height": 64}, kind="image.generate")
            assert handle.wait(60) and handle.status == DONE, handle.error
        finally:
            runner.shutdown()
        images = project.list_images(origin="generated")
        assert len(images) == 2
        gens = project.list_generations("image")
        assert sorted(g["seed"] for g in gens) == [9, 10]
        assert {g["image_id"] for g in gens} == {i["id"] for i in images}
        assert all(g["run_id"] == handle.run_id for g in gens)
        stored = project.get_image(gens[0]["image_id"])["params"]
        assert stored["model"]["hash"] and stored["versions"]["diffusers"]
        png_params = read_png_parameters(project.image_bytes(gens[0]["image_id"]))
        assert png_params["seed"] == gens[0]["seed"] and png_params["prompt"] == "a fox"
        run = project.get_run(handle.run_id)
        assert run["status"] == "done" and run["metrics"]["seeds"] == [9, 10]
    previews = [e.preview for e in events if e.preview is not None]
    assert previews and previews[0].mode == "RGB" and previews[0].size == (8, 8)


def test_cancel_stops_within_one_step(model, tmp_path):
    from core.project import Project

    with Project.create(tmp_path / "cancel.lienzo") as project:
        runner = JobRunner(project)
        cancelled_at = []

        def listener(event):
            if event.type == "progress" and event.step >= 1 and not cancelled_at:
                cancelled_at.append(event.step)
                event.job.cancel()

        runner.add_listener(listener)
        try:
            handle = runner.submit(run_generation, {"model": model, "prompt": "x", "steps": 150, "seed": 1,
                                                    "width": 64, "height": 64}, kind="image.generate")
            assert handle.wait(60)
        finally:
            runner.shutdown()
        assert handle.status == CANCELLED
        assert handle.step <= cancelled_at[0] + 1 < 150
        assert project.list_images(origin="generated") == []


def test_bad_model_fails_the_job_with_a_message(tmp_path):
    runner = JobRunner()
    try:
        handle = runner.submit(run_generation, {"model": str(tmp_path), "prompt": "x"}, kind="image.generate")
        handle.wait(30)
    finally:
        runner.shutdown()
    assert handle.status == FAILED and "not a diffusion pipeline" in handle.error.message


def test_sdxl_pipeline_folder_txt2img_and_inpaint(tmp_path):
    from tests.tiny_diffusion import build_tiny_sdxl_pipeline

    xl = str(build_tiny_sdxl_pipeline(tmp_path / "tiny-xl"))
    out = gen(xl, seed=3)
    first = out.results[0]
    assert first.params["model"]["family"] == "sdxl" and first.params["scheduler"] == "Euler"
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    painted = gen(xl, init_image=first.image, mask=mask).results[0]
    assert np.abs(pixels(painted.image)[:, 48:] - pixels(first.image)[:, 48:]).max() <= 2


def test_prediction_type_override_changes_the_result(model):
    eps = gen(model, prediction_type="epsilon").results[0]
    v = gen(model, prediction_type="v_prediction").results[0]
    assert v.params["prediction_type"] == "v_prediction" and v.image.tobytes() != eps.image.tobytes()
    with pytest.raises(AppError, match="prediction type"):
        gen(model, prediction_type="flow")


def test_out_of_memory_during_denoising_becomes_a_clear_message(model):
    """The UNet raises what torch raises when memory runs out; the job turns it into an AppError."""
    import torch

    from core.image.pipelines import load_pipeline

    loaded, _ = load_pipeline(model)
    unet = loaded.pipe.unet

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    unet.forward = exhausted
    try:
        with pytest.raises(AppError, match="Out of memory on the CPU while generating 64×64") as err:
            gen(model)
        assert "smaller size" in err.value.hint
    finally:
        del unet.forward  # back to the class's forward
    assert gen(model).results[0].image.size == (64, 64)
