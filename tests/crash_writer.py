"""Child process for the project tests (run as a script, not collected by pytest).

    python tests/crash_writer.py write PROJECT   # write documents and images until killed
    python tests/crash_writer.py hold PROJECT    # open for writing until stdin closes; a line
                                                 # "doc TITLE" on stdin creates a document

`write` prints one line after each committed write, so the parent knows what must survive:
    run <id> -                      a run row left "running" (must come back "interrupted")
    doc <id> <sha256 of text>       a document created and saved (two rows, one transaction)
    image <id> <sha256 of bytes>    an image added
"""

import hashlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.project import Project  # noqa: E402


def _png(i: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(i)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def write(path: str) -> None:
    project = Project.open(path)
    print("ready", flush=True)
    run_id = project.start_run("crash-test", {"loop": True}, status="running")
    print(f"run {run_id} -", flush=True)
    for i in range(100_000):  # bounded, in case the parent never kills us
        if i % 2 == 0:
            text = f"Document {i}\n" + "lorem ipsum " * (50 + i % 200)
            with project.transaction():
                doc_id = project.create_document(f"doc {i}", "draft")
                project.save_document(doc_id, text)
            print(f"doc {doc_id} {hashlib.sha256(text.encode()).hexdigest()}", flush=True)
        else:
            data = _png(i)
            image_id = project.add_image(data, f"image {i}.png")
            print(f"image {image_id} {hashlib.sha256(data).hexdigest()}", flush=True)


def hold(path: str) -> None:
    project = Project.open(path)
    print("ready", flush=True)
    for line in sys.stdin:  # "doc TITLE" creates a document and answers its id
        if line.startswith("doc "):
            print(project.create_document(line[4:].strip()), flush=True)
    project.close()


if __name__ == "__main__":
    {"write": write, "hold": hold}[sys.argv[1]](sys.argv[2])
