#include "parts.h"

/* Part 2: a mix of arithmetic that depends on x, for a checksum in main. */
long f02(long x)
{
    long acc = 15838;
    for (long k = 0; k < 1200; k++) {
        acc = acc * 6364136223846793005L + x + k * 2;
        acc ^= acc >> 13;
        if (acc % 4 == 0)
            acc += 62;
    }
    return acc;
}
