/// A rekey of the IKE SA this end asked for (strongSwan's `ike_rekey`): the new SA's SPI, nonce
/// and key pair, kept until the answer.
struct IKERekeyTask {
    /// This end's SPI of the new IKE SA.
    let spi: UInt64
    /// Ni of the CREATE_CHILD_SA request.
    let nonce: [UInt8]
    /// This end's key pair for the new SA's key exchange.
    let keyPair: IKEKeyPair
}
