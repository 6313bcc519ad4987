#include <stdio.h>
#include "parts.h"

int main(void)
{
    long (*parts[])(long) = {f01, f02, f03, f04, f05, f06, f07, f08, f09, f10, f11};
    unsigned long sum = 0;
    for (unsigned i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        long v = parts[i](i + 1);
        printf("part %02u %ld\n", i + 1, v);
        sum = sum * 31 + (unsigned long)v;
    }
    printf("sum %lu\n", sum);
    return 0;
}
