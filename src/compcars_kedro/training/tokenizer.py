"""Text prompts and tokenizers for CLIP image-text training.

Two tokenizers behind one interface (:class:`TextTokenizer`: ``encode(texts) -> (input_ids,
attention_mask)``, ``eos_token_id``, ``vocab_size``):

* the real ``CLIPTokenizer.from_pretrained(path_or_id, local_files_only=True)`` when available
  offline (``model.clip.tokenizer``, or next to a Hugging Face ``model.weights``);
* otherwise (offline sample runs) a small byte-pair-encoding tokenizer trained with the
  ``tokenizers`` library on the training prompts: NFKC + lowercase, whitespace/punctuation
  pre-tokenisation, special tokens ``<pad>``=0, ``<unk>``=1, ``<|startoftext|>``=2,
  ``<|endoftext|>``=3, every sequence ``BOS ... EOS`` truncated to ``max_length`` (EOS kept),
  vocabulary capped at the CLIP text config's ``vocab_size``.

Pooling: transformers' ``CLIPTextModel`` pools the hidden state at the FIRST position of
``config.eos_token_id`` (and only when that id is ``2``, a legacy value of old configs, at the
``argmax`` of the ids).  :func:`~compcars_kedro.training.clip.ClipBackbone.set_eos_token_id` is
called with the tokenizer's EOS id (3 for the BPE, 49407 for CLIP's), so pooling always picks the
EOS token of our sequences (padding after EOS is never pooled).
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from .config import DEFAULT_PROMPT_TEMPLATE

logger = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"


def build_prompt(template: str = DEFAULT_PROMPT_TEMPLATE, **meta: Any) -> str:
    """Format a prompt, e.g. ``build_prompt(make="Audi", model="A4", type="sedan")``.

    Missing fields raise a ``KeyError`` naming them; ``None`` values become empty strings and
    repeated whitespace is collapsed.
    """
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    missing = sorted(fields - set(meta))
    if missing:
        raise KeyError(f"prompt template {template!r} needs {missing} but got only {sorted(meta)}")
    text = template.format(**{k: "" if v is None else v for k, v in meta.items()})
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([,.;:])", r"\1", text)


class TextTokenizer(Protocol):
    """What the training loop needs from a tokenizer."""

    eos_token_id: int
    vocab_size: int

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` int64 ``(N, L)``."""
        ...


class BPETokenizer:
    """Small BPE trained on a prompt corpus (see the module docstring)."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.pad_token_id = tokenizer.token_to_id(PAD)
        self.bos_token_id = tokenizer.token_to_id(BOS)
        self.eos_token_id = tokenizer.token_to_id(EOS)
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, corpus: Sequence[str], *, vocab_size: int, max_length: int) -> BPETokenizer:
        """Train on the unique prompts of ``corpus`` (deterministic: sorted input)."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.BPEDecoder()
        trainer = trainers.BpeTrainer(
            vocab_size=int(vocab_size),
            special_tokens=[PAD, UNK, BOS, EOS],
            min_frequency=1,
            show_progress=False,
        )
        tok.train_from_iterator(sorted(set(corpus)), trainer=trainer)
        return cls.from_tokenizer(tok, max_length=max_length, vocab_size=vocab_size)

    @classmethod
    def from_tokenizer(
        cls, tok: Any, *, max_length: int, vocab_size: int | None = None
    ) -> BPETokenizer:
        """Wrap a ``tokenizers.Tokenizer`` (post-processor / truncation / padding configured)."""
        from tokenizers import processors

        bos, eos, pad = tok.token_to_id(BOS), tok.token_to_id(EOS), tok.token_to_id(PAD)
        if (pad, bos, eos) != (0, 2, 3):
            raise ValueError(
                "BPE tokenizer special tokens must be <pad>=0, <|startoftext|>=2, <|endoftext|>=3"
            )
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
        )
        tok.enable_truncation(max_length=int(max_length))
        tok.enable_padding(pad_id=pad, pad_token=PAD)
        if vocab_size is not None and tok.get_vocab_size() > vocab_size:
            raise ValueError(
                f"BPE vocabulary ({tok.get_vocab_size()}) exceeds the CLIP text vocab_size {vocab_size}"
            )
        return cls(tok, max_length)

    def to_str(self) -> str:
        """JSON serialisation (stored in the checkpoint meta)."""
        return self.tokenizer.to_str()

    @classmethod
    def from_str(cls, data: str, *, max_length: int) -> BPETokenizer:
        """Inverse of :meth:`to_str`."""
        from tokenizers import Tokenizer

        return cls.from_tokenizer(Tokenizer.from_str(data), max_length=max_length)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encs = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encs], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.long)
        return ids, mask


class HFClipTokenizer:
    """``CLIPTokenizer`` wrapper (pads to the longest prompt, truncates at ``max_length``)."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.eos_token_id = int(tokenizer.eos_token_id)
        self.vocab_size = len(tokenizer)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return enc["input_ids"].long(), enc["attention_mask"].long()


def load_clip_tokenizer(path_or_id: str, max_length: int) -> HFClipTokenizer:
    """Offline ``CLIPTokenizer`` (raises ``OSError`` when not available locally)."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(path_or_id, local_files_only=True)
    return HFClipTokenizer(tok, max_length)


def build_tokenizer(
    spec: str | None,
    *,
    weights: str | None,
    corpus: Sequence[str],
    vocab_size: int,
    max_length: int,
) -> HFClipTokenizer | BPETokenizer:
    """Tokenizer for ``model.clip.tokenizer`` = ``spec`` (see :class:`~.config.ClipOptions`)."""
    if spec is not None and spec != "bpe":
        try:
            tok: HFClipTokenizer | BPETokenizer = load_clip_tokenizer(spec, max_length)
        except (OSError, ValueError) as exc:
            raise OSError(
                f"model.clip.tokenizer={spec!r} is not available offline; set it to a local "
                "CLIPTokenizer folder, 'bpe', or null"
            ) from exc
    else:
        tok = None  # type: ignore[assignment]
        if spec is None and weights is not None and not Path(weights).is_file():
            try:
                tok = load_clip_tokenizer(weights, max_length)
            except Exception:  # noqa: BLE001 - any failure means "no usable tokenizer there"
                logger.warning(
                    "No CLIPTokenizer next to model.weights=%r offline; training a BPE tokenizer "
                    "on the training prompts instead",
                    weights,
                )
        if tok is None:
            tok = BPETokenizer.train(corpus, vocab_size=vocab_size, max_length=max_length)
            logger.info(
                "Trained a BPE tokenizer (%d tokens) on %d prompts",
                tok.vocab_size,
                len(set(corpus)),
            )
    if tok.vocab_size > vocab_size:
        raise ValueError(
            f"tokenizer vocabulary ({tok.vocab_size}) exceeds the CLIP text vocab_size ({vocab_size}); "
            "set model.arch.vocab_size or model.clip.tokenizer"
        )
    return tok
