#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer's driver on the target's LLVMFuzzerTestOneInput. SwiftPM makes an executable's
/// entry point `<Target>_main` and points `main` at it, so libFuzzer's own `main` is not linked:
/// each target's entry point calls this instead.
int fuzz_driver_main(int argc, char **argv);
