/* main.c - runs every registered unit test; prints PASS/FAIL lines read by tests/run.sh. */
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "backend/backend.h"

#define MAX_TESTS 256
static struct { const char *name; unit_fn fn; } tests[MAX_TESTS];
static int ntests;
int unit_failed;

void unit_register(const char *name, unit_fn fn)
{
	if (ntests < MAX_TESTS) {
		tests[ntests].name = name;
		tests[ntests++].fn = fn;
	}
}

void unit_fail(const char *file, int line, const char *what)
{
	fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", file, line, what);
	unit_failed = 1;
}

const char *unit_srcdir(void)
{
	const char *s = getenv("CMR_SRCDIR");
	return s ? s : ".";
}

int main(int argc, char **argv)
{
	int failed = 0;
	for (int i = 0; i < ntests; i++) {
		if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
			continue;
		unit_failed = 0;
		tests[i].fn();
		fflush(stderr);
		printf("%s: unit/%s\n", unit_failed ? "FAIL" : "PASS", tests[i].name);
		fflush(stdout);
		failed += unit_failed;
	}
	return failed ? 1 : 0;
}

int unit_backend_usable(const struct cmr_ops *f)
{
	static const struct cmr_ops *told[8];
	char why[256];
	if (!f->open || f->open(0, CMR_PREC_FP32, why, sizeof why) == 0)
		return 1;
	int i = 0;
	while (i < 7 && told[i] && told[i] != f)
		i++;
	if (!told[i]) {
		told[i] = f;
		printf("SKIP: unit: the %s backend's tests (%s)\n", f->name, why);
	}
	return 0;
}
