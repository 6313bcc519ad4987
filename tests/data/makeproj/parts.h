/* The parts of the makeproj test program, one per file. */
long f01(long x);
long f02(long x);
long f03(long x);
long f04(long x);
long f05(long x);
long f06(long x);
long f07(long x);
long f08(long x);
long f09(long x);
long f10(long x);
long f11(long x);
