#include "parts.h"

/* Part 10: a mix of arithmetic that depends on x, for a checksum in main. */
long f10(long x)
{
    long acc = 79190;
    for (long k = 0; k < 2000; k++) {
        acc = acc * 6364136223846793005L + x + k * 10;
        acc ^= acc >> 14;
        if (acc % 12 == 0)
            acc += 310;
    }
    return acc;
}
