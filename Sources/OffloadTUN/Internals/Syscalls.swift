#if canImport(Glibc)
    import Glibc
#endif

// The raw system calls this module makes, one line each (swift-system's Internals/Syscalls.swift
// pattern). Callers read errno right after the call.

@inline(__always)
internal func system_readv(_ fd: CInt, _ iov: UnsafePointer<iovec>, _ count: CInt) -> Int {
    unsafe readv(fd, iov, count)
}

@inline(__always)
internal func system_writev(_ fd: CInt, _ iov: UnsafePointer<iovec>, _ count: CInt) -> Int {
    unsafe writev(fd, iov, count)
}

@inline(__always)
internal func system_poll(_ fds: UnsafeMutablePointer<pollfd>, _ count: nfds_t, _ timeout: CInt) -> CInt {
    unsafe poll(fds, count, timeout)
}

@inline(__always)
internal func system_close(_ fd: CInt) -> CInt {
    close(fd)
}

@inline(__always)
internal func system_errno() -> CInt { errno }
