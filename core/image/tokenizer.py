"""The CLIP tokenizer for single-file checkpoints, built offline from the merges Lienzo ships.

A single .safetensors checkpoint carries no tokenizer. CLIP's vocabulary is fully determined by its
BPE merges (256 byte symbols, the same with '</w>', one token per merge, two special tokens), so we
ship only merges.txt (MIT, see resources/diffusers/clip_tokenizer/LICENSE) and derive vocab.json.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from core.paths import data_dir

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "diffusers"
MERGES = RESOURCES / "clip_tokenizer" / "merges.txt"
VOCAB_SIZE = 49408


def _bytes_to_unicode() -> list[str]:
    """CLIP/GPT-2's reversible byte -> printable character table, in CLIP's vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def clip_tokenizer_folder() -> Path:
    """A folder with vocab.json + merges.txt (written once into the user data folder)."""
    folder = data_dir() / "cache" / "clip_tokenizer"
    vocab_path = folder / "vocab.json"
    if vocab_path.exists() and (folder / "merges.txt").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    text = MERGES.read_text(encoding="utf-8")
    merges = [line for line in text.split("\n")[1:] if line]
    symbols = _bytes_to_unicode()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split(" ")) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    tmp = folder / "vocab.json.tmp"
    tmp.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(text, encoding="utf-8")
    tmp.replace(vocab_path)  # written last and atomically: its presence means the folder is complete
    return folder


@lru_cache(maxsize=4)
def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """SD 1.x pads with <|endoftext|>; the OpenCLIP encoders of SD 2.x and SDXL pad with '!'."""
    from transformers import CLIPTokenizer

    folder = clip_tokenizer_folder()
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token,
                         model_max_length=77)
