/* examples.h - the example records of formats/cmr-stream.md, built with the library's writer.
 * Used by tests/golden/mkgolden.c and by the unit test that checks the spec's hex dumps. */
#ifndef CMR_TEST_EXAMPLES_H
#define CMR_TEST_EXAMPLES_H

#include <stddef.h>
#include <stdint.h>

/* Writes example record n (1-based) into a malloc'ed buffer; returns its length, 0 for an
 * unknown n. */
size_t cmr_example_record(int n, uint8_t **out);
#define CMR_EXAMPLES 3

#endif
