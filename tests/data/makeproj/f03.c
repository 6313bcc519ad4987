#include "parts.h"

/* Part 3: a mix of arithmetic that depends on x, for a checksum in main. */
long f03(long x)
{
    long acc = 23757;
    for (long k = 0; k < 1300; k++) {
        acc = acc * 6364136223846793005L + x + k * 3;
        acc ^= acc >> 14;
        if (acc % 5 == 0)
            acc += 93;
    }
    return acc;
}
