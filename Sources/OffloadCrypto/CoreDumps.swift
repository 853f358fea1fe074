import COffloadCrypto

#if canImport(Glibc)
    import Glibc
#endif

/// What a process that holds keys does first: no core dumps (a crash must not write its memory,
/// keys included, to disk).
public enum KeyHoldingProcess {
    /// Why the core dumps could not be turned off.
    public struct HardeningError: Error, Sendable, CustomStringConvertible {
        /// What failed.
        public var description: String
    }

    /// Turns core dumps off for the rest of the process's life: RLIMIT_CORE 0 (hard and soft, so
    /// it cannot be raised again) and PR_SET_DUMPABLE 0. The second also keeps users other than
    /// root from ptrace-attaching and makes the files of /proc/self root's; this program reads
    /// only /proc/self/exe (readlink), which a process may always do on itself.
    /// - Throws: ``HardeningError`` when the kernel refuses.
    public static func disableCoreDumps() throws(HardeningError) {
        let result = offload_disable_core_dumps()
        guard result == 0 else {
            throw HardeningError(description: unsafe "cannot turn core dumps off: \(String(cString: strerror(-result)))")
        }
    }

    /// Whether the process is dumpable (PR_GET_DUMPABLE is not 0).
    public static var isDumpable: Bool { offload_dumpable() != 0 }

    /// The core size limits (RLIMIT_CORE), soft and hard, in bytes.
    public static var coreSizeLimit: (soft: UInt64, hard: UInt64) {
        var limit = rlimit()
        _ = unsafe getrlimit(Int32(RLIMIT_CORE.rawValue), &limit)
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }
}
