/// A CHILD_SA this end asked for (strongSwan's `child_create`, and `child_rekey` when it replaces
/// one): what its IKE_AUTH or CREATE_CHILD_SA request offered, kept until the answer.
struct ChildCreateTask {
    /// The configuration's child being negotiated.
    let config: IKEChildConfig
    /// The inbound SPI offered (no other CHILD_SA gets it while the request is out).
    let spi: UInt32
    /// Ni of the CREATE_CHILD_SA request; empty in IKE_AUTH (the IKE SA's nonces are used).
    let nonce: [UInt8]
    /// The CHILD_SA it rekeys; nil for a new one.
    let replaces: Int?
}
