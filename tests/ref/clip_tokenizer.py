#!/usr/bin/python3
"""clip_tokenizer.py - the reference CLIP tokenizer that cmr-caption-ingest's goldens come from.

Written from the published algorithm of OpenAI CLIP's simple_tokenizer.py:
    basic_clean:      ftfy.fix_text, then html.unescape twice, then strip
    whitespace_clean: runs of whitespace to one space, strip
    lower()
    pre-tokenise:     <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+
                      (regex module, IGNORECASE)
    each piece:       UTF-8 bytes -> bytes_to_unicode symbols -> BPE with the merge ranks of
                      bpe_simple_vocab_16e6.txt.gz (48,894 merges, vocabulary of 49,408)
    tokenize():       [49406] + ids + [49407], truncated to the context length with the end
                      token kept.

ftfy is not packaged in Debian, so ftfy.fix_text's default steps are written out below as
they act on well-formed text (ftfy 6.1): HTML entities when the segment has no '<'
(repeated to a fixed point, as ftfy does), C1 controls read as windows-1252, Latin ligatures,
full-width and half-width forms (NFKC of U+FF01..U+FFEF, U+3000 to a space), curly quotes,
line breaks, terminal escapes, control characters, NFC. Its mojibake repair (fix_encoding and
friends) is left out: it only acts on text that was decoded with the wrong codec.

Usage:
    clip_tokenizer.py VOCAB.gz < lines        one text per line -> space-separated ids per line
    clip_tokenizer.py VOCAB.gz --json < jsonl one JSON string per line (for texts with tabs)
Only for generating goldens and for the benchmark; make check does not run Python.
"""
import gzip
import html
import html.entities
import json
import re
import sys
import unicodedata
from functools import lru_cache

import regex

# ---- ftfy.fix_text, default configuration, as it acts on well-formed text ----


def _build_html_entities():
    entities = {}
    for name, char in html.entities.html5.items():
        if name.endswith(";"):
            entities["&" + name] = char
            if name == name.lower():
                name_upper = name.upper()
                entity_upper = "&" + name_upper
                if html.unescape(entity_upper) == entity_upper:
                    entities[entity_upper] = char.upper()
    return entities


HTML_ENTITIES = _build_html_entities()
HTML_ENTITY_RE = re.compile(r"&#?[0-9A-Za-z]{1,24};")


def _unescape_fixup(match):
    text = match.group(0)
    if text in HTML_ENTITIES:
        return HTML_ENTITIES[text]
    if text.startswith("&#"):
        unescaped = html.unescape(text)
        return text if ";" in unescaped else unescaped
    return text


def unescape_html(text):
    return HTML_ENTITY_RE.sub(_unescape_fixup, text)


ANSI_RE = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")

C1_RE = re.compile("[\x80-\x9f]")
_CP1252 = "€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8dŽ\x8f\x90‘’“”•–—˜™š›œ\x9džŸ"


def fix_c1_controls(text):
    return C1_RE.sub(lambda m: _CP1252[ord(m.group(0)) - 0x80], text)


LIGATURES = {
    ord("Ĳ"): "IJ", ord("ĳ"): "ij", ord("ŉ"): "ʼn", ord("Ǳ"): "DZ", ord("ǲ"): "Dz",
    ord("ǳ"): "dz", ord("Ǆ"): "DŽ", ord("ǅ"): "Dž", ord("ǆ"): "dž", ord("Ǉ"): "LJ",
    ord("ǈ"): "Lj", ord("ǉ"): "lj", ord("Ǌ"): "NJ", ord("ǋ"): "Nj", ord("ǌ"): "nj",
    ord("ﬀ"): "ff", ord("ﬁ"): "fi", ord("ﬂ"): "fl", ord("ﬃ"): "ffi", ord("ﬄ"): "ffl",
    ord("ﬅ"): "ſt", ord("ﬆ"): "st",
}

WIDTH_MAP = {0x3000: " "}
for _i in range(0xFF01, 0xFFF0):
    _alt = unicodedata.normalize("NFKC", chr(_i))
    if _alt != chr(_i):
        WIDTH_MAP[_i] = _alt

SINGLE_QUOTE_RE = re.compile("[\u02bc\u2018-\u201b]")
DOUBLE_QUOTE_RE = re.compile("[\u201c-\u201f]")
LINE_BREAK_RE = re.compile("\r\n|\r|\u2028|\u2029|\u0085")

CONTROL_CHARS = {}
for _i in list(range(0x00, 0x09)) + [0x0B] + list(range(0x0E, 0x20)) + [0x7F] + \
        list(range(0x206A, 0x2070)) + [0xFEFF] + list(range(0xFFF9, 0xFFFD)):
    CONTROL_CHARS[_i] = None


def fix_segment(text):
    unescape = "<" not in text
    while True:
        orig = text
        if unescape:
            text = unescape_html(text)
        text = fix_c1_controls(text)
        text = text.translate(LIGATURES)
        text = text.translate(WIDTH_MAP)
        text = SINGLE_QUOTE_RE.sub("'", text)
        text = DOUBLE_QUOTE_RE.sub('"', text)
        text = LINE_BREAK_RE.sub("\n", text)
        text = ANSI_RE.sub("", text)
        text = text.translate(CONTROL_CHARS)
        text = unicodedata.normalize("NFC", text)
        if text == orig:
            return text


def fix_text(text):
    # ftfy works segment by segment: pieces ending at each "\n" (only "\n")
    return "".join(fix_segment(seg) for seg in re.findall(r"[^\n]*\n|[^\n]+", text))


# ---- CLIP simple_tokenizer ----


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


def basic_clean(text):
    text = fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text):
    text = re.sub(r"\s+", " ", text)
    return text.strip()


class Tokenizer:
    def __init__(self, bpe_path):
        self.byte_encoder = bytes_to_unicode()
        merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        merges = merges[1:49152 - 256 - 2 + 1]
        merges = [tuple(m.split()) for m in merges]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        for merge in merges:
            vocab.append("".join(merge))
        vocab.extend(["<|startoftext|>", "<|endoftext|>"])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = " ".join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        bpe_tokens = []
        text = whitespace_clean(basic_clean(text)).lower()
        for token in regex.findall(self.pat, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            bpe_tokens.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return bpe_tokens

    def tokenize(self, text, context_length=77):
        ids = [self.encoder["<|startoftext|>"]] + self.encode(text) + [self.encoder["<|endoftext|>"]]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = self.encoder["<|endoftext|>"]
        return ids


def main():
    tok = Tokenizer(sys.argv[1])
    as_json = "--json" in sys.argv[2:]
    out = sys.stdout
    for line in sys.stdin.buffer:
        line = line.decode("utf-8")
        text = json.loads(line) if as_json else line.rstrip("\n")
        out.write(" ".join(map(str, tok.tokenize(text))) + "\n")


if __name__ == "__main__":
    main()
