#include "parts.h"

/* Part 7: a mix of arithmetic that depends on x, for a checksum in main. */
long f07(long x)
{
    long acc = 55433;
    for (long k = 0; k < 1700; k++) {
        acc = acc * 6364136223846793005L + x + k * 7;
        acc ^= acc >> 11;
        if (acc % 9 == 0)
            acc += 217;
    }
    return acc;
}
