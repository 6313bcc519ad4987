#include "parts.h"

/* Part 4: a mix of arithmetic that depends on x, for a checksum in main. */
long f04(long x)
{
    long acc = 31676;
    for (long k = 0; k < 1400; k++) {
        acc = acc * 6364136223846793005L + x + k * 4;
        acc ^= acc >> 15;
        if (acc % 6 == 0)
            acc += 124;
    }
    return acc;
}
