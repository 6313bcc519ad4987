/* Writes a known value to the heap, then crashes with SIGSEGV: a kernel core. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *g_heap_str;

int main(void)
{
    g_heap_str = strdup("kernel core heap string");
    volatile int *p = NULL;
    *p = 1;
    return 0;
}
