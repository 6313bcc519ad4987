#include "parts.h"

/* Part 8: a mix of arithmetic that depends on x, for a checksum in main. */
long f08(long x)
{
    long acc = 63352;
    for (long k = 0; k < 1800; k++) {
        acc = acc * 6364136223846793005L + x + k * 8;
        acc ^= acc >> 12;
        if (acc % 10 == 0)
            acc += 248;
    }
    return acc;
}
