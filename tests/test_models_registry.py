"""The model registry and cache on real tiny models saved in Hugging Face layouts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from core.errors import AppError
from core.models import registry
from core.models.cache import ModelCache, choose_device
from tests.tiny_models import build_bert_classifier, build_bert_encoder, build_gpt2, build_t5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny_models")
    return {
        "gpt2": build_gpt2(base / "gpt2"),
        "t5": build_t5(base / "t5"),
        "clf": build_bert_classifier(base / "clf"),
        "enc": build_bert_encoder(base / "enc"),
    }


def copy_model(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_kinds_sizes_and_parameters_without_loading(tiny):
    import torch
    from safetensors.torch import load_file

    expected = {"gpt2": registry.CAUSAL_LM, "t5": registry.SEQ2SEQ, "clf": registry.SEQUENCE_CLASSIFIER,
                "enc": registry.SENTENCE_ENCODER}
    for name, kind in expected.items():
        info = registry.inspect_model(tiny[name])
        assert info.kind == kind
        tensors = load_file(str(tiny[name] / "model.safetensors"))
        assert info.parameters == sum(t.numel() for t in tensors.values())
        assert info.size_bytes >= (tiny[name] / "model.safetensors").stat().st_size
        assert info.memory_fp16 < info.memory_fp32
        assert info.has_tokenizer
    assert registry.inspect_model(tiny["gpt2"]).context_length == 128
    assert "parameters" in registry.inspect_model(tiny["gpt2"]).summary()
    del torch


def test_default_encoder_is_the_published_minilm():
    path = registry.verify_default_encoder()
    info = registry.inspect_model(path)
    assert info.kind == registry.SENTENCE_ENCODER
    assert 22_000_000 < info.parameters < 23_500_000


def test_bad_folders_get_clear_errors(tiny, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AppError, match="holds no model weights"):
        registry.inspect_model(empty)

    no_config = tmp_path / "no_config"
    no_config.mkdir()
    shutil.copy(tiny["gpt2"] / "model.safetensors", no_config)
    with pytest.raises(AppError, match="no config.json"):
        registry.inspect_model(no_config)

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny["gpt2"] / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(AppError) as err:
        registry.inspect_model(pickled)
    assert "pickle" in err.value.message and "save_pretrained" in err.value.hint
    with pytest.raises(AppError, match="pickle"):
        registry.inspect_model(pickled / "pytorch_model.bin")

    remote = copy_model(tiny["gpt2"], tmp_path / "remote")
    cfg = json.loads((remote / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (remote / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AppError, match="trust_remote_code"):
        registry.inspect_model(remote)

    unsupported = copy_model(tiny["gpt2"], tmp_path / "tokcls")
    cfg = json.loads((unsupported / "config.json").read_text())
    cfg["architectures"] = ["GPT2ForTokenClassification"]
    (unsupported / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AppError, match="cannot use this model's architecture"):
        registry.inspect_model(unsupported)

    unknown = copy_model(tiny["gpt2"], tmp_path / "unknown")
    cfg = json.loads((unknown / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "blorp", ["BlorpForCausalLM"]
    (unknown / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AppError, match="does not know"):
        registry.inspect_model(unknown)

    broken = copy_model(tiny["gpt2"], tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(AppError, match="not a valid .safetensors"):
        registry.inspect_model(broken)

    with pytest.raises(AppError, match="does not exist"):
        registry.inspect_model(tmp_path / "nowhere")


def test_missing_tokenizer_is_refused_at_load(tiny, tmp_path):
    folder = copy_model(tiny["gpt2"], tmp_path / "notok")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (folder / name).unlink(missing_ok=True)
    info = registry.inspect_model(folder)
    assert not info.has_tokenizer
    with pytest.raises(AppError, match="no tokenizer"):
        ModelCache(device="cpu").text_model(folder)


def test_single_safetensors_file(tiny, tmp_path):
    target = tmp_path / "weights.safetensors"
    shutil.copy(tiny["clf"] / "model.safetensors", target)
    (tmp_path / "weights.json").write_text(json.dumps({"architecture": "conv-vae"}))
    info = registry.inspect_model(target)
    assert info.kind == registry.WEIGHTS and info.architecture == "conv-vae" and info.parameters > 0
    hashes = registry.hash_model(target)
    assert set(hashes) == {"weights.safetensors", "weights.json"}
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(AppError, match="pickle"):
        registry.inspect_model(ckpt)


def test_hashes_recorded_and_rechecked(tiny, tmp_path):
    folder = copy_model(tiny["clf"], tmp_path / "clf")
    reg = registry.ModelRegistry(tmp_path / "models.json")
    info = reg.register(folder, name="my classifier")
    assert info.files_sha256["model.safetensors"] == registry.sha256_file(folder / "model.safetensors")
    assert [m.name for m in reg.list(kind=registry.SEQUENCE_CLASSIFIER)] == ["my classifier"]
    assert reg.verify("my classifier").name == "my classifier"
    # One changed byte in the weights is caught.
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(AppError, match="model.safetensors"):
        reg.verify("my classifier")
    # The registry survives a reopen; removal works and unknown names are errors.
    reg2 = registry.ModelRegistry(tmp_path / "models.json")
    assert reg2.get(str(folder.resolve())).name == "my classifier"
    reg2.remove("my classifier")
    assert reg2.list() == []
    with pytest.raises(AppError):
        reg2.get("my classifier")


def test_find_models_in_hf_cache_read_only(tiny, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-gpt2"
    blobs, snap = repo / "blobs", repo / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for f in tiny["gpt2"].iterdir():  # the hub cache keeps files as symlinks into blobs/
        blob = blobs / registry.sha256_file(f)
        shutil.copy(f, blob)
        os.symlink(blob, snap / f.name)
    bad = cache / "models--acme--pickled" / "snapshots" / "ff"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text("{}")
    (bad / "pytorch_model.bin").write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    before = sorted(p.name for p in cache.rglob("*"))
    found, skipped = registry.find_cached_models()
    assert [m.name for m in found] == ["acme/tiny-gpt2"]
    assert found[0].kind == registry.CAUSAL_LM and found[0].source == "hf-cache"
    assert found[0].size_bytes >= (tiny["gpt2"] / "model.safetensors").stat().st_size
    assert skipped and skipped[0][0] == "acme/pickled" and "pickle" in skipped[0][1]
    assert sorted(p.name for p in cache.rglob("*")) == before
    # A cached model loads through the same code as a folder.
    entry = ModelCache(device="cpu").text_model(found[0].path)
    assert entry.model.config.model_type == "gpt2"


def test_cache_reuses_evicts_and_unloads(tiny):
    import torch

    device, dtype = choose_device()
    assert (device, dtype) == ("cpu", torch.float32) or device.startswith("cuda")
    cache = ModelCache(device="cpu", dtype=torch.float32)
    a = cache.text_model(tiny["gpt2"])
    assert cache.text_model(tiny["gpt2"]) is a  # kept between requests
    b = cache.text_model(tiny["clf"])
    assert set(cache.loaded()) == {a.key, b.key}
    # A budget that holds only one of them: loading a third evicts the least recently used.
    t5_estimate = registry.inspect_model(tiny["t5"]).memory_fp32
    cache._budget = max(a.nbytes + b.nbytes, t5_estimate) + 1
    cache.text_model(tiny["clf"])  # touch clf so gpt2 is the oldest
    c = cache.text_model(tiny["t5"])
    assert a.key not in cache and c.key in cache
    assert cache.unload(c.key) and c.key not in cache
    cache.clear()
    assert cache.loaded() == [] and cache.used_bytes == 0
    with pytest.raises(AppError, match="budget"):
        ModelCache(budget_bytes=1000, device="cpu").text_model(tiny["gpt2"])
    with pytest.raises(AppError, match="seq2seq model"):
        cache.text_model(tiny["gpt2"], kind=registry.SEQ2SEQ)


def test_out_of_memory_becomes_app_error_and_unloads(tiny):
    import torch

    cache = ModelCache(device="cpu")
    entry = cache.text_model(tiny["gpt2"])
    with pytest.raises(AppError) as err:
        with cache.guard(entry, "generating"):
            # What torch raises when a CUDA allocation fails.
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "Out of memory" in err.value.message and "smaller model" in err.value.hint
    assert entry.key not in cache


def test_hub_download_is_explicit_and_off_while_offline(monkeypatch):
    # Only an explicit user action downloads; with HF_HUB_OFFLINE=1 (as in tests) it says so, no network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AppError, match="Downloads are switched off"):
        registry.download_from_hub("sentence-transformers/all-MiniLM-L6-v2")
