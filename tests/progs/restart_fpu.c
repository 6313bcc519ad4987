/* Values that live only in registers for the whole computation: x87, SSE and
 * AVX registers are summed in a long loop of inline assembly that never spills
 * them to memory, so a checkpoint taken mid-loop is only right if the restarted
 * thread gets its full XSAVE state back.  Prints the sums; they are exact.
 * All VEX-encoded: a legacy SSE instruction after VEX.256 ones pays a state
 * transition on some CPUs (190 ns per iteration on one Xeon here, against 1.5 ns).
 *   usage: restart_fpu ITERATIONS */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 400000000UL;
    double ones[4] = { 1.0, 2.0, 3.0, 4.0 }, avx[4], sse[2];
    double x87 = 0;
    long k = 0;

    setvbuf(stdout, NULL, _IONBF, 0);
    printf("start\n");
    __asm__ volatile(
        "vmovupd (%[ones]), %%ymm0\n\t"
        "vxorpd %%ymm1, %%ymm1, %%ymm1\n\t"
        "vmovupd (%[ones]), %%xmm8\n\t"
        "vxorpd %%xmm9, %%xmm9, %%xmm9\n\t"
        "fldz\n\t"
        "fld1\n\t"
        "1:\n\t"
        "vaddpd %%ymm0, %%ymm1, %%ymm1\n\t"
        "vaddpd %%xmm8, %%xmm9, %%xmm9\n\t"
        "fadd %%st(0), %%st(1)\n\t"
        "inc %[k]\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        "fstp %%st(0)\n\t"
        "fstpl %[x87]\n\t"
        "vmovupd %%ymm1, (%[avx])\n\t"
        "movupd %%xmm9, (%[sse])\n\t"
        : [n] "+r"(n), [k] "+r"(k), [x87] "=m"(x87)
        : [ones] "r"(ones), [avx] "r"(avx), [sse] "r"(sse)
        : "memory", "xmm0", "xmm1", "xmm8", "xmm9", "st", "st(1)");
    printf("iterations %ld\n", k);
    printf("avx %.1f %.1f %.1f %.1f\n", avx[0], avx[1], avx[2], avx[3]);
    printf("sse %.1f %.1f\n", sse[0], sse[1]);
    printf("x87 %.1f\n", x87);
    return 0;
}
