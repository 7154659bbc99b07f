/* origin.c - the model embeddings come from (provenance "model"), and the rule that refuses a mix. */
#include "origin.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fe.h"
#include "util.h"

int cmr_force_mix;

#define HIST_MAX 256
#define HIST_BYTES (8u << 20)

static int parse_hex(json_t *v, uint64_t *h)
{
	return cmr_parse_hex64(json_string_value(v), h);
}

/* an origin from a "model" object: {"name", "tower", "id", "towers": {"vision", "text"}, "tuning": {"path"}} */
static int origin_from_model(json_t *m, cmr_origin *o)
{
	const char *tw = json_string_value(json_object_get(m, "tower"));
	json_t *ts = json_object_get(m, "towers");
	memset(o, 0, sizeof *o);
	if (!tw || (strcmp(tw, "vision") != 0 && strcmp(tw, "text") != 0) || !json_is_object(ts) ||
	    parse_hex(json_object_get(m, "id"), &o->id) < 0 || parse_hex(json_object_get(ts, "vision"), &o->towers[0]) < 0 ||
	    parse_hex(json_object_get(ts, "text"), &o->towers[1]) < 0)
		return -1;
	o->tower = strcmp(tw, "vision") == 0 ? 0 : 1;
	const char *name = json_string_value(json_object_get(m, "name"));
	const char *tun = json_string_value(json_object_get(json_object_get(m, "tuning"), "path"));
	snprintf(o->name, sizeof o->name, "%s%s%s", name ? name : "(unnamed)", tun ? " + tuning " : "", tun ? tun : "");
	return 0;
}

static json_t *origin_to_model(const cmr_origin *o)
{
	char id[17], v[17], t[17];
	snprintf(id, sizeof id, "%016" PRIx64, o->id);
	snprintf(v, sizeof v, "%016" PRIx64, o->towers[0]);
	snprintf(t, sizeof t, "%016" PRIx64, o->towers[1]);
	return json_pack("{s:s, s:s, s:s, s:{s:s, s:s}}", "name", o->name, "tower", o->tower ? "text" : "vision", "id", id,
			 "towers", "vision", v, "text", t);
}

const char *cmr_origin_describe(const cmr_origin *o, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s embeddings of %s (model %016" PRIx64 ")", o->tower ? "text" : "image", o->name, o->id);
	return buf;
}

static int agree(const cmr_origin *a, const cmr_origin *b)
{
	return a->towers[a->tower] == b->towers[a->tower] || a->towers[b->tower] == b->towers[b->tower];
}

static void mix(const cmr_origin *a, const cmr_origin *b)
{
	char da[700], db[700];
	cmr_origin_describe(a, da, sizeof da);
	cmr_origin_describe(b, db, sizeof db);
	if (cmr_force_mix) {
		cmr_warn("%s holds %s, but %s %s: not one model (going on: --force)", a->input, da, b->input, db);
		return;
	}
	cmr_error("%s holds %s, but %s %s: not one model", a->input, da, b->input, db);
	cmr_hint("encode both with the same model (and tuning), or give --force to use them anyway");
	cmr_die("refusing to mix models");
}

/* adds o to s unless an equal one is there; checks it against the others (unless check is
 * 0: the origins of an index, mixed already if it was built with --force) */
static void add(cmr_origins *s, const cmr_origin *o, int check)
{
	for (int i = 0; i < s->n; i++) {
		const cmr_origin *e = &s->o[i];
		if (e->tower == o->tower && e->towers[0] == o->towers[0] && e->towers[1] == o->towers[1])
			return;
	}
	for (int i = 0; i < s->n && check; i++)
		if (!agree(&s->o[i], o))
			mix(&s->o[i], o);
	if (s->n < CMR_ORIGINS_MAX)
		s->o[s->n++] = *o;
}

static void hist_push(cmr_origins *s, const char *key, const char *json, size_t len)
{
	if (s->nhist >= HIST_MAX || s->hist_bytes + len > HIST_BYTES) {
		s->hist_dropped++;
		return;
	}
	if (s->nhist == s->hist_cap) {
		int cap = s->hist_cap ? 2 * s->hist_cap : 8;
		char **k = realloc(s->hist_key, (size_t)cap * sizeof *k), **j = k ? realloc(s->hist_json, (size_t)cap * sizeof *j) : NULL;
		if (k)
			s->hist_key = k;
		if (!k || !j)
			cmr_die("out of memory");
		s->hist_json = j;
		s->hist_cap = cap;
	}
	char *kk = strdup(key), *jj = malloc(len + 1);
	if (!kk || !jj)
		cmr_die("out of memory");
	memcpy(jj, json, len);
	jj[len] = 0;
	s->hist_key[s->nhist] = kk;
	s->hist_json[s->nhist++] = jj;
	s->hist_bytes += len;
}

void cmr_origins_provenance(cmr_origins *s, const char *key, const char *json, size_t len, const char *input)
{
	hist_push(s, key, json, len);
	json_t *j = json_loadb(json, len, 0, NULL);
	json_t *m = j ? json_object_get(j, "model") : NULL;
	cmr_origin o;
	if (json_is_object(m) && origin_from_model(m, &o) == 0) {
		snprintf(o.input, sizeof o.input, "%s", input);
		s->pending = o;
		s->has_pending = 1;
	}
	json_decref(j);
}

void cmr_origins_input(cmr_origins *s)
{
	s->has_pending = 0;
}

void cmr_origins_embedding(cmr_origins *s, const char *where)
{
	(void)where;
	if (s->has_pending)
		add(s, &s->pending, 1);
}

void cmr_origins_check(const cmr_origins *a, const cmr_origins *b)
{
	for (int i = 0; i < a->n; i++)
		for (int j = 0; j < b->n; j++)
			if (!agree(&a->o[i], &b->o[j]))
				mix(&a->o[i], &b->o[j]);
}

void cmr_origins_merge(cmr_origins *a, const cmr_origins *b)
{
	for (int j = 0; j < b->n; j++)
		add(a, &b->o[j], 1);
	for (int i = 0; i < b->nhist; i++)
		hist_push(a, b->hist_key[i], b->hist_json[i], strlen(b->hist_json[i]));
	a->hist_dropped += b->hist_dropped;
}

char *cmr_origins_json(const char *own, const cmr_origins *s)
{
	json_t *j = json_loads(own, 0, NULL);
	json_t *models = json_array(), *hist = json_array();
	if (!j || !models || !hist)
		cmr_die("out of memory");
	for (int i = 0; i < s->n; i++)
		json_array_append_new(models, origin_to_model(&s->o[i]));
	for (int i = 0; i < s->nhist; i++) {
		json_t *h = json_loads(s->hist_json[i], 0, NULL);
		if (!json_is_object(h)) { /* not JSON: kept as text */
			json_decref(h);
			h = json_pack("{s:s}", "text", s->hist_json[i]);
		}
		if (h)
			json_array_append_new(hist, h);
	}
	json_object_set_new(j, "models", models);
	json_object_set_new(j, "history", hist);
	if (s->hist_dropped)
		json_object_set_new(j, "history_dropped", json_integer((json_int_t)s->hist_dropped));
	char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	if (!text)
		cmr_die("out of memory");
	return text;
}

int cmr_origins_from_json(cmr_origins *s, const char *json, const char *input)
{
	memset(s, 0, sizeof *s);
	json_t *j = json ? json_loads(json, 0, NULL) : NULL;
	if (!json_is_object(j)) {
		json_decref(j);
		return -1;
	}
	json_t *models = json_object_get(j, "models"), *v;
	size_t i;
	json_array_foreach(models, i, v)
	{
		cmr_origin o;
		if (json_is_object(v) && origin_from_model(v, &o) == 0) {
			snprintf(o.input, sizeof o.input, "%s", input);
			add(s, &o, 0);
		}
	}
	json_array_foreach(json_object_get(j, "history"), i, v)
	{
		char *text = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
		const char *key = json_string_value(json_object_get(v, "tool"));
		if (text)
			hist_push(s, key ? key : "cmr", text, strlen(text));
		free(text);
	}
	json_int_t dropped = json_integer_value(json_object_get(j, "history_dropped"));
	if (dropped > 0)
		s->hist_dropped += (uint64_t)dropped;
	json_decref(j);
	return 0;
}

void cmr_origins_free(cmr_origins *s)
{
	for (int i = 0; i < s->nhist; i++) {
		free(s->hist_key[i]);
		free(s->hist_json[i]);
	}
	free(s->hist_key);
	free(s->hist_json);
	memset(s, 0, sizeof *s);
}
