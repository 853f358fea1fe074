#include <stddef.h>

/// Bytes malloc has handed out and not had back: glibc's mallinfo2() in-use heap (uordblks) plus
/// its mmapped chunks (hblkhd), which large arrays and dictionaries live in.
size_t heap_in_use(void);
