#include "parts.h"

/* Part 11: a mix of arithmetic that depends on x, for a checksum in main. */
long f11(long x)
{
    long acc = 87109;
    for (long k = 0; k < 2100; k++) {
        acc = acc * 6364136223846793005L + x + k * 11;
        acc ^= acc >> 15;
        if (acc % 13 == 0)
            acc += 341;
    }
    return acc;
}
