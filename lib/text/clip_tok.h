/* text/clip_tok.h - OpenAI CLIP's tokenizer, exactly: ftfy-style text repair, HTML unescaping,
 * whitespace and case normalisation, CLIP's pre-tokenisation pattern, byte-level BPE.
 * Never prints or exits; not thread-safe per tokenizer (it keeps a word cache). */
#ifndef CMR_CLIP_TOK_H
#define CMR_CLIP_TOK_H

#include <stddef.h>
#include <stdint.h>

#define CMR_CLIP_CONTEXT 77

typedef struct cmr_clip_tok cmr_clip_tok;

/* The vocabulary built into cmr: OpenAI's bpe_simple_vocab_16e6.txt.gz (MIT, lib/text/clip/). */
cmr_clip_tok *cmr_clip_tok_new(char *err, size_t errlen);
/* A merges file in the format of bpe_simple_vocab_16e6.txt(.gz), as CLIP reads it. */
cmr_clip_tok *cmr_clip_tok_from_merges(const char *path, char *err, size_t errlen);
/* A Hugging Face CLIPTokenizer pair: vocab.json (token -> id) and merges.txt. */
cmr_clip_tok *cmr_clip_tok_from_hf(const char *vocab_json, const char *merges_txt, char *err,
				   size_t errlen);
void cmr_clip_tok_free(cmr_clip_tok *t);

int32_t cmr_clip_tok_sot(const cmr_clip_tok *t); /* <|startoftext|>: 49406 */
int32_t cmr_clip_tok_eot(const cmr_clip_tok *t); /* <|endoftext|>: 49407 */
int32_t cmr_clip_tok_vocab_size(const cmr_clip_tok *t);

/* CLIP's text clean-up of valid UTF-8 text: ftfy.fix_text's default fixes as they act on
 * well-formed text, html.unescape twice, strip, whitespace runs to one space, lower().
 * Returns malloc'ed UTF-8 (NULL when out of memory). */
char *cmr_clip_clean(const char *text, size_t len);

/* Tokenizes valid UTF-8 text as clip.tokenize does: start token, BPE ids, end token,
 * truncated to ctx ids with the end token kept. Writes at most ctx ids to ids; returns the
 * count, or -1 when out of memory. *truncated (if given) says whether ids were cut. */
int cmr_clip_tokenize(cmr_clip_tok *t, const char *text, size_t len, int ctx, int32_t *ids,
		      int *truncated);

/* The BPE ids of text without start/end tokens and without truncation, appended to a
 * growing array (*ids, *n, *cap). Returns 0 or -1. */
int cmr_clip_encode(cmr_clip_tok *t, const char *text, size_t len, int32_t **ids, size_t *n,
		    size_t *cap);

#endif
