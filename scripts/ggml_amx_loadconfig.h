/* Force-included into llama.cpp's C++ sources by scripts/llama_build.py (native flavour).

   GCC 12's _tile_loadconfig tells the compiler that `ldtilecfg` reads 8 bytes of the configuration
   (an "m" operand of type const void *), but it reads 64. ggml's AMX kernels build the configuration
   on the stack, so at -O3 GCC drops the stores of the row and column sizes as dead: `ldtilecfg` loads
   whatever the stack held, and the first tile instruction faults (SIGILL at tilezero, or SIGSEGV).
   This definition names all 64 bytes. Sources compiled without AMX are left untouched. */
#if defined(__cplusplus) && defined(__AMX_TILE__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define _tile_loadconfig(config) \
    __asm__ volatile("ldtilecfg\t%X0" ::"m"(*(const unsigned char(*)[64])(config)))
#endif
