/* kpipe verifier: the kernel-state cases (state.c). */
#ifndef KPIPE_STATE_H
#define KPIPE_STATE_H

#include "harness.h"

extern const struct test_case state_cases[];
extern const size_t n_state_cases;

#endif
