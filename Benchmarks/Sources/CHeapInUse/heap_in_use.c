#include <malloc.h>
#include "CHeapInUse.h"

size_t heap_in_use(void) {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}
