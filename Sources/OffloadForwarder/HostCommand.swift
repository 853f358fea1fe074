#if canImport(Glibc)
    import Glibc
#endif

/// A program (`ip`) run to its end with `posix_spawn(3)`, its output read through pipes.
///
/// Not Foundation's `Process`: on Linux its wait goes through a CFRunLoop whose wakeup socket
/// pair lives on the loopback; in a network namespace whose `lo` is down it cannot be created
/// ("Could not create wakeup socket pair for CFSocket") and the wait never ends, so a gateway
/// started with `--setup` there hung before serving and never put its sysctls back. This needs
/// nothing but the kernel: pipes, `poll(2)`, `waitpid(2)`.
enum HostCommand {
    /// What a finished program left.
    struct Result {
        /// Its exit status (128 + the signal when a signal ended it).
        var status: Int32
        /// Its standard output.
        var output: String
        /// Its standard error.
        var errors: String
    }

    /// Runs `executable` with `arguments` (standard input from /dev/null) and waits for it, at
    /// most `timeout` milliseconds; then it is killed and this throws.
    static func run(_ executable: String, _ arguments: [String], timeout: Int = 10_000) throws(HostCommandError) -> Result {
        var outPipe: [CInt] = [-1, -1]
        var errPipe: [CInt] = [-1, -1]
        guard unsafe pipe(&outPipe) == 0 else { throw HostCommandError(executable, "pipe", errno) }
        guard unsafe pipe(&errPipe) == 0 else {
            let e = errno
            close(outPipe[0])
            close(outPipe[1])
            throw HostCommandError(executable, "pipe", e)
        }
        // The parent's ends are close-on-exec (no other program inherits them); the child's copies
        // on 1 and 2 are made by dup2, which clears the flag. (pipe2 is not in Swift's Glibc.)
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = unsafe posix_spawn_file_actions_t()
        unsafe posix_spawn_file_actions_init(&actions)
        defer { unsafe posix_spawn_file_actions_destroy(&actions) }
        unsafe posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        unsafe posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        unsafe posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        // argv as C strings, owned here until the spawn returned (the child has its own copy then).
        let argv: [UnsafeMutablePointer<CChar>?] = unsafe ([executable] + arguments).map { unsafe strdup($0) } + [nil]
        defer { unsafe argv.forEach { unsafe free($0) } }
        var pid: pid_t = 0
        let spawned = unsafe argv.withUnsafeBufferPointer { unsafe posix_spawn(&pid, executable, &actions, nil, $0.baseAddress!, environ) }
        close(outPipe[1])
        close(errPipe[1])
        guard spawned == 0 else {
            close(outPipe[0])
            close(errPipe[0])
            throw HostCommandError(executable, "posix_spawn", spawned)
        }
        var output: [UInt8] = []
        var errors: [UInt8] = []
        var open = [outPipe[0], errPipe[0]]
        let deadline = monotonicMilliseconds() + timeout
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !open.isEmpty {
            let left = deadline - monotonicMilliseconds()
            guard left > 0 else { break }
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard unsafe poll(&fds, nfds_t(fds.count), CInt(min(left, 1_000))) > 0 else { continue }
            for p in fds where p.revents != 0 {
                let n = unsafe chunk.withUnsafeMutableBytes { unsafe read(p.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    if p.fd == outPipe[0] { output += chunk[..<n] } else { errors += chunk[..<n] }
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(p.fd)
                    open.removeAll { $0 == p.fd }
                }
            }
        }
        for fd in open { close(fd) }
        // Out of time with a pipe still open: the program is stuck (or left a child holding it).
        if !open.isEmpty { kill(pid, SIGKILL) }
        var status: CInt = 0
        while unsafe waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if !open.isEmpty { throw HostCommandError(executable, "no answer within \(timeout) ms", ETIMEDOUT) }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
        let exit = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return Result(status: exit, output: String(decoding: output, as: UTF8.self), errors: String(decoding: errors, as: UTF8.self))
    }

    static func monotonicMilliseconds() -> Int {
        var now = timespec()
        unsafe clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1_000 + now.tv_nsec / 1_000_000
    }
}

/// A program could not be run.
struct HostCommandError: Error, CustomStringConvertible {
    /// The program.
    var executable: String
    /// The step that failed.
    var step: String
    /// The system's reason.
    var code: CInt
    init(_ executable: String, _ step: String, _ code: CInt) {
        self.executable = executable
        self.step = step
        self.code = code
    }
    /// `/usr/sbin/ip: posix_spawn: No such file or directory`.
    var description: String { unsafe "\(executable): \(step): \(String(cString: strerror(code)))" }
}
