"""The demo project: made by code on first run, complete, deterministic, never half-written."""

import io
import sqlite3

from PIL import Image

from core import demo, paths
from core.project import Project


def test_demo_project_has_welcome_document_and_sample_images(tmp_path):
    path = demo.create_demo_project(tmp_path / "Demo.lienzo")
    with Project.open(path, read_only=True) as project:
        docs = {d["title"]: d for d in project.list_documents()}
        assert set(docs) == {demo.WELCOME_TITLE, demo.NOTES_TITLE}
        welcome = project.get_document(docs[demo.WELCOME_TITLE]["id"])
        assert welcome["format"] == "markdown" and "offline" in welcome["text"]
        assert project.list_documents()[0]["title"] == demo.WELCOME_TITLE  # opens first
        images = project.list_images()
        assert [i["name"] for i in images] == [name for name, *_ in demo.SAMPLES]
        modes = {i["name"]: i["mode"] for i in images}
        assert modes["Shapes"] == "RGBA" and modes["Colour gradient"] == "RGB"
        ramp = next(i for i in images if i["name"].startswith("Grey ramp"))
        with Image.open(io.BytesIO(project.image_bytes(ramp["id"]))) as img:
            assert img.mode.startswith("I") and max(img.getextrema()) > 255  # really 16-bit
        for image in images:
            assert project.thumbnail_bytes(image["id"]).startswith(b"\x89PNG")
            assert image["params"]["made_by"] == "core.demo"
    assert not list(tmp_path.glob("*.partial*"))


def test_demo_images_are_deterministic(tmp_path):
    shas = []
    for name in ("a.lienzo", "b.lienzo"):
        path = demo.create_demo_project(tmp_path / name)
        with sqlite3.connect(path) as conn:
            shas.append(sorted(r[0] for r in conn.execute("SELECT sha256 FROM images")))
    assert shas[0] == shas[1] and len(shas[0]) == len(demo.SAMPLES)


def test_ensure_demo_project_creates_once_in_user_data_folder():
    path = demo.ensure_demo_project()
    assert path == paths.demo_project_path() and path.exists()
    with Project.open(path) as project:
        doc_id = project.list_documents()[0]["id"]
        project.save_document(doc_id, "my own words")
    again = demo.ensure_demo_project()  # must not overwrite the user's edits
    with Project.open(again, read_only=True) as project:
        assert project.get_document(doc_id)["text"] == "my own words"
