"""Tiny random-weight models in real Hugging Face formats, built offline in a folder.

Shared by any test that needs a real model to go through Lienzo's loading code:
    from tests.tiny_models import build_gpt2, build_t5, build_bert_classifier, build_bert_encoder
Each builder writes config.json, model.safetensors and a byte-level BPE tokenizer and returns the folder.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = """\
The quick brown fox jumps over the lazy dog. A writer drafts an article about the harbour at dawn.
Summaries are short; translations keep the meaning. The report shows sales grew in the third quarter.
Customers asked about delivery times, refunds and the warranty. Good service answers clearly and kindly.
Once upon a time a lighthouse keeper counted ships and wrote letters to the sea.
Technical documentation explains how to install, configure and run the program step by step.
En un lugar de la Mancha, de cuyo nombre no quiero acordarme, vivía un hidalgo.
Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation , . ; : ! ? ( ) [ ] { } " ' - + = / * & % $ # @.
""" * 4

SPECIALS = ["<|endoftext|>", "<pad>", "<unk>", "<cls>", "<sep>", "<mask>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(folder: Path, vocab_size: int = 600, chat_template: str | None = None, model_max_length=None):
    """A byte-level BPE tokenizer trained on a few KB of text, saved as tokenizer.json + config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<pad>",
        unk_token="<unk>", cls_token="<cls>", sep_token="<sep>", mask_token="<mask>",
        model_max_length=model_max_length or 1_000_000)
    if chat_template:
        fast.chat_template = chat_template
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return fast


def build_gpt2(folder: Path, n_positions: int = 128, chat_template: bool = False, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    tok = build_tokenizer(folder, chat_template=CHAT_TEMPLATE if chat_template else None,
                          model_max_length=n_positions)
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=n_positions, vocab_size=len(tok),
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def build_t5(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    folder = Path(folder)
    tok = build_tokenizer(folder, model_max_length=256)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                      num_heads=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


def build_bert_classifier(folder: Path, labels=("negative", "positive"), seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = Path(folder)
    tok = build_tokenizer(folder, model_max_length=128)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={l: i for i, l in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def build_bert_encoder(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    tok = build_tokenizer(folder, model_max_length=128)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    BertModel(config).save_pretrained(folder)
    return folder


_BUILDERS = {"gpt2": build_gpt2, "gpt2-chat": lambda f: build_gpt2(f, n_positions=512, chat_template=True),
             "t5": build_t5, "classifier": build_bert_classifier, "encoder": build_bert_encoder}
_built: dict[str, Path] = {}


def shared_tiny(kind: str) -> Path:
    """A tiny model built once per test process (kinds: gpt2, gpt2-chat, t5, classifier, encoder).

    Read-only by convention: a test that changes files must copy the folder first.
    """
    import atexit
    import shutil
    import tempfile

    if kind not in _built:
        if "root" not in _built:
            root = Path(tempfile.mkdtemp(prefix="lienzo-tiny-"))
            atexit.register(shutil.rmtree, root, True)
            _built["root"] = root
        _built[kind] = _BUILDERS[kind](_built["root"] / kind)
    return _built[kind]
