/// What IKE_AUTH needs of IKE_SA_INIT (strongSwan's `ike_auth` keeps the same): both messages,
/// signed in the AUTH payloads (RFC 7296 §2.15). Made when IKE_SA_INIT is done, at either end;
/// dropped when the SA is established. The nonces stay on the SA (its keys come from them).
struct IKEAuthTask {
    /// The IKE_SA_INIT request (the initiator's signed octets, with Nr).
    let initRequest: [UInt8]
    /// The IKE_SA_INIT response (the responder's signed octets, with Ni).
    let initResponse: [UInt8]
}
