#include "parts.h"

/* Part 5: a mix of arithmetic that depends on x, for a checksum in main. */
long f05(long x)
{
    long acc = 39595;
    for (long k = 0; k < 1500; k++) {
        acc = acc * 6364136223846793005L + x + k * 5;
        acc ^= acc >> 16;
        if (acc % 7 == 0)
            acc += 155;
    }
    return acc;
}
