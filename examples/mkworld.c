/* mkworld.c - synthetic image-text databases described by a JSON world file (examples/worlds/
 * README.md): scenes of one to a few objects (shape, colour, size, texture, place) on a
 * background, rendered with the world's style (noise, blur, lighting); captions from a small
 * grammar with the world's words and synonyms, relations and counts; three descriptions per
 * image (global, background, entities; with some noise, as a multimodal model would write
 * them) and a class label. Written as a webdataset tar with libarchive and lib/image.c's JPEG
 * encoder: KEY.jpg, KEY.txt (a caption per line), KEY.desc (the three descriptions), KEY.cls
 * (the class index). From the world's seed: the same bytes on every machine.
 *
 *   mkworld [--split train|test] [-n N] [--prefix P] WORLD.json > shard.tar
 *
 * Test splits hold N different scenes, so that a caption names one image of the set. */
#include <archive.h>
#include <archive_entry.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "image.h"
#include "wds.h"

/* ---- the world ---- */
#define MAXC 32 /* entries of each list */
#define MAXW 8  /* words of an entry */

typedef struct {
	char name[32];
	const char *word[MAXW];   /* synonyms; "" allowed (e.g. a plain texture) */
	const char *plural[MAXW]; /* shapes: parallel plural forms */
	int nword;
	int kind;                 /* shapes, textures, backgrounds: the renderer's pattern */
	int rgb[3];               /* colours, backgrounds */
	double scale;             /* sizes: radius as a fraction of the image */
	int noise;                /* backgrounds */
} entry;

typedef struct {
	entry e[MAXC];
	int n;
} list;

static struct {
	const char *path;
	json_t *root;
	int size, captions, omin, omax, ntrain, ntest, blur, noise, label_colour;
	double light[2], p_rel, p_count, p_desc;
	unsigned long long seed;
	list shapes, colours, sizes, textures, backgrounds;
	const char *place[9][MAXW];
	int nplace[9];
	const char *rel[4][MAXW]; /* left of, right of, above, below */
	int nrel[4];
	const char *number[4][MAXW]; /* two, three, ... (index 0 = two) */
	int nnumber[4];
} W;

static const char *shape_kinds[] = {"circle", "square", "triangle", "cross", "diamond", "ring"};
static const char *texture_kinds[] = {"plain", "stripes", "dots", "checks"};
static const char *bg_kinds[] = {"flat", "gradient", "stripes", "speckle"};
static const char *cell_names[9] = {"top left", "top", "top right", "left", "centre", "right",
				    "bottom left", "bottom", "bottom right"};
static const char *rel_names[4] = {"left of", "right of", "above", "below"};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "mkworld: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static int get_int(json_t *o, const char *k, int dflt, int lo, int hi, const char *where)
{
	json_t *v = json_object_get(o, k);
	if (!v)
		return dflt;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		die("%s: %s%s: give an integer in %d..%d", W.path, where, k, lo, hi);
	return (int)json_integer_value(v);
}

static double get_num(json_t *o, const char *k, double dflt, double lo, double hi, const char *where)
{
	json_t *v = json_object_get(o, k);
	if (!v)
		return dflt;
	if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi)
		die("%s: %s%s: give a number in %g..%g", W.path, where, k, lo, hi);
	return json_number_value(v);
}

/* a list of words: a string or an array of strings */
static int get_words(json_t *v, const char **out, const char *where)
{
	if (json_is_string(v)) {
		out[0] = json_string_value(v);
		return 1;
	}
	if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > MAXW)
		die("%s: %s: give a word or an array of 1..%d words", W.path, where, MAXW);
	for (size_t i = 0; i < json_array_size(v); i++) {
		json_t *s = json_array_get(v, i);
		if (!json_is_string(s) || strlen(json_string_value(s)) > 40)
			die("%s: %s[%zu]: not a word (a string of at most 40 bytes)", W.path, where, i);
		out[i] = json_string_value(s);
	}
	return (int)json_array_size(v);
}

static int kind_of(const char *s, const char **kinds, int n, const char *where)
{
	for (int i = 0; i < n; i++)
		if (strcmp(s, kinds[i]) == 0)
			return i;
	char all[256] = "";
	for (int i = 0; i < n; i++)
		snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s", i ? ", " : "", kinds[i]);
	die("%s: %s: '%s' is not one of %s", W.path, where, s, all);
}

static void get_rgb(json_t *v, int *rgb, const char *where)
{
	if (!json_is_array(v) || json_array_size(v) != 3)
		die("%s: %s.rgb: give [r, g, b], each 0..255", W.path, where);
	for (int c = 0; c < 3; c++) {
		json_t *x = json_array_get(v, (size_t)c);
		if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > 255)
			die("%s: %s.rgb[%d]: give an integer in 0..255", W.path, where, c);
		rgb[c] = (int)json_integer_value(x);
	}
}

enum { L_SHAPES, L_COLOURS, L_SIZES, L_TEXTURES, L_BACKGROUNDS };

static void get_list(json_t *root, const char *key, list *l, int what)
{
	json_t *a = json_object_get(root, key);
	if (!json_is_array(a) || json_array_size(a) < 1 || json_array_size(a) > MAXC)
		die("%s: %s: give an array of 1..%d entries", W.path, key, MAXC);
	l->n = (int)json_array_size(a);
	for (int i = 0; i < l->n; i++) {
		json_t *o = json_array_get(a, (size_t)i);
		entry *e = &l->e[i];
		char where[64];
		snprintf(where, sizeof where, "%s[%d]", key, i);
		json_t *nm = json_object_get(o, "name");
		if (!json_is_object(o) || !json_is_string(nm) || strlen(json_string_value(nm)) >= sizeof e->name)
			die("%s: %s: give an object with a \"name\" (under 32 bytes)", W.path, where);
		snprintf(e->name, sizeof e->name, "%s", json_string_value(nm));
		char w[80];
		snprintf(w, sizeof w, "%s.words", where);
		json_t *words = json_object_get(o, "words");
		if (words)
			e->nword = get_words(words, e->word, w);
		else
			e->word[0] = json_string_value(nm), e->nword = 1;
		if (what == L_SHAPES) {
			json_t *pl = json_object_get(o, "plural");
			snprintf(w, sizeof w, "%s.plural", where);
			if (pl && get_words(pl, e->plural, w) != e->nword)
				die("%s: %s: give one plural per word", W.path, w);
			json_t *k = json_object_get(o, "kind");
			snprintf(w, sizeof w, "%s.kind", where);
			e->kind = kind_of(json_is_string(k) ? json_string_value(k) : e->name, shape_kinds, 6, w);
		} else if (what == L_TEXTURES || what == L_BACKGROUNDS) {
			json_t *k = json_object_get(o, what == L_TEXTURES ? "kind" : "pattern");
			snprintf(w, sizeof w, "%s.%s", where, what == L_TEXTURES ? "kind" : "pattern");
			e->kind = what == L_TEXTURES ? kind_of(json_is_string(k) ? json_string_value(k) : e->name, texture_kinds, 4, w)
						     : kind_of(json_is_string(k) ? json_string_value(k) : "flat", bg_kinds, 4, w);
		}
		if (what == L_COLOURS || what == L_BACKGROUNDS)
			get_rgb(json_object_get(o, "rgb"), e->rgb, where);
		if (what == L_SIZES) {
			snprintf(w, sizeof w, "%s.", where);
			e->scale = get_num(o, "scale", 0, 0.04, 0.3, w);
			if (e->scale == 0)
				die("%s: %s.scale: give the radius as a fraction of the image (0.04..0.3)", W.path, where);
		}
		if (what == L_BACKGROUNDS) {
			snprintf(w, sizeof w, "%s.", where);
			e->noise = get_int(o, "noise", 10, 0, 100, w);
		}
	}
}

static void get_phrases(json_t *o, const char *key, const char **names, const char **dflt, int n,
			const char *(*out)[MAXW], int *cnt)
{
	json_t *p = json_object_get(o, key);
	if (p && !json_is_object(p))
		die("%s: %s: give an object of word lists", W.path, key);
	for (int i = 0; i < n; i++) {
		json_t *v = p ? json_object_get(p, names[i]) : NULL;
		char where[64];
		snprintf(where, sizeof where, "%s.%s", key, names[i]);
		if (v)
			cnt[i] = get_words(v, out[i], where);
		else
			out[i][0] = dflt[i], cnt[i] = 1;
	}
}

static void load_world(const char *path)
{
	json_error_t err;
	W.path = path;
	W.root = json_load_file(path, 0, &err);
	if (!W.root)
		die("%s:%d: %s", path, err.line, err.text);
	json_t *r = W.root;
	if (!json_is_object(r))
		die("%s: a world is a JSON object", path);
	static const char *known[] = {"name", "seed", "image_size", "captions", "objects", "pairs", "shapes", "colours",
				      "sizes", "textures", "backgrounds", "style", "places", "relations", "numbers",
				      "p_relation", "p_count", "p_description_noise", "label", "comment"};
	const char *k;
	json_t *v;
	json_object_foreach(r, k, v) {
		size_t i = 0;
		while (i < sizeof known / sizeof *known && strcmp(k, known[i]))
			i++;
		if (i == sizeof known / sizeof *known)
			die("%s: unknown field \"%s\" (see examples/worlds/README.md)", path, k);
	}
	json_t *seed = json_object_get(r, "seed");
	if (seed && !json_is_integer(seed))
		die("%s: seed: give an integer", path);
	W.seed = seed ? (unsigned long long)json_integer_value(seed) : 1;
	W.size = get_int(r, "image_size", 64, 32, 512, "");
	W.captions = get_int(r, "captions", 3, 1, 10, "");
	json_t *ob = json_object_get(r, "objects"), *pr = json_object_get(r, "pairs"), *st = json_object_get(r, "style");
	if ((ob && !json_is_object(ob)) || (pr && !json_is_object(pr)) || (st && !json_is_object(st)))
		die("%s: objects, pairs and style are objects", path);
	W.omin = get_int(ob, "min", 1, 1, 9, "objects.");
	W.omax = get_int(ob, "max", 1, W.omin, 9, "objects.");
	W.ntrain = get_int(pr, "train", 1000, 1, 10000000, "pairs.");
	W.ntest = get_int(pr, "test", 100, 1, 10000000, "pairs.");
	W.blur = get_int(st, "blur", 0, 0, 8, "style.");
	W.noise = get_int(st, "noise", 0, 0, 100, "style.");
	json_t *li = json_object_get(st, "light");
	W.light[0] = W.light[1] = 1;
	if (li && (!json_is_array(li) || json_array_size(li) != 2 || !json_is_number(json_array_get(li, 0)) ||
		   !json_is_number(json_array_get(li, 1))))
		die("%s: style.light: give [lowest, highest] brightness factors", path);
	if (li) {
		W.light[0] = json_number_value(json_array_get(li, 0));
		W.light[1] = json_number_value(json_array_get(li, 1));
		if (W.light[0] < 0.2 || W.light[1] > 3 || W.light[0] > W.light[1])
			die("%s: style.light: give 0.2 <= lowest <= highest <= 3", path);
	}
	W.p_rel = get_num(r, "p_relation", 0.3, 0, 1, "");
	W.p_count = get_num(r, "p_count", 0.3, 0, 1, "");
	W.p_desc = get_num(r, "p_description_noise", 0.1, 0, 1, "");
	json_t *lab = json_object_get(r, "label");
	if (lab && (!json_is_string(lab) || (strcmp(json_string_value(lab), "shape") && strcmp(json_string_value(lab), "colour"))))
		die("%s: label: \"shape\" or \"colour\"", path);
	W.label_colour = lab && strcmp(json_string_value(lab), "colour") == 0;
	get_list(r, "shapes", &W.shapes, L_SHAPES);
	get_list(r, "colours", &W.colours, L_COLOURS);
	get_list(r, "sizes", &W.sizes, L_SIZES);
	get_list(r, "textures", &W.textures, L_TEXTURES);
	get_list(r, "backgrounds", &W.backgrounds, L_BACKGROUNDS);
	static const char *at[9] = {"at the top left", "at the top", "at the top right", "on the left", "in the centre",
				    "on the right", "at the bottom left", "at the bottom", "at the bottom right"};
	get_phrases(r, "places", cell_names, at, 9, W.place, W.nplace);
	get_phrases(r, "relations", rel_names, rel_names, 4, W.rel, W.nrel);
	static const char *nums[4] = {"two", "three", "four", "five"};
	get_phrases(r, "numbers", nums, nums, 4, W.number, W.nnumber);
	/* a word names one thing of its list, so that different scenes get different captions */
	list *ls[5] = {&W.shapes, &W.colours, &W.sizes, &W.textures, &W.backgrounds};
	static const char *lnames[5] = {"shapes", "colours", "sizes", "textures", "backgrounds"};
	for (int l = 0; l < 5; l++)
		for (int a = 0; a < ls[l]->n; a++)
			for (int b = a + 1; b < ls[l]->n; b++)
				for (int x = 0; x < ls[l]->e[a].nword; x++)
					for (int y = 0; y < ls[l]->e[b].nword; y++)
						if (strcmp(ls[l]->e[a].word[x], ls[l]->e[b].word[y]) == 0)
							die("%s: %s: '%s' is a word of both %s and %s", path, lnames[l],
							    ls[l]->e[a].word[x], ls[l]->e[a].name, ls[l]->e[b].name);
}

/* ---- randomness: one PCG32 stream per image ---- */
static unsigned long long rs;
static unsigned rnd(void)
{
	unsigned long long old = rs;
	rs = old * 6364136223846793005ULL + 1442695040888963407ULL;
	unsigned x = (unsigned)(((old >> 18) ^ old) >> 27), r = (unsigned)(old >> 59);
	return x >> r | x << ((32 - r) & 31);
}
static int uni(int n) { return (int)(rnd() % (unsigned)n); }
static double unif(void) { return (rnd() >> 8) / 16777216.0; }
static const char *pick(const char *const *w, int n) { return w[uni(n)]; }

/* ---- a scene ---- */
typedef struct {
	int shape, colour, size, texture, cell;
} object;

typedef struct {
	object o[9];
	int n, bg;
	double light;
} scene;

static void draw_scene(scene *s)
{
	s->n = W.omin + uni(W.omax - W.omin + 1);
	int cells[9];
	for (int i = 0; i < 9; i++)
		cells[i] = i;
	for (int i = 8; i > 0; i--) {
		int j = uni(i + 1), t = cells[i];
		cells[i] = cells[j];
		cells[j] = t;
	}
	for (int i = 0; i < s->n; i++) {
		object *o = &s->o[i];
		o->shape = uni(W.shapes.n);
		o->colour = uni(W.colours.n);
		o->size = uni(W.sizes.n);
		o->texture = uni(W.textures.n);
		o->cell = cells[i];
	}
	/* a repeated object now and then, so that counts have something to count */
	if (s->n >= 2 && unif() < W.p_count)
		for (int i = 1; i < s->n; i++)
			if (unif() < 0.7)
				s->o[i].shape = s->o[0].shape, s->o[i].colour = s->o[0].colour;
	s->bg = uni(W.backgrounds.n);
	s->light = W.light[0] + (W.light[1] - W.light[0]) * unif();
}

/* the scene's identity, for distinct test scenes: objects by cell, background */
static void signature(const scene *s, char *buf, size_t cap)
{
	int at[9];
	for (int c = 0; c < 9; c++)
		at[c] = -1;
	for (int i = 0; i < s->n; i++)
		at[s->o[i].cell] = i;
	size_t n = (size_t)snprintf(buf, cap, "%d", s->bg);
	for (int c = 0; c < 9 && n < cap; c++)
		if (at[c] >= 0) {
			const object *o = &s->o[at[c]];
			n += (size_t)snprintf(buf + n, cap - n, "|%d:%d,%d,%d,%d", c, o->shape, o->colour, o->size, o->texture);
		}
}

/* ---- rendering ---- */
static int inside(int kind, int x, int y, int cx, int cy, int r)
{
	int dx = x - cx, dy = y - cy, ax = dx < 0 ? -dx : dx, ay = dy < 0 ? -dy : dy;
	switch (kind) {
	case 0: return dx * dx + dy * dy <= r * r;
	case 1: return ax <= r * 4 / 5 && ay <= r * 4 / 5;
	case 2: return dy <= r * 4 / 5 && dy >= -r && 2 * ax <= dy + r;
	case 3: return (ax <= r / 3 && ay <= r) || (ay <= r / 3 && ax <= r);
	case 4: return ax + ay <= r;
	default: return dx * dx + dy * dy <= r * r && dx * dx + dy * dy >= r * r / 3;
	}
}

static int clamp(int v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

static void render(const scene *s, unsigned char *px)
{
	int S = W.size;
	const entry *bg = &W.backgrounds.e[s->bg];
	for (int y = 0; y < S; y++)
		for (int x = 0; x < S; x++) {
			int d = 0;
			switch (bg->kind) {
			case 1: d = (y * 60) / S - 30; break;                /* gradient */
			case 2: d = ((x + y) / (S / 8 + 1)) % 2 ? 25 : -25; break; /* stripes */
			case 3: d = uni(40) == 0 ? 90 : 0; break;            /* speckle */
			}
			for (int c = 0; c < 3; c++)
				px[((size_t)y * S + x) * 3 + c] =
					(unsigned char)clamp(bg->rgb[c] + d + (bg->noise ? uni(2 * bg->noise + 1) - bg->noise : 0));
		}
	for (int i = 0; i < s->n; i++) {
		const object *o = &s->o[i];
		int r = (int)(W.sizes.e[o->size].scale * S + 0.5), j = S / 24 + 1;
		int cx = (o->cell % 3) * S / 3 + S / 6 + uni(2 * j + 1) - j, cy = (o->cell / 3) * S / 3 + S / 6 + uni(2 * j + 1) - j;
		int col[3];
		for (int c = 0; c < 3; c++)
			col[c] = W.colours.e[o->colour].rgb[c] + uni(31) - 15;
		int tk = W.textures.e[o->texture].kind, p = S / 16 + 2;
		for (int y = cy - r; y <= cy + r; y++)
			for (int x = cx - r; x <= cx + r; x++) {
				if (x < 0 || y < 0 || x >= S || y >= S || !inside(W.shapes.e[o->shape].kind, x, y, cx, cy, r))
					continue;
				int d = 0;
				if (tk == 1)
					d = (y / (p / 2 + 1)) % 2 ? -70 : 0;
				else if (tk == 2)
					d = (x % p < p / 3 && y % p < p / 3) ? 80 : 0;
				else if (tk == 3)
					d = ((x / p) + (y / p)) % 2 ? -60 : 0;
				for (int c = 0; c < 3; c++)
					px[((size_t)y * S + x) * 3 + c] = (unsigned char)clamp(col[c] + d + uni(11) - 5);
			}
	}
	/* the style: box blur, lighting, sensor noise */
	if (W.blur) {
		unsigned char *t = malloc((size_t)S * S * 3);
		for (int pass = 0; pass < 2; pass++) {
			for (int y = 0; y < S; y++)
				for (int x = 0; x < S; x++)
					for (int c = 0; c < 3; c++) {
						int sum = 0, n = 0;
						for (int k = -W.blur; k <= W.blur; k++) {
							int xx = pass ? x : x + k, yy = pass ? y + k : y;
							if (xx >= 0 && yy >= 0 && xx < S && yy < S)
								sum += px[((size_t)yy * S + xx) * 3 + c], n++;
						}
						t[((size_t)y * S + x) * 3 + c] = (unsigned char)(sum / n);
					}
			memcpy(px, t, (size_t)S * S * 3);
		}
		free(t);
	}
	for (size_t i = 0; i < (size_t)S * S * 3; i++)
		px[i] = (unsigned char)clamp((int)(px[i] * s->light + 0.5) + (W.noise ? uni(2 * W.noise + 1) - W.noise : 0));
}

/* ---- language ---- */
typedef struct {
	char *p;
	size_t n, cap;
} text;

static void say(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(text *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(t->p + t->n, t->cap - t->n, fmt, ap);
	va_end(ap);
	if (n > 0)
		t->n = t->n + (size_t)n < t->cap ? t->n + (size_t)n : t->cap - 1;
}

/* "small striped red circle" with a synonym for each word (textures may say nothing) */
static void noun_phrase(text *t, const object *o, int with_size)
{
	const entry *sh = &W.shapes.e[o->shape], *co = &W.colours.e[o->colour], *sz = &W.sizes.e[o->size];
	const entry *tx = &W.textures.e[o->texture];
	if (with_size)
		say(t, "%s ", pick(sz->word, sz->nword));
	const char *tw = pick(tx->word, tx->nword);
	if (*tw)
		say(t, "%s ", tw);
	say(t, "%s %s", pick(co->word, co->nword), pick(sh->word, sh->nword));
}

static const char *article(const text *t, size_t from) /* "a" or "an" for what follows */
{
	char c = t->p[from];
	return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u' ? "an" : "a";
}

/* a background with its article: "a grey background" */
static void bg_phrase(text *t, const entry *bg)
{
	text w = {(char[128]){0}, 0, 128};
	say(&w, "%s", pick(bg->word, bg->nword));
	say(t, "%s %s", article(&w, 0), w.p);
}

/* an object with its article: "a small red circle" */
static void object_phrase(text *t, const object *o)
{
	text w = {(char[256]){0}, 0, 256};
	noun_phrase(&w, o, 1);
	say(t, "%s %s", article(&w, 0), w.p);
}

static void place_phrase(text *t, int cell)
{
	say(t, "%s", pick(W.place[cell], W.nplace[cell]));
}

/* the relation of a to b that holds: 0 left of, 1 right of, 2 above, 3 below */
static int relation(const object *a, const object *b)
{
	int ca = a->cell % 3, cb = b->cell % 3;
	if (ca != cb)
		return ca < cb ? 0 : 1;
	return a->cell / 3 < b->cell / 3 ? 2 : 3;
}

/* every object with its place, then the background: what tells one test scene from another */
static void full_caption(text *t, const scene *s)
{
	const entry *bg = &W.backgrounds.e[s->bg];
	for (int i = 0; i < s->n; i++) {
		if (i)
			say(t, i == s->n - 1 ? " and " : ", ");
		object_phrase(t, &s->o[i]), say(t, " "), place_phrase(t, s->o[i].cell);
	}
	say(t, " on "), bg_phrase(t, bg);
}

static void caption(text *t, const scene *s, int k)
{
	const entry *bg = &W.backgrounds.e[s->bg];
	if (s->n == 1) {
		const object *o = &s->o[0];
		switch ((k + uni(3)) % 3) {
		case 0: object_phrase(t, o), say(t, " "), place_phrase(t, o->cell); break;
		case 1: object_phrase(t, o), say(t, " on "), bg_phrase(t, bg); break;
		default: say(t, "there is "), object_phrase(t, o), say(t, " "), place_phrase(t, o->cell); break;
		}
		return;
	}
	/* a group of the same shape and colour: counted */
	int same = 1;
	for (int i = 1; i < s->n; i++)
		same += s->o[i].shape == s->o[0].shape && s->o[i].colour == s->o[0].colour;
	if (same >= 2 && same <= 5 && unif() < W.p_count * 2) {
		const entry *sh = &W.shapes.e[s->o[0].shape], *co = &W.colours.e[s->o[0].colour];
		int w = uni(sh->nword);
		const char *pl = sh->plural[0] ? sh->plural[w] : NULL;
		char buf[64];
		if (!pl) {
			const char *x = sh->word[w];
			size_t l = strlen(x);
			int es = l && (x[l - 1] == 's' || x[l - 1] == 'x' || (l > 1 && x[l - 1] == 'h' && (x[l - 2] == 's' || x[l - 2] == 'c')));
			snprintf(buf, sizeof buf, "%s%s", x, es ? "es" : "s");
			pl = buf;
		}
		say(t, "%s %s %s", pick(W.number[same - 2], W.nnumber[same - 2]), pick(co->word, co->nword), pl);
		for (int i = 1; i < s->n; i++)
			if (s->o[i].shape != s->o[0].shape || s->o[i].colour != s->o[0].colour) {
				say(t, " and "), object_phrase(t, &s->o[i]);
				break;
			}
		say(t, " on "), bg_phrase(t, bg);
		return;
	}
	if (unif() < W.p_rel) {
		int r = relation(&s->o[0], &s->o[1]);
		object_phrase(t, &s->o[0]);
		say(t, " %s ", pick(W.rel[r], W.nrel[r]));
		object_phrase(t, &s->o[1]);
		return;
	}
	for (int i = 0; i < s->n; i++) {
		if (i)
			say(t, i == s->n - 1 ? " and " : ", ");
		object_phrase(t, &s->o[i]), say(t, " "), place_phrase(t, s->o[i].cell);
	}
}

/* three descriptions: the whole, the background and style, the entities (with noise: an
 * attribute swapped or an object left out, as a multimodal model's description can be) */
static void descriptions(text *t, const scene *s)
{
	const entry *bg = &W.backgrounds.e[s->bg];
	static const char *counts[] = {"one object", "two objects", "three objects", "four objects", "five objects",
				       "six objects", "seven objects", "eight objects", "nine objects"};
	say(t, "a picture of %s on ", counts[s->n - 1]), bg_phrase(t, bg), say(t, "\n");
	say(t, "behind them "), bg_phrase(t, bg);
	say(t, "%s%s\n", W.blur ? ", slightly blurred" : "", s->light < 0.8 ? ", in dim light" : s->light > 1.25 ? ", brightly lit" : "");
	int drop = s->n > 1 && unif() < W.p_desc ? uni(s->n) : -1;
	int first = 1;
	for (int i = 0; i < s->n; i++) {
		if (i == drop)
			continue;
		object o = s->o[i];
		if (unif() < W.p_desc)
			o.colour = uni(W.colours.n);
		say(t, "%s", first ? "" : "; ");
		object_phrase(t, &o), say(t, " "), place_phrase(t, o.cell);
		first = 0;
	}
	say(t, "\n");
}

/* ---- output ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
	const char *split = "train", *prefix = NULL;
	long n = -1;
	int i = 1;
	for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		if (strcmp(argv[i], "--split") == 0 && i + 1 < argc)
			split = argv[++i];
		else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			n = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc)
			prefix = argv[++i];
		else
			break;
	}
	if (argc - i != 1 || (strcmp(split, "train") && strcmp(split, "test")) || (n != -1 && (n < 1 || n > 10000000))) {
		fprintf(stderr, "usage: mkworld [--split train|test] [-n N] [--prefix P] WORLD.json > shard.tar\n");
		return 2;
	}
	if (isatty(1)) {
		fprintf(stderr, "mkworld: refusing to write a tar to a terminal\n");
		return 2;
	}
	load_world(argv[i]);
	int test = strcmp(split, "test") == 0;
	if (n < 0)
		n = test ? W.ntest : W.ntrain;
	if (!prefix) {
		json_t *nm = json_object_get(W.root, "name");
		prefix = json_is_string(nm) ? json_string_value(nm) : "world";
	}
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (archive_write_open_FILE(a, stdout) != ARCHIVE_OK)
		die("%s", archive_error_string(a));
	unsigned char *px = malloc((size_t)W.size * W.size * 3);
	char **seen = test ? calloc((size_t)n, sizeof *seen) : NULL;
	size_t nseen = 0;
	char cap[4096], dsc[4096];
	for (long k = 0; k < n; k++) {
		scene s;
		char sig[512];
		for (int tries = 0;; tries++) {
			/* each image its own stream: (seed, split, index, try) */
			rs = (W.seed + 1) * 0x9e3779b97f4a7c15ULL ^ ((unsigned long long)k * 4 + (unsigned)test * 2 + 1) *
								      0xbf58476d1ce4e5b9ULL ^ (unsigned long long)tries * 0x94d049bb133111ebULL;
			rnd();
			draw_scene(&s);
			if (!test)
				break;
			signature(&s, sig, sizeof sig);
			char *key = sig;
			if (!bsearch(&key, seen, nseen, sizeof *seen, cmp_str))
				break;
			if (tries == 1000)
				die("%s: fewer than %ld distinct scenes in this world: ask for a smaller test split", W.path, n);
		}
		if (test) { /* sorted insert */
			size_t at = nseen;
			while (at > 0 && strcmp(seen[at - 1], sig) > 0)
				at--;
			memmove(seen + at + 1, seen + at, (nseen - at) * sizeof *seen);
			seen[at] = strdup(sig);
			nseen++;
		}
		render(&s, px);
		char key[80], name[96], err[256];
		snprintf(key, sizeof key, "%s-%s%06ld", prefix, split, k);
		size_t len = 0;
		unsigned char *jp = cmr_jpeg_encode(px, W.size, W.size, 92, &len, err, sizeof err);
		if (!jp)
			die("%s", err);
		snprintf(name, sizeof name, "%s.jpg", key);
		wds_put(a, "mkworld", name, jp, len);
		free(jp);
		text t = {cap, 0, sizeof cap};
		for (int c = 0; c < W.captions; c++) {
			if (test)
				full_caption(&t, &s);
			else
				caption(&t, &s, c);
			say(&t, "\n");
		}
		snprintf(name, sizeof name, "%s.txt", key);
		wds_put(a, "mkworld", name, cap, t.n);
		text d = {dsc, 0, sizeof dsc};
		descriptions(&d, &s);
		snprintf(name, sizeof name, "%s.desc", key);
		wds_put(a, "mkworld", name, dsc, d.n);
		int label = W.label_colour ? s.o[0].colour : s.o[0].shape;
		int l = snprintf(dsc, sizeof dsc, "%d\n", label);
		snprintf(name, sizeof name, "%s.cls", key);
		wds_put(a, "mkworld", name, dsc, (size_t)l);
	}
	if (archive_write_close(a) != ARCHIVE_OK)
		die("%s", archive_error_string(a));
	archive_write_free(a);
	for (size_t j = 0; j < nseen; j++)
		free(seen[j]);
	free(seen);
	free(px);
	json_decref(W.root);
	return 0;
}
