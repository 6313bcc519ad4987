#include "parts.h"

/* Part 9: a mix of arithmetic that depends on x, for a checksum in main. */
long f09(long x)
{
    long acc = 71271;
    for (long k = 0; k < 1900; k++) {
        acc = acc * 6364136223846793005L + x + k * 9;
        acc ^= acc >> 13;
        if (acc % 11 == 0)
            acc += 279;
    }
    return acc;
}
