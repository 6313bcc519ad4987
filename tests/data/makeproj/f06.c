#include "parts.h"

/* Part 6: a mix of arithmetic that depends on x, for a checksum in main. */
long f06(long x)
{
    long acc = 47514;
    for (long k = 0; k < 1600; k++) {
        acc = acc * 6364136223846793005L + x + k * 6;
        acc ^= acc >> 17;
        if (acc % 8 == 0)
            acc += 186;
    }
    return acc;
}
