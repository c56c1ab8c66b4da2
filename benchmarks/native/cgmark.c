/*
 * cgmark: callgrind client requests for benchmarks/instructions.py, loaded with ctypes.
 *
 * With --separate-threads=yes, callgrind's ZERO_STATS and DUMP_STATS_AT act on the calling
 * thread only: zeroed on the measured thread where its measured section starts, dumped on the
 * same thread where it ends, the dump holds that thread's instructions of that section and
 * nothing else (no start-up, no warm-up, no other thread). Outside valgrind every request is a
 * no-op (a few instructions).
 *
 * Built by benchmarks/instructions.py: gcc -O2 -shared -fPIC cgmark.c (valgrind/callgrind.h,
 * which Debian's valgrind package ships).
 */
#include <valgrind/callgrind.h>

void cgmark_start_instrumentation(void) { CALLGRIND_START_INSTRUMENTATION; }

void cgmark_zero(void) { CALLGRIND_ZERO_STATS; }

void cgmark_dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }

int cgmark_on_valgrind(void) { return (int)RUNNING_ON_VALGRIND; }
