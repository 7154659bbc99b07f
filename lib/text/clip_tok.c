/* text/clip_tok.c - OpenAI CLIP's tokenizer (simple_tokenizer.py) in C, with utf8proc for Unicode
 * properties and normalisation. The reference it is tested against is tests/ref/clip_tokenizer.py. */
#include "util.h"
#include "text/clip_tok.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <jansson.h>
#include <utf8proc.h>
#include <xxhash.h>

#include "text/html_tables.h"

/* The vendored vocabulary, lib/text/clip/bpe_simple_vocab_16e6.txt.gz, built into the library. */
__asm__(".section .rodata\n"
	".global cmr_clip_vocab_gz\n"
	".type cmr_clip_vocab_gz, @object\n"
	".balign 16\n"
	"cmr_clip_vocab_gz:\n"
	".incbin \"lib/text/clip/bpe_simple_vocab_16e6.txt.gz\"\n"
	".global cmr_clip_vocab_gz_end\n"
	"cmr_clip_vocab_gz_end:\n"
	".previous\n");
extern const unsigned char cmr_clip_vocab_gz[], cmr_clip_vocab_gz_end[];

#define fail cmr_errf

/* ---- code point buffers ---- */
typedef struct {
	int32_t *v;
	size_t n, cap;
} cps;

static int cps_push(cps *b, int32_t c)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 64;
		int32_t *p = realloc(b->v, cap * sizeof *p);
		if (!p)
			return -1;
		b->v = p;
		b->cap = cap;
	}
	b->v[b->n++] = c;
	return 0;
}

/* Appends the code points of valid UTF-8 (invalid bytes become U+FFFD). */
static int cps_push_utf8(cps *b, const char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		utf8proc_int32_t c;
		utf8proc_ssize_t n = utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &c);
		if (n <= 0) {
			c = 0xfffd;
			n = 1;
		}
		if (cps_push(b, c) < 0)
			return -1;
		i += (size_t)n;
	}
	return 0;
}

static char *cps_utf8(const cps *b, size_t *len)
{
	char *out = malloc(b->n * 4 + 1);
	if (!out)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < b->n; i++)
		o += (size_t)utf8proc_encode_char(b->v[i], (uint8_t *)out + o);
	out[o] = 0;
	if (len)
		*len = o;
	return out;
}

static int cps_eq(const cps *a, const cps *b)
{
	return a->n == b->n && memcmp(a->v, b->v, a->n * sizeof *a->v) == 0;
}

static void cps_swap(cps *a, cps *b)
{
	cps t = *a;
	*a = *b;
	*b = t;
}

/* ---- Unicode classes as Python and the regex module see them ---- */
static int py_isspace(int32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
	       c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
	       c == 0x202f || c == 0x205f || c == 0x3000;
}

static int is_letter(int32_t c)
{
	utf8proc_category_t k = utf8proc_category(c);
	return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT ||
	       k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_LO;
}

static int is_number(int32_t c)
{
	utf8proc_category_t k = utf8proc_category(c);
	return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

static int is_ascii_alnum(int32_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* ---- HTML: Python's html.unescape, and ftfy's unescape_html ---- */
static const char *lookup(const char *name, int ftfy)
{
	size_t lo = 0, hi = sizeof html5_entities / sizeof html5_entities[0];
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(html5_entities[mid].name, name);
		if (c == 0)
			return html5_entities[mid].value;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!ftfy)
		return NULL;
	lo = 0;
	hi = sizeof ftfy_upper_entities / sizeof ftfy_upper_entities[0];
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(ftfy_upper_entities[mid].name, name);
		if (c == 0)
			return ftfy_upper_entities[mid].value;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Python's html._replace_charref for a numeric reference: appends the replacement. */
static int numeric_ref(cps *out, uint32_t num)
{
	for (size_t i = 0; i < sizeof html_invalid_charrefs / sizeof html_invalid_charrefs[0]; i++)
		if (html_invalid_charrefs[i].cp == num)
			return cps_push_utf8(out, html_invalid_charrefs[i].value, strlen(html_invalid_charrefs[i].value));
	if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff)
		return cps_push(out, 0xfffd);
	for (size_t i = 0; i < sizeof html_invalid_codepoints / sizeof html_invalid_codepoints[0]; i++)
		if (html_invalid_codepoints[i] == num)
			return 0;
	return cps_push(out, (int32_t)num);
}

static int hexval(int32_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Python's html.unescape(s):
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)  replaced by _replace_charref */
static int html_unescape(const cps *in, cps *out)
{
	out->n = 0;
	const int32_t *v = in->v;
	size_t n = in->n, i = 0;
	while (i < n) {
		if (v[i] != '&') {
			if (cps_push(out, v[i++]) < 0)
				return -1;
			continue;
		}
		size_t j = i + 1;
		if (j < n && v[j] == '#') {
			int hex = j + 1 < n && (v[j + 1] == 'x' || v[j + 1] == 'X') && j + 2 < n && hexval(v[j + 2]) >= 0;
			int dec = j + 1 < n && v[j + 1] >= '0' && v[j + 1] <= '9';
			if (!dec && !hex) { /* no alternative matches here */
				if (cps_push(out, v[i++]) < 0)
					return -1;
				continue;
			}
			size_t k = j + (dec ? 1 : 2);
			uint32_t num = 0;
			while (k < n && (dec ? (v[k] >= '0' && v[k] <= '9') : hexval(v[k]) >= 0)) {
				uint32_t d = (uint32_t)(dec ? v[k] - '0' : hexval(v[k]));
				num = num > 0x110000 ? 0x110001 : num * (dec ? 10 : 16) + d; /* saturate */
				k++;
			}
			if (k < n && v[k] == ';')
				k++;
			if (numeric_ref(out, num) < 0)
				return -1;
			i = k;
			continue;
		}
		/* a name: up to 32 characters that are not \t \n \f space < & # ; then ';'? */
		size_t k = j;
		while (k < n && k - j < 32 && v[k] != '\t' && v[k] != '\n' && v[k] != '\f' && v[k] != ' ' &&
		       v[k] != '<' && v[k] != '&' && v[k] != '#' && v[k] != ';')
			k++;
		if (k == j) {
			if (cps_push(out, v[i++]) < 0)
				return -1;
			continue;
		}
		if (k < n && v[k] == ';')
			k++;
		/* s = v[j..k): the whole name, else its longest prefix of at least 2 characters
		 * (names are ASCII: a prefix with other characters cannot match) */
		size_t len = k - j, x = len;
		const char *val = NULL;
		char name[40];
		for (x = len; x >= 1 && !val; x--) {
			if (x < len && x < 2)
				break;
			if (x > 33)
				continue;
			size_t q;
			for (q = 0; q < x && v[j + q] < 0x80; q++)
				name[q] = (char)v[j + q];
			if (q < x)
				continue;
			name[x] = 0;
			if ((val = lookup(name, 0)))
				break;
		}
		if (val) {
			if (cps_push_utf8(out, val, strlen(val)) < 0)
				return -1;
			for (size_t q = j + x; q < k; q++)
				if (cps_push(out, v[q]) < 0)
					return -1;
		} else {
			for (size_t q = i; q < k; q++)
				if (cps_push(out, v[q]) < 0)
					return -1;
		}
		i = k;
	}
	return 0;
}

/* ftfy's unescape_html: &#?[0-9A-Za-z]{1,24}; looked up in ftfy's entity table, numeric
 * ones through html.unescape (kept when that fails). */
static int ftfy_unescape(const cps *in, cps *out)
{
	out->n = 0;
	const int32_t *v = in->v;
	size_t n = in->n, i = 0;
	cps tmp = {0}, res = {0};
	int rc = 0;
	while (i < n && rc == 0) {
		size_t end = 0;
		if (v[i] == '&') {
			size_t j = i + 1;
			if (j < n && v[j] == '#')
				j++;
			size_t k = j;
			while (k < n && k - j < 25 && is_ascii_alnum(v[k]))
				k++;
			if (k > j && k - j <= 24 && k < n && v[k] == ';')
				end = k + 1;
		}
		if (!end) {
			rc = cps_push(out, v[i++]);
			continue;
		}
		char text[32];
		size_t tl = 0;
		for (size_t q = i; q < end; q++)
			text[tl++] = (char)v[q];
		text[tl] = 0;
		const char *val = v[i + 1] == '#' ? NULL : lookup(text + 1, 1);
		if (val) {
			rc = cps_push_utf8(out, val, strlen(val));
		} else if (v[i + 1] == '#') {
			tmp.n = 0;
			for (size_t q = i; q < end && rc == 0; q++)
				rc = cps_push(&tmp, v[q]);
			if (rc == 0)
				rc = html_unescape(&tmp, &res);
			int failed = 0;
			for (size_t q = 0; q < res.n; q++)
				failed |= res.v[q] == ';';
			for (size_t q = 0; q < (failed ? tmp.n : res.n) && rc == 0; q++)
				rc = cps_push(out, failed ? tmp.v[q] : res.v[q]);
		} else {
			for (size_t q = i; q < end && rc == 0; q++)
				rc = cps_push(out, v[q]);
		}
		i = end;
	}
	free(tmp.v);
	free(res.v);
	return rc;
}

/* ---- the other fixes of ftfy.fix_text ---- */
static const int32_t cp1252[32] = {
	0x20ac, 0x81,   0x201a, 0x192,  0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030, 0x160,
	0x2039, 0x152,  0x8d,   0x17d,  0x8f,   0x90,   0x2018, 0x2019, 0x201c, 0x201d, 0x2022,
	0x2013, 0x2014, 0x2dc,  0x2122, 0x161,  0x203a, 0x153,  0x9d,   0x17e, 0x178,
};

static const struct { int32_t cp; const char *to; } ligatures[] = {
	{0x132, "IJ"}, {0x133, "ij"}, {0x149, "\xca\xbcn"}, {0x1f1, "DZ"}, {0x1f2, "Dz"},
	{0x1f3, "dz"}, {0x1c4, "D\xc5\xbd"}, {0x1c5, "D\xc5\xbe"}, {0x1c6, "d\xc5\xbe"},
	{0x1c7, "LJ"}, {0x1c8, "Lj"}, {0x1c9, "lj"}, {0x1ca, "NJ"}, {0x1cb, "Nj"}, {0x1cc, "nj"},
	{0xfb00, "ff"}, {0xfb01, "fi"}, {0xfb02, "fl"}, {0xfb03, "ffi"}, {0xfb04, "ffl"},
	{0xfb05, "\xc5\xbft"}, {0xfb06, "st"},
};

/* NFKC of U+FF01..U+FFEF (full-width and half-width forms), computed once. */
static char *width_map[0xfff0 - 0xff01];
static pthread_once_t width_once = PTHREAD_ONCE_INIT;

static void width_init(void)
{
	for (int32_t c = 0xff01; c < 0xfff0; c++) {
		uint8_t s[8];
		utf8proc_ssize_t n = utf8proc_encode_char(c, s);
		s[n] = 0;
		uint8_t *k = NULL;
		utf8proc_map(s, n, &k, UTF8PROC_NULLTERM | UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
		if (k && strcmp((char *)k, (char *)s) != 0)
			width_map[c - 0xff01] = (char *)k;
		else
			free(k);
	}
}

static int is_control(int32_t c)
{
	return (c >= 0 && c <= 8) || c == 0x0b || (c >= 0x0e && c <= 0x1f) || c == 0x7f ||
	       (c >= 0x206a && c <= 0x206f) || c == 0xfeff || (c >= 0xfff9 && c <= 0xfffc);
}

/* One pass of the character maps of ftfy (C1 controls, ligatures, widths, quotes, line
 * breaks, terminal escapes, control characters), from in to out. */
static int ftfy_maps(const cps *in, cps *out)
{
	out->n = 0;
	const int32_t *v = in->v;
	cps a = {0};
	int rc = 0;
	/* the maps are applied one after another over the whole segment, as ftfy does; those
	 * that map one character to characters a later map would change are kept in order */
	for (size_t i = 0; i < in->n && rc == 0; i++) {
		int32_t c = v[i];
		if (c >= 0x80 && c <= 0x9f)
			c = cp1252[c - 0x80];
		size_t l;
		for (l = 0; l < sizeof ligatures / sizeof ligatures[0]; l++)
			if (ligatures[l].cp == c)
				break;
		if (l < sizeof ligatures / sizeof ligatures[0]) {
			rc = cps_push_utf8(&a, ligatures[l].to, strlen(ligatures[l].to));
			continue;
		}
		rc = cps_push(&a, c);
	}
	/* widths and quotes */
	cps b = {0};
	for (size_t i = 0; i < a.n && rc == 0; i++) {
		int32_t c = a.v[i];
		if (c == 0x3000)
			rc = cps_push(&b, ' ');
		else if (c >= 0xff01 && c < 0xfff0 && width_map[c - 0xff01])
			rc = cps_push_utf8(&b, width_map[c - 0xff01], strlen(width_map[c - 0xff01]));
		else
			rc = cps_push(&b, c);
	}
	for (size_t i = 0; i < b.n; i++) {
		int32_t c = b.v[i];
		if (c == 0x2bc || (c >= 0x2018 && c <= 0x201b))
			b.v[i] = '\'';
		else if (c >= 0x201c && c <= 0x201f)
			b.v[i] = '"';
	}
	/* line breaks, then terminal escapes, then control characters */
	a.n = 0;
	for (size_t i = 0; i < b.n && rc == 0; i++) {
		int32_t c = b.v[i];
		if (c == '\r' && i + 1 < b.n && b.v[i + 1] == '\n')
			continue; /* \r\n -> \n: the \n follows */
		if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85)
			c = '\n';
		rc = cps_push(&a, c);
	}
	for (size_t i = 0; i < a.n && rc == 0; i++) {
		int32_t c = a.v[i];
		if (c == 0x1b && i + 1 < a.n && a.v[i + 1] == '[') {
			size_t k = i + 2;
			while (k < a.n && ((a.v[k] >= '0' && a.v[k] <= '9') || a.v[k] == ';'))
				k++;
			if (k < a.n && a.v[k] < 0x80 && ((a.v[k] | 0x20) >= 'a' && (a.v[k] | 0x20) <= 'z')) {
				i = k;
				continue;
			}
		}
		if (is_control(c))
			continue;
		rc = cps_push(out, c);
	}
	free(a.v);
	free(b.v);
	return rc;
}

static int nfc(cps *b)
{
	size_t len;
	char *s = cps_utf8(b, &len);
	if (!s)
		return -1;
	uint8_t *k = NULL;
	utf8proc_ssize_t n = utf8proc_map((uint8_t *)s, (utf8proc_ssize_t)len, &k, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
	free(s);
	if (n < 0)
		return -1;
	b->n = 0;
	int rc = cps_push_utf8(b, (char *)k, (size_t)n);
	free(k);
	return rc;
}

/* ftfy.fix_and_explain on one segment: the fixes repeated until nothing changes. */
static int fix_segment(cps *seg)
{
	int unescape = 1;
	for (size_t i = 0; i < seg->n; i++)
		if (seg->v[i] == '<')
			unescape = 0;
	cps orig = {0}, t = {0};
	int rc = 0;
	for (int iter = 0; iter < 100 && rc == 0; iter++) {
		orig.n = 0;
		for (size_t i = 0; i < seg->n && rc == 0; i++)
			rc = cps_push(&orig, seg->v[i]);
		if (rc == 0 && unescape && (rc = ftfy_unescape(seg, &t)) == 0)
			cps_swap(seg, &t);
		if (rc == 0 && (rc = ftfy_maps(seg, &t)) == 0)
			cps_swap(seg, &t);
		if (rc == 0)
			rc = nfc(seg);
		if (rc == 0 && cps_eq(seg, &orig))
			break;
	}
	free(orig.v);
	free(t.v);
	return rc;
}

/* ---- case: Python's str.lower() ---- */
static int is_cased(int32_t c)
{
	utf8proc_category_t k = utf8proc_category(c);
	return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT ||
	       utf8proc_tolower(c) != c || utf8proc_toupper(c) != c;
}

static int is_case_ignorable(int32_t c)
{
	utf8proc_category_t k = utf8proc_category(c);
	return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
	       k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK || c == '\'' || c == '.' ||
	       c == ':' || c == '^' || c == '`' || c == 0xb7 || c == 0x387 || c == 0x5f4 ||
	       c == 0x2018 || c == 0x2019 || c == 0x2024 || c == 0xfe13 || c == 0xfe52 ||
	       c == 0xfe55 || c == 0xff07 || c == 0xff0e || c == 0xff1a;
}

static int lower(const cps *in, cps *out)
{
	out->n = 0;
	for (size_t i = 0; i < in->n; i++) {
		int32_t c = in->v[i];
		int rc;
		if (c == 0x130) { /* İ: the one unconditional multi-character lower case */
			rc = cps_push(out, 'i');
			if (rc == 0)
				rc = cps_push(out, 0x307);
		} else if (c == 0x3a3) { /* Σ: final sigma when after a cased letter and not before one */
			size_t j = i;
			while (j > 0 && is_case_ignorable(in->v[j - 1]))
				j--;
			int final = j > 0 && is_cased(in->v[j - 1]);
			if (final) {
				size_t k = i + 1;
				while (k < in->n && is_case_ignorable(in->v[k]))
					k++;
				final = k == in->n || !is_cased(in->v[k]);
			}
			rc = cps_push(out, final ? 0x3c2 : 0x3c3);
		} else {
			rc = cps_push(out, utf8proc_tolower(c));
		}
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* ---- the whole clean-up ---- */
static int clean_cps(const char *text, size_t len, cps *out)
{
	cps all = {0}, seg = {0}, fixed = {0}, t = {0};
	int rc = cps_push_utf8(&all, text, len);
	/* ftfy: segments ending at each "\n" */
	for (size_t i = 0; i < all.n && rc == 0;) {
		size_t j = i;
		while (j < all.n && all.v[j] != '\n')
			j++;
		if (j < all.n)
			j++;
		seg.n = 0;
		for (size_t q = i; q < j && rc == 0; q++)
			rc = cps_push(&seg, all.v[q]);
		if (rc == 0)
			rc = fix_segment(&seg);
		for (size_t q = 0; q < seg.n && rc == 0; q++)
			rc = cps_push(&fixed, seg.v[q]);
		i = j;
	}
	/* html.unescape twice */
	if (rc == 0)
		rc = html_unescape(&fixed, &t);
	if (rc == 0)
		rc = html_unescape(&t, &fixed);
	/* strip, whitespace runs to one space, strip */
	t.n = 0;
	size_t a = 0, b = fixed.n;
	while (a < b && py_isspace(fixed.v[a]))
		a++;
	while (b > a && py_isspace(fixed.v[b - 1]))
		b--;
	int in_run = 0;
	for (size_t i = a; i < b && rc == 0; i++) {
		int sp = py_isspace(fixed.v[i]);
		if (!(sp && in_run))
			rc = cps_push(&t, sp ? ' ' : fixed.v[i]);
		in_run = sp;
	}
	if (rc == 0)
		rc = lower(&t, out);
	free(all.v);
	free(seg.v);
	free(fixed.v);
	free(t.v);
	return rc;
}

char *cmr_clip_clean(const char *text, size_t len)
{
	pthread_once(&width_once, width_init);
	cps out = {0};
	char *s = NULL;
	if (clean_cps(text, len, &out) == 0)
		s = cps_utf8(&out, NULL);
	free(out.v);
	return s;
}

/* ---- hash tables: strings -> id list (word cache, vocabulary); pairs -> merge ---- */
typedef struct {
	char *key; /* NULL: empty slot */
	uint32_t klen;
	int32_t val;  /* vocabulary: id; cache: offset in the id pool */
	int32_t n;    /* cache: number of ids */
} skv;

typedef struct {
	skv *slot;
	size_t cap, used;
} smap;

static skv *smap_find(smap *m, const char *key, size_t klen, int insert)
{
	if (insert && (m->used + 1) * 4 > m->cap * 3) {
		size_t cap = m->cap ? 2 * m->cap : 1024;
		skv *s = calloc(cap, sizeof *s);
		if (!s)
			return NULL;
		for (size_t i = 0; i < m->cap; i++)
			if (m->slot[i].key) {
				size_t h = (size_t)XXH3_64bits(m->slot[i].key, m->slot[i].klen) & (cap - 1);
				while (s[h].key)
					h = (h + 1) & (cap - 1);
				s[h] = m->slot[i];
			}
		free(m->slot);
		m->slot = s;
		m->cap = cap;
	}
	if (!m->cap)
		return NULL;
	size_t h = (size_t)XXH3_64bits(key, klen) & (m->cap - 1);
	while (m->slot[h].key) {
		if (m->slot[h].klen == klen && memcmp(m->slot[h].key, key, klen) == 0)
			return &m->slot[h];
		h = (h + 1) & (m->cap - 1);
	}
	if (!insert)
		return NULL;
	m->slot[h].key = malloc(klen + 1);
	if (!m->slot[h].key)
		return NULL;
	memcpy(m->slot[h].key, key, klen);
	m->slot[h].key[klen] = 0;
	m->slot[h].klen = (uint32_t)klen;
	m->used++;
	return &m->slot[h];
}

static void smap_free(smap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->slot[i].key);
	free(m->slot);
	memset(m, 0, sizeof *m);
}

typedef struct {
	uint64_t key; /* left << 32 | right, plus one: 0 is empty */
	int32_t rank, merged;
} pkv;

struct cmr_clip_tok {
	int32_t byte_id[256], byte_id_w[256]; /* symbol of byte b; of b + "</w>" */
	int32_t sot, eot, nvocab;
	pkv *pairs;
	size_t pcap;
	smap cache;
	int32_t *pool;
	size_t npool, cappool;
};

static pkv *pair_slot(const cmr_clip_tok *t, int32_t a, int32_t b)
{
	uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
	size_t h = (size_t)XXH3_64bits(&key, sizeof key) & (t->pcap - 1);
	while (t->pairs[h].key && t->pairs[h].key != key)
		h = (h + 1) & (t->pcap - 1);
	return &t->pairs[h];
}

static int pair_put(cmr_clip_tok *t, int32_t a, int32_t b, int32_t rank, int32_t merged)
{
	pkv *p = pair_slot(t, a, b);
	p->key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
	p->rank = rank;
	p->merged = merged;
	return 0;
}

static const pkv *pair_get(const cmr_clip_tok *t, int32_t a, int32_t b)
{
	const pkv *p = pair_slot(t, a, b);
	return p->key ? p : NULL;
}

/* bytes_to_unicode(): the code point standing for byte b, and b's rank in that list */
static int32_t byte_chars[256];
static int byte_order[256];
static pthread_once_t bytes_once = PTHREAD_ONCE_INIT;

static int printable_byte(int x)
{
	return (x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff);
}

static void bytes_init(void)
{
	int n = 0, k = 0;
	for (int x = 0; x < 256; x++)
		if (printable_byte(x)) {
			byte_chars[x] = x;
			byte_order[x] = k++;
		}
	for (int x = 0; x < 256; x++)
		if (!printable_byte(x)) {
			byte_chars[x] = 256 + n++;
			byte_order[x] = k++;
		}
}

static int32_t byte_char(int b, int *order)
{
	pthread_once(&bytes_once, bytes_init);
	*order = byte_order[b];
	return byte_chars[b];
}

/* Builds a tokenizer from merges (lines "a b"), taking ids from vocab when given (Hugging
 * Face) or constructing CLIP's vocabulary (bytes, bytes + </w>, merges, special tokens). */
static cmr_clip_tok *build(char **merges, size_t nmerges, smap *vocab, char *err, size_t errlen)
{
	cmr_clip_tok *t = calloc(1, sizeof *t);
	smap own = {0};
	if (!t)
		return NULL;
	smap *v = vocab ? vocab : &own;
	char sym[16];
	for (int b = 0; b < 256; b++) {
		int order;
		int32_t c = byte_char(b, &order);
		size_t n = (size_t)utf8proc_encode_char(c, (uint8_t *)sym);
		memcpy(sym + n, "</w>", 5);
		if (!vocab) {
			skv *e = smap_find(v, sym, n, 1), *ew = e ? (e->val = order, smap_find(v, sym, n + 4, 1)) : NULL;
			if (!ew)
				goto oom;
			ew->val = 256 + order;
		}
		skv *e = smap_find(v, sym, n, 0), *ew = smap_find(v, sym, n + 4, 0);
		if (!e || !ew) {
			fail(err, errlen, "vocabulary lacks the symbol of byte 0x%02x", b);
			goto bad;
		}
		t->byte_id[b] = e->val;
		t->byte_id_w[b] = ew->val;
	}
	if (!vocab) {
		for (size_t r = 0; r < nmerges; r++) {
			char *sp = strchr(merges[r], ' ');
			size_t la = (size_t)(sp - merges[r]);
			char *joined = malloc(strlen(merges[r]));
			if (!joined)
				goto oom;
			memcpy(joined, merges[r], la);
			strcpy(joined + la, sp + 1);
			skv *e = smap_find(v, joined, strlen(joined), 1);
			free(joined);
			if (!e)
				goto oom;
			e->val = 512 + (int32_t)r; /* a later duplicate wins, as in CLIP's dict() */
		}
		/* one at a time: an insertion may grow the table and move every entry */
		skv *s = smap_find(v, "<|startoftext|>", 15, 1);
		if (!s)
			goto oom;
		s->val = 512 + (int32_t)nmerges;
		skv *e = smap_find(v, "<|endoftext|>", 13, 1);
		if (!e)
			goto oom;
		e->val = 513 + (int32_t)nmerges;
	}
	skv *s = smap_find(v, "<|startoftext|>", 15, 0), *e = smap_find(v, "<|endoftext|>", 13, 0);
	if (!s || !e) {
		fail(err, errlen, "vocabulary lacks <|startoftext|> or <|endoftext|>");
		goto bad;
	}
	t->sot = s->val;
	t->eot = e->val;
	/* the ids run to the largest one given: with a duplicate merge, the later one wins (as
	 * in CLIP's dict()), so there are fewer distinct entries than ids */
	t->nvocab = 0;
	for (size_t i = 0; i < v->cap; i++)
		if (v->slot[i].key && v->slot[i].val >= t->nvocab)
			t->nvocab = v->slot[i].val + 1;
	t->pcap = 1;
	while (t->pcap < nmerges * 2 + 16)
		t->pcap *= 2;
	t->pairs = calloc(t->pcap, sizeof *t->pairs);
	if (!t->pairs)
		goto oom;
	for (size_t r = 0; r < nmerges; r++) {
		char *sp = strchr(merges[r], ' ');
		size_t la = (size_t)(sp - merges[r]), lb = strlen(sp + 1);
		skv *a = smap_find(v, merges[r], la, 0), *b = smap_find(v, sp + 1, lb, 0);
		char *joined = malloc(la + lb + 1);
		if (!joined)
			goto oom;
		memcpy(joined, merges[r], la);
		memcpy(joined + la, sp + 1, lb + 1);
		skv *m = smap_find(v, joined, la + lb, 0);
		free(joined);
		if (!a || !b || !m) {
			fail(err, errlen, "merge %zu ('%s') uses a symbol that is not in the vocabulary", r + 1, merges[r]);
			goto bad;
		}
		pair_put(t, a->val, b->val, (int32_t)r, m->val); /* a later duplicate wins */
	}
	smap_free(&own);
	return t;
oom:
	fail(err, errlen, "out of memory");
bad:
	smap_free(&own);
	cmr_clip_tok_free(t);
	return NULL;
}

/* Splits text into lines; keeps lines[first .. first+count) that are "a b" merges. */
static char **merge_lines(char *text, size_t first, size_t max, size_t *n, char *err, size_t errlen)
{
	char **lines = NULL;
	size_t cap = 0, line = 0;
	*n = 0;
	for (char *p = text; p && *p; line++) {
		char *nl = strchr(p, '\n');
		if (nl)
			*nl = 0;
		if (line >= first && *n < max) {
			char *sp = strchr(p, ' ');
			if (!sp || sp == p || !sp[1] || strchr(sp + 1, ' ')) {
				fail(err, errlen, "line %zu is not a merge 'a b'", line + 1);
				free(lines);
				return NULL;
			}
			if (*n == cap) {
				cap = cap ? 2 * cap : 65536;
				char **q = realloc(lines, cap * sizeof *q);
				if (!q) {
					free(lines);
					return NULL;
				}
				lines = q;
			}
			lines[(*n)++] = p;
		}
		p = nl ? nl + 1 : NULL;
	}
	return lines;
}

/* Reads a whole file or memory buffer, gunzipped if it is gzip (libarchive's raw reader). */
static char *slurp(const char *path, const void *mem, size_t memlen, size_t *len, char *err, size_t errlen)
{
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	int rc = path ? archive_read_open_filename(a, path, 1 << 16) : archive_read_open_memory(a, mem, memlen);
	struct archive_entry *e;
	if (rc != ARCHIVE_OK || archive_read_next_header(a, &e) != ARCHIVE_OK) {
		fail(err, errlen, "%s", archive_error_string(a) ? archive_error_string(a) : "cannot read");
		archive_read_free(a);
		return NULL;
	}
	size_t cap = 1 << 20, n = 0;
	char *buf = malloc(cap + 1);
	la_ssize_t got;
	while (buf && (got = archive_read_data(a, buf + n, cap - n)) > 0) {
		n += (size_t)got;
		if (n == cap) {
			cap *= 2;
			char *p = realloc(buf, cap + 1);
			if (!p) {
				free(buf);
				buf = NULL;
			}
			buf = p;
		}
	}
	if (buf && got < 0) {
		fail(err, errlen, "%s", archive_error_string(a));
		free(buf);
		buf = NULL;
	} else if (!buf) {
		fail(err, errlen, "out of memory");
	}
	archive_read_free(a);
	if (buf) {
		buf[n] = 0;
		*len = n;
	}
	return buf;
}

static cmr_clip_tok *from_merges_text(char *text, char *err, size_t errlen)
{
	/* CLIP: merges = lines[1 : 49152 - 256 - 2 + 1] */
	size_t n;
	char **lines = merge_lines(text, 1, 49152 - 256 - 2, &n, err, errlen);
	if (!lines)
		return NULL;
	cmr_clip_tok *t = build(lines, n, NULL, err, errlen);
	free(lines);
	return t;
}

cmr_clip_tok *cmr_clip_tok_new(char *err, size_t errlen)
{
	size_t len;
	char *text = slurp(NULL, cmr_clip_vocab_gz, (size_t)(cmr_clip_vocab_gz_end - cmr_clip_vocab_gz),
			   &len, err, errlen);
	if (!text)
		return NULL;
	cmr_clip_tok *t = from_merges_text(text, err, errlen);
	free(text);
	return t;
}

cmr_clip_tok *cmr_clip_tok_from_merges(const char *path, char *err, size_t errlen)
{
	size_t len;
	char *text = slurp(path, NULL, 0, &len, err, errlen);
	if (!text)
		return NULL;
	cmr_clip_tok *t = from_merges_text(text, err, errlen);
	free(text);
	return t;
}

cmr_clip_tok *cmr_clip_tok_from_hf(const char *vocab_json, const char *merges_txt, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j = json_load_file(vocab_json, 0, &jerr);
	if (!j || !json_is_object(j)) {
		fail(err, errlen, "%s: %s", vocab_json, j ? "not a JSON object" : jerr.text);
		json_decref(j);
		return NULL;
	}
	smap vocab = {0};
	const char *k;
	json_t *val;
	json_object_foreach(j, k, val) {
		if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= (1 << 24)) {
			fail(err, errlen, "%s: the value of \"%s\" is not an integer id (0 to 2^24 - 1)", vocab_json, k);
			json_decref(j);
			smap_free(&vocab);
			return NULL;
		}
		skv *e = smap_find(&vocab, k, strlen(k), 1);
		if (!e) {
			json_decref(j);
			smap_free(&vocab);
			return NULL;
		}
		e->val = (int32_t)json_integer_value(val);
	}
	json_decref(j);
	size_t len, n;
	char *text = slurp(merges_txt, NULL, 0, &len, err, errlen);
	cmr_clip_tok *t = NULL;
	if (text) {
		size_t first = strncmp(text, "#version", 8) == 0 ? 1 : 0;
		/* a trailing empty line is not a merge */
		while (len && text[len - 1] == '\n')
			text[--len] = 0;
		char **lines = merge_lines(text, first, (size_t)-1, &n, err, errlen);
		if (lines)
			t = build(lines, n, &vocab, err, errlen);
		free(lines);
		free(text);
	}
	smap_free(&vocab);
	return t;
}

void cmr_clip_tok_free(cmr_clip_tok *t)
{
	if (!t)
		return;
	free(t->pairs);
	smap_free(&t->cache);
	free(t->pool);
	free(t);
}

int32_t cmr_clip_tok_sot(const cmr_clip_tok *t) { return t->sot; }
int32_t cmr_clip_tok_eot(const cmr_clip_tok *t) { return t->eot; }
int32_t cmr_clip_tok_vocab_size(const cmr_clip_tok *t) { return t->nvocab; }

/* ---- BPE ---- */
static int push_id(int32_t **ids, size_t *n, size_t *cap, int32_t id)
{
	if (*n == *cap) {
		size_t c = *cap ? 2 * *cap : 128;
		int32_t *p = realloc(*ids, c * sizeof *p);
		if (!p)
			return -1;
		*ids = p;
		*cap = c;
	}
	(*ids)[(*n)++] = id;
	return 0;
}

/* BPE of one pre-token (UTF-8 bytes), as CLIP's bpe(): repeatedly merge every occurrence of
 * the adjacent pair of lowest rank. Appends the ids. */
static int bpe_word(cmr_clip_tok *t, const uint8_t *s, size_t len, int32_t **ids, size_t *n, size_t *cap)
{
	skv *c = smap_find(&t->cache, (const char *)s, len, 0);
	if (c) {
		for (int32_t i = 0; i < c->n; i++)
			if (push_id(ids, n, cap, t->pool[c->val + i]) < 0)
				return -1;
		return 0;
	}
	int32_t *w = malloc(len * sizeof *w);
	if (!w)
		return -1;
	size_t m = len;
	for (size_t i = 0; i < len; i++)
		w[i] = i + 1 < len ? t->byte_id[s[i]] : t->byte_id_w[s[i]];
	while (m > 1) {
		int32_t best = INT32_MAX, first = 0, second = 0, merged = 0;
		for (size_t i = 0; i + 1 < m; i++) {
			const pkv *p = pair_get(t, w[i], w[i + 1]);
			if (p && p->rank < best) {
				best = p->rank;
				first = w[i];
				second = w[i + 1];
				merged = p->merged;
			}
		}
		if (best == INT32_MAX)
			break;
		size_t o = 0;
		for (size_t i = 0; i < m;) {
			if (w[i] == first && i + 1 < m && w[i + 1] == second) {
				w[o++] = merged;
				i += 2;
			} else {
				w[o++] = w[i++];
			}
		}
		m = o;
	}
	/* cache it (bounded: cleared when large) */
	if (t->cache.used > (1u << 20)) {
		smap_free(&t->cache);
		t->npool = 0;
	}
	int rc = 0;
	skv *e = smap_find(&t->cache, (const char *)s, len, 1);
	if (e) {
		e->val = (int32_t)t->npool;
		e->n = (int32_t)m;
		for (size_t i = 0; i < m && rc == 0; i++)
			rc = push_id(&t->pool, &t->npool, &t->cappool, w[i]);
	}
	for (size_t i = 0; i < m && rc == 0; i++)
		rc = push_id(ids, n, cap, w[i]);
	free(w);
	return rc;
}

static int starts_with(const cps *b, size_t i, const char *lit)
{
	for (size_t k = 0; lit[k]; k++)
		if (i + k >= b->n || b->v[i + k] != lit[k])
			return 0;
	return 1;
}

int cmr_clip_encode(cmr_clip_tok *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap)
{
	pthread_once(&width_once, width_init);
	cps c = {0};
	int rc = clean_cps(text, len, &c);
	uint8_t *buf = malloc(c.n * 4 + 1);
	if (!buf)
		rc = -1;
	/* <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+ */
	for (size_t i = 0; i < c.n && rc == 0;) {
		int32_t ch = c.v[i];
		size_t end;
		if (starts_with(&c, i, "<|startoftext|>")) {
			rc = push_id(ids, n, cap, t->sot);
			i += 15;
			continue;
		}
		if (starts_with(&c, i, "<|endoftext|>")) {
			rc = push_id(ids, n, cap, t->eot);
			i += 13;
			continue;
		}
		if (ch == '\'' && i + 1 < c.n) {
			int32_t a = c.v[i + 1] == 0x17f ? 's' : c.v[i + 1]; /* ſ folds to s */
			int32_t b = i + 2 < c.n ? c.v[i + 2] : 0;
			if (a == 's' || a == 't' || a == 'm' || a == 'd')
				end = i + 2;
			else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
				end = i + 3;
			else
				end = 0;
			if (end)
				goto piece;
		}
		if (is_letter(ch)) {
			end = i + 1;
			while (end < c.n && is_letter(c.v[end]))
				end++;
		} else if (is_number(ch)) {
			end = i + 1;
		} else if (!py_isspace(ch)) {
			end = i + 1;
			while (end < c.n && !py_isspace(c.v[end]) && !is_letter(c.v[end]) && !is_number(c.v[end]))
				end++;
		} else {
			i++;
			continue;
		}
	piece:;
		size_t bl = 0;
		for (size_t q = i; q < end; q++)
			bl += (size_t)utf8proc_encode_char(c.v[q], buf + bl);
		rc = bpe_word(t, buf, bl, ids, n, cap);
		i = end;
	}
	free(buf);
	free(c.v);
	return rc;
}

int cmr_clip_tokenize(cmr_clip_tok *t, const char *text, size_t len, int ctx, int32_t *out, int *truncated)
{
	int32_t *ids = NULL;
	size_t n = 0, cap = 0;
	if (ctx < 2 || cmr_clip_encode(t, text, len, &ids, &n, &cap) < 0) {
		free(ids);
		return -1;
	}
	size_t keep = n + 2 > (size_t)ctx ? (size_t)ctx - 2 : n;
	out[0] = t->sot;
	if (keep)
		memcpy(out + 1, ids, keep * sizeof *ids);
	out[keep + 1] = t->eot;
	if (truncated)
		*truncated = keep < n;
	free(ids);
	return (int)keep + 2;
}
