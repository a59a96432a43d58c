/* kpipe verifier: the kernel-state cases of less common moves (moves.c). */
#ifndef KPIPE_MOVES_H
#define KPIPE_MOVES_H

#include "harness.h"

extern const struct test_case move_cases[];
extern const size_t n_move_cases;

#endif
