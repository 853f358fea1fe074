// swift-tools-version: 6.2
import PackageDescription

/// Settings shared by every Swift target. `Lifetimes` is needed for the `~Escapable` header views
/// (the same experimental feature swift-nio and swift-collections enable).
let swiftSettings: [SwiftSetting] = [
    .enableExperimentalFeature("Lifetimes"),
]

/// The modules that do pointer work (the wire layer, the engine, the capture buffers, TUN I/O, the
/// forwarding pipeline, the tunnel endpoint, ESP, IKE and the crypto they share) check memory safety strictly: every use of an unsafe construct is marked
/// `unsafe` (SE-0458). The marker is compile-time only; the generated code is the same.
let strictSettings: [SwiftSetting] = swiftSettings + [.strictMemorySafety()]

/// The IKE engine (a control plane that parses what anyone may send, where speed does not matter)
/// is built without SIL's dead-code elimination: Swift 6.3.1's DCE frees an array whose result is
/// dead before the copy into it (scripts/toolchain/check-array-copy-lifetime.sh shows it; the
/// flag makes the reproducer sound), and two such patterns were found in this module by fuzzing.
/// The sources avoid the pattern too; this keeps a new one from becoming a heap corruption.
let withoutSILDeadCodeElimination: [SwiftSetting] = [.unsafeFlags(["-Xllvm", "-sil-disable-pass=dce"])]

let package = Package(
    name: "swift-offload",
    products: [
        .library(name: "OffloadWire", targets: ["OffloadWire"]),
        .library(name: "OffloadEngine", targets: ["OffloadEngine"]),
        .library(name: "OffloadCapture", targets: ["OffloadCapture"]),
        .library(name: "OffloadTUN", targets: ["OffloadTUN"]),
        .library(name: "OffloadForwarder", targets: ["OffloadForwarder"]),
        .library(name: "OffloadSIIT", targets: ["OffloadSIIT"]),
        .library(name: "OffloadNAT64", targets: ["OffloadNAT64"]),
        .library(name: "OffloadTunnel", targets: ["OffloadTunnel"]),
        .library(name: "OffloadCrypto", targets: ["OffloadCrypto"]),
        .library(name: "OffloadIPsec", targets: ["OffloadIPsec"]),
        .library(name: "OffloadIKE", targets: ["OffloadIKE"]),
        .library(name: "OffloadIKEDaemon", targets: ["OffloadIKEDaemon"]),
        .library(name: "OffloadReport", targets: ["OffloadReport"]),
        .library(name: "OffloadLab", targets: ["OffloadLab"]),
        .library(name: "OffloadDoctor", targets: ["OffloadDoctor"]),
        .executable(name: "offload", targets: ["OffloadCommand"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .target(name: "COffloadChecksum"),
        .target(name: "OffloadWire", dependencies: ["COffloadChecksum"], swiftSettings: strictSettings),
        .target(name: "OffloadEngine", dependencies: ["OffloadWire"], swiftSettings: strictSettings),
        .target(
            name: "OffloadCapture",
            dependencies: ["OffloadWire", "OffloadEngine", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strictSettings),
        .target(name: "COffloadShims"),
        .target(
            name: "OffloadTUN",
            dependencies: ["OffloadWire", "OffloadEngine", "COffloadShims",
                           .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strictSettings),
        .target(
            name: "OffloadForwarder",
            dependencies: ["OffloadWire", "OffloadEngine", "OffloadTUN",
                           .product(name: "SystemPackage", package: "swift-system"),
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "Prometheus", package: "swift-prometheus"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            swiftSettings: strictSettings),
        .target(name: "OffloadSIIT", dependencies: ["OffloadWire", "OffloadEngine", "OffloadCapture", "OffloadForwarder",
                                                    .product(name: "Logging", package: "swift-log")],
                swiftSettings: strictSettings),
        // Stateful NAT64 (RFC 6146) on the stateless translation: the tables and the stage.
        .target(name: "OffloadNAT64", dependencies: ["OffloadWire", "OffloadEngine", "OffloadCapture", "OffloadForwarder",
                                                     "OffloadSIIT", .product(name: "Logging", package: "swift-log")],
                swiftSettings: strictSettings),
        .target(name: "OffloadTunnel",
                dependencies: ["OffloadWire", "OffloadEngine", "OffloadTUN", "OffloadCapture", "OffloadForwarder",
                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: strictSettings),
        // OpenSSL's libcrypto (Debian's libssl-dev) for the ESP AEADs: in place, no allocation per packet.
        .target(name: "COffloadCrypto", linkerSettings: [.linkedLibrary("crypto")]),
        // Crypto every protocol shares, with no protocol in it: AEAD contexts, secrets, key files, core dumps off.
        .target(name: "OffloadCrypto", dependencies: ["COffloadCrypto"], swiftSettings: strictSettings),
        .target(name: "OffloadIPsec",
                dependencies: ["OffloadWire", "OffloadEngine", "OffloadTunnel", "OffloadCrypto", "COffloadCrypto",
                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: strictSettings),
        .target(name: "OffloadIKE",
                dependencies: ["OffloadWire", "OffloadIPsec", "OffloadCrypto", "COffloadCrypto",
                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: strictSettings + withoutSILDeadCodeElimination),
        // The IKE engine's host: sockets, the TUN device, the tunnel endpoint, timers, the status file.
        .target(name: "OffloadIKEDaemon",
                dependencies: ["OffloadIKE", "OffloadIPsec", "OffloadCrypto", "OffloadTunnel", "OffloadTUN", "OffloadWire",
                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: strictSettings),
        .target(name: "OffloadReport", swiftSettings: swiftSettings),
        .target(name: "OffloadDemo",
                dependencies: ["OffloadWire", "OffloadEngine", "OffloadCapture", "OffloadForwarder", "OffloadSIIT", "OffloadNAT64",
                               "OffloadTunnel", "OffloadIPsec", "OffloadIKE", "OffloadCrypto", .product(name: "Logging", package: "swift-log")],
                swiftSettings: swiftSettings),
        .target(name: "OffloadLab", dependencies: ["OffloadForwarder", "OffloadReport", "OffloadIPsec", "OffloadCrypto"], swiftSettings: swiftSettings),
        .target(name: "OffloadDoctor", dependencies: ["OffloadWire", "OffloadCapture", "OffloadReport"],
                swiftSettings: swiftSettings),
        .executableTarget(
            name: "OffloadCommand",
            dependencies: [
                "OffloadWire", "OffloadEngine", "OffloadCapture", "OffloadTUN", "OffloadForwarder", "OffloadReport",
                "OffloadLab", "OffloadDoctor", "OffloadSIIT", "OffloadNAT64", "OffloadTunnel", "OffloadIPsec", "OffloadIKE", "OffloadIKEDaemon", "OffloadDemo",
                "OffloadCrypto",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings),
        .target(name: "OffloadTestSupport", dependencies: ["OffloadWire", "OffloadEngine", "OffloadTUN", "OffloadTunnel"],
                path: "Tests/OffloadTestSupport",
                swiftSettings: swiftSettings),
        .testTarget(name: "OffloadWireTests", dependencies: ["OffloadWire", "COffloadChecksum", "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "OffloadEngineTests", dependencies: ["OffloadEngine", "OffloadWire", "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "OffloadForwarderTests",
                    dependencies: ["OffloadForwarder", "OffloadTUN", "OffloadEngine", "OffloadWire", "OffloadCapture",
                                   "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "OffloadSIITTests",
                    dependencies: ["OffloadSIIT", "OffloadForwarder", "OffloadEngine", "OffloadWire", "OffloadCapture",
                                   "OffloadDoctor", "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "OffloadNAT64Tests",
                    dependencies: ["OffloadNAT64", "OffloadSIIT", "OffloadForwarder", "OffloadEngine", "OffloadWire",
                                   "OffloadCapture", "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "OffloadTunnelTests",
                    dependencies: ["OffloadCrypto", "OffloadTunnel", "OffloadIPsec", "OffloadForwarder", "OffloadEngine", "OffloadWire", "OffloadCapture",
                                   "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "OffloadIPsecTests",
                    dependencies: ["OffloadCrypto", "OffloadIPsec", "OffloadTunnel", "OffloadForwarder", "OffloadEngine", "OffloadWire",
                                   "OffloadCapture", "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "OffloadIKETests", dependencies: ["OffloadIKE", "OffloadIKEDaemon", "OffloadIPsec", "OffloadCrypto", "OffloadWire",
                                                        "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "OffloadLabTests", dependencies: ["OffloadLab", "OffloadReport", "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "OffloadDoctorTests",
                    dependencies: ["OffloadDoctor", "OffloadCapture", "OffloadWire", "OffloadLab", "OffloadReport",
                                   "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "OffloadCaptureTests",
                    dependencies: ["OffloadCapture", "OffloadEngine", "OffloadWire", "OffloadTestSupport"],
                    swiftSettings: swiftSettings),
    ]
)
