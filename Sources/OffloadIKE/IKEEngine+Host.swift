// What the engine's host (OffloadIKEDaemon: sockets, timers, the status file) reads of it.

extension IKEEngine {
    /// This end's SPI of every IKE SA now: a message on port 4500 for any other SPI is not handed
    /// over (only a first IKE_SA_INIT request is).
    package var localIKESPIs: [UInt64] { Array(sas.keys) }
}

extension IKEEngine.Counters {
    /// All counts zero.
    public static var zero: Self { Self() }
}
