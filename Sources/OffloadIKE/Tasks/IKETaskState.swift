/// The state of the exchange this end's outstanding request belongs to (strongSwan keeps it in a
/// task object: `src/libcharon/sa/ikev2/tasks/`). It travels with the request
/// (``IKESA/Outstanding``) and is gone once the answer is processed or the SA dies; what outlives
/// the exchange (keys, SPIs, CHILD_SAs) is on ``IKESA``.
enum IKETaskState {
    /// IKE_SA_INIT as initiator.
    case ikeInit(IKEInitTask)
    /// A CHILD_SA asked for in IKE_AUTH or CREATE_CHILD_SA (new or a rekey).
    case child(ChildCreateTask)
    /// A rekey of the IKE SA.
    case ikeRekey(IKERekeyTask)
}
