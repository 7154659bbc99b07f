/* unit.h - a minimal unit test harness: TEST(name) { CHECK(...); } registers itself. */
#ifndef CMR_UNIT_H
#define CMR_UNIT_H

#include <stdio.h>

typedef void (*unit_fn)(void);
void unit_register(const char *name, unit_fn fn);
void unit_fail(const char *file, int line, const char *what);
extern int unit_failed; /* set by unit_fail for the running test */

#define TEST(name)                                                             \
	static void name(void);                                                \
	__attribute__((constructor)) static void reg_##name(void)              \
	{                                                                      \
		unit_register(#name, name);                                    \
	}                                                                      \
	static void name(void)

/* Fails the running test and leaves it. */
#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			unit_fail(__FILE__, __LINE__, #cond);                  \
			return;                                                \
		}                                                              \
	} while (0)

/* Source directory of the tests (for spec and fixture files). */
const char *unit_srcdir(void);

/* 1 if the registered backend f can start here; else 0, once printing a SKIP line with the
 * reason (a device backend on a machine without its device). */
struct cmr_ops;
int unit_backend_usable(const struct cmr_ops *f);

#endif
