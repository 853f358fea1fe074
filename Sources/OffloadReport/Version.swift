/// swift-offload's version: the one place it is written. `offload --version`, the lab's and the
/// doctor's reports, and the installed man page all read it from here.
public enum OffloadVersion {
    /// The release, semantic versioning.
    public static let current = "0.6.0"
    /// "swift-offload 0.6.0", for report headers.
    public static var banner: String { "swift-offload \(current)" }
}
