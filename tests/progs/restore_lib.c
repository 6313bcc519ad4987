/* A small shared library for restore's refusal test (mapped file replaced). */
#ifndef VALUE
#define VALUE 0
#endif
long lib_value(void) { return VALUE; }
