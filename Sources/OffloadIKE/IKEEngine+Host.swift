// What the engine's host (OffloadIKEDaemon: sockets, timers, the status file) reads of it.

extension IKEEngine {
    /// For each IKE SA (by this end's SPI), the message IDs whose arrival may install a CHILD_SA:
    /// the peer's next request, and the answer to this end's outstanding request. Only a message
    /// with one of these is worth the receiving thread's wait; anything else is either old (a
    /// retransmission, answered from the cache) or forged.
    package var awaitedMessageIDs: [UInt64: (request: UInt32, response: UInt32?)] {
        sas.mapValues { ($0.expectedRequestID, $0.outstanding?.id) }
    }
}

extension IKEEngine.Counters {
    /// All counts zero.
    public static var zero: Self { Self() }
}
