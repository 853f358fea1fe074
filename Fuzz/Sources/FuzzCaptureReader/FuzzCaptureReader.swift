// CaptureReader on arbitrary bytes (pcap, pcapng or neither): packets or a clear error, never a
// trap, and never more packet bytes than the file holds.
import FuzzDriver
import FuzzSupport
import Glibc
import OffloadCapture
import SystemPackage

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCaptureReader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // The reader takes a file descriptor: a tmpfs file, unlinked at once, holds the input.
    let path = "/dev/shm/swift-offload-fuzz-\(getpid())"
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { oracleFailure("cannot create \(path): errno \(errno)") }
    unlink(path)
    var written = 0
    while written < size {
        let n = write(fd, data + written, size - written)
        if n <= 0 { oracleFailure("write to the tmpfs file failed: \(errno)") }
        written += n
    }
    lseek(fd, 0, SEEK_SET)
    defer { close(fd) }
    do {
        var reader = try CaptureReader(fileDescriptor: FileDescriptor(rawValue: fd), path: "<fuzz>", closeOnDeinit: false)
        var total = 0
        while let packet = try reader.next() {
            total += packet.bytes.count
            if total > size { oracleFailure("read \(total) packet bytes from a \(size)-byte file") }
        }
    } catch {
        // A clear error is a correct outcome.
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzCaptureReader_main")
public func fuzzCaptureReaderMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
