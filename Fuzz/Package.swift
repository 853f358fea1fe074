// swift-tools-version: 6.2
import PackageDescription

// Coverage-guided fuzz targets (libFuzzer), in their own package so that `swift test` in the main
// package never builds them. Each executable defines `LLVMFuzzerTestOneInput`; libFuzzer supplies
// `main`. Build and run them with ../scripts/fuzz.sh, which passes `-sanitize=fuzzer,address`.

let targets = ["FuzzPacketLayout", "FuzzGRORoundTrip", "FuzzGSO", "FuzzCaptureReader", "FuzzVirtio", "FuzzSIIT", "FuzzTunnel", "FuzzESP", "FuzzIKE", "FuzzIKESession", "FuzzPacketSelectors", "FuzzNAT64"]

let package = Package(
    name: "Fuzz",
    dependencies: [.package(name: "swift-offload", path: "../")],
    targets: [
        .target(name: "FuzzDriver"),
        .target(name: "FuzzSupport")
    ]
        + targets.map { name in
            .executableTarget(
                name: name,
                dependencies: [
                    "FuzzSupport", "FuzzDriver",
                    .product(name: "OffloadWire", package: "swift-offload"),
                    .product(name: "OffloadEngine", package: "swift-offload"),
                    .product(name: "OffloadCapture", package: "swift-offload"),
                    .product(name: "OffloadSIIT", package: "swift-offload"),
                    .product(name: "OffloadNAT64", package: "swift-offload"),
                    .product(name: "OffloadTunnel", package: "swift-offload"),
                    .product(name: "OffloadCrypto", package: "swift-offload"),
                    .product(name: "OffloadIPsec", package: "swift-offload"),
                    .product(name: "OffloadIKE", package: "swift-offload"),
                ],
                swiftSettings: [.unsafeFlags(["-parse-as-library"])])
        }
)
