/* kpipe verifier: the plain mremap regression matrix (plain.c), a suite of its own beside the DONTUNMAP cases. */
#ifndef KPIPE_PLAIN_H
#define KPIPE_PLAIN_H

#include "harness.h"

extern const struct test_case plain_cases[];
extern const size_t n_plain_cases;

#endif
