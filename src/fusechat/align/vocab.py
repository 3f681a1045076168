"""What bytes of text each token id stands for, learned from the tokenizer's own decoder.

Vocabulary maps compare tokens of different tokenizers, whose pieces spell the same text differently:
byte-level BPE writes ` Hello` as `ĠHello` and a byte as a printable stand-in character, a `▁`-marked
vocabulary writes it as `▁Hello` and keeps raw bytes as `<0xNN>` fallback pieces. Rather than guess the
convention from a class or a model name, this module asks the tokenizer's decoder: a byte-level table is used
only after the decoder has been seen to turn every byte's stand-in back into that byte, and other pieces are
decoded behind a probe token so a decoder that strips the first token's leading space cannot hide it. The
result, one `bytes` per id, is the normalised spelling every map compares.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class Vocab:
    """A tokenizer's vocabulary as normalised bytes.

    `pieces[i]` is the bytes token id i stands for (b"" for ids with no token); `partial[i]` is True when
    those bytes are not valid UTF-8 on their own (a piece of a split character). `normalize` is the
    tokenizer's text normaliser (None if it has none): the pieces spell the normalised text, while offsets
    index the original, so the exact alignment needs it where the two differ (see `sequence.recomposed_offsets`).
    """

    pieces: list[bytes]
    partial: np.ndarray
    normalize: Callable[[str], str] | None = None

    def __len__(self) -> int:
        return len(self.pieces)

    def texts(self) -> list[str]:
        """Pieces as str for string algorithms; an invalid byte becomes a lone surrogate (one code point)."""
        return [p.decode("utf-8", errors="surrogateescape") for p in self.pieces]


def byte_level_alphabet() -> dict[int, str]:
    """Byte-level BPE's byte-to-character table (printable Latin-1 kept, the rest shifted up)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shift = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shift)
            shift += 1
    return table


def _utf8_samples() -> list[bytes]:
    """Valid UTF-8 sequences that together contain every byte that can occur in UTF-8 text."""
    out = [bytes([b]) for b in range(0x80)]
    out += [bytes([0xC2, b]) for b in range(0x80, 0xC0)]  # every continuation byte
    out += [bytes([b, 0x80]) for b in range(0xC2, 0xE0)]  # two-byte leads
    out += [bytes([b, 0xA0 if b == 0xE0 else 0x80, 0x80]) for b in range(0xE0, 0xF0)]
    out += [bytes([b, 0x90 if b == 0xF0 else 0x80, 0x80, 0x80]) for b in range(0xF0, 0xF5)]
    return out


def _is_byte_level(decoder: Any) -> bool:
    """Whether `decoder` turns the byte-level stand-in spelling of any UTF-8 text back into that text."""
    if decoder is None:
        return False
    table = byte_level_alphabet()
    samples = _utf8_samples()
    try:
        decoded = [decoder.decode(["".join(table[b] for b in s)]) for s in samples]
    except Exception:  # a decoder that cannot take these pieces is not byte-level
        return False
    return all(d == s.decode("utf-8") for d, s in zip(decoded, samples, strict=True))


def _find_probe(backend: Any, limit: int, chunk: int = 512) -> int | None:
    """An id that decodes to one ASCII letter, and twice to two: a neutral left context for decoding."""
    size = min(limit, backend.get_vocab_size(with_added_tokens=True))
    for lo in range(0, size, chunk):
        ids = list(range(lo, min(size, lo + chunk)))
        singles = backend.decode_batch([[i] for i in ids], skip_special_tokens=False)
        for i, s in zip(ids, singles, strict=True):
            pair = backend.decode([i, i], skip_special_tokens=False) if len(s) == 1 else ""
            if s.isascii() and s.isalpha() and pair == s * 2:
                return i
    return None


def vocab_bytes(tokenizer: Any) -> Vocab:
    """The normalised bytes of every id of a Hugging Face fast tokenizer (see the module docstring)."""
    backend = tokenizer.backend_tokenizer
    size = backend.get_vocab_size(with_added_tokens=True)
    id_to_piece = {i: p for p, i in backend.get_vocab(with_added_tokens=True).items()}
    size = max(size, max(id_to_piece) + 1 if id_to_piece else 0)
    added = {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    pieces: list[bytes] = [b""] * size
    partial = np.zeros(size, dtype=bool)
    todo = [i for i in range(size) if i in id_to_piece]

    if _is_byte_level(backend.decoder):
        inverse = {c: b for b, c in byte_level_alphabet().items()}
        rest = []
        for i in todo:
            piece = id_to_piece[i]
            if i in added or any(c not in inverse for c in piece):
                rest.append(i)
            else:
                pieces[i] = bytes(inverse[c] for c in piece)
        todo = rest

    if todo:
        probe = _find_probe(backend, limit=size)
        if probe is None:
            decoded = backend.decode_batch([[i] for i in todo], skip_special_tokens=False)
        else:
            head = backend.decode([probe], skip_special_tokens=False)
            pairs = backend.decode_batch([[probe, i] for i in todo], skip_special_tokens=False)
            decoded = [p[len(head) :] if p.startswith(head) else p for p in pairs]
        for i, text in zip(todo, decoded, strict=True):
            match = _BYTE_FALLBACK.match(id_to_piece[i])
            if _REPLACEMENT in text and match and _REPLACEMENT not in id_to_piece[i]:
                pieces[i] = bytes([int(match.group(1), 16)])
            else:
                pieces[i] = text.encode("utf-8")
    for i, p in enumerate(pieces):
        try:
            p.decode("utf-8")
        except UnicodeDecodeError:
            partial[i] = True
    normalizer = backend.normalizer
    return Vocab(pieces=pieces, partial=partial, normalize=None if normalizer is None else normalizer.normalize_str)
