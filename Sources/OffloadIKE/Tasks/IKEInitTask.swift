/// IKE_SA_INIT as initiator (strongSwan's `ike_init`): the key pair and nonce offered, a COOKIE
/// the responder asked for, and an unauthenticated refusal that ends the attempt only when the
/// retransmission timer fires (RFC 7296 §2.21.1). One task for all the requests of the exchange
/// (again with a COOKIE or another group): it travels with the outstanding request.
final class IKEInitTask {
    /// This end's key pair for the key exchange (replaced when the responder wants another group).
    var keyPair: IKEKeyPair
    /// Ni: the same in every request of the exchange.
    let nonce: [UInt8]
    /// The COOKIE the responder asked for, sent in front of the next request.
    var cookie: [UInt8]?
    /// A refusal or unusable answer taken so far (unauthenticated: a genuine answer may follow).
    var refusal: String?
    /// The last request sent (signed in IKE_AUTH).
    var request: [UInt8] = []

    /// A task offering `keyPair` and `nonce`.
    init(keyPair: IKEKeyPair, nonce: [UInt8]) {
        self.keyPair = keyPair
        self.nonce = nonce
    }
}
