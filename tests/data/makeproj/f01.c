#include "parts.h"

/* Part 1: a mix of arithmetic that depends on x, for a checksum in main. */
long f01(long x)
{
    long acc = 7919;
    for (long k = 0; k < 1100; k++) {
        acc = acc * 6364136223846793005L + x + k * 1;
        acc ^= acc >> 12;
        if (acc % 3 == 0)
            acc += 31;
    }
    return acc;
}
