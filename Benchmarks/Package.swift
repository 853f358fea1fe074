// swift-tools-version: 6.1
import PackageDescription

// Benchmarks live in their own package so that `swift test` in the main package never builds
// ordo-one/benchmark (its first build takes minutes). Run from this folder:
//   swift package benchmark                 (ordo-one/benchmark: throughput, malloc counts)
//   swift run -c release offload-compare    (ratios: Swift/C checksum, engine ns/packet)
//   swift run -c release esp-crypto-compare (ESP encryption: the gateway's libcrypto path vs swift-crypto)
//   ../scripts/bench-nat64-sessions.sh      (NAT64 tables: new sessions per second, memory per session, expiry)
//   ../scripts/bench-vs-dpdk.sh             (the same cases against DPDK, in one run)

/// Branch alignment against the Intel JCC erratum (style.md: closes the -O gap on this machine class).
let speed: [SwiftSetting] = [
    .enableExperimentalFeature("Lifetimes"),
    .unsafeFlags(["-Xllvm", "-x86-align-branch-boundary=32", "-Xllvm", "-x86-align-branch=fused+jcc+jmp"]),
]

let package = Package(
    name: "Benchmarks",
    dependencies: [
        .package(name: "swift-offload", path: "../"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // Only to measure the gateway's libcrypto AEADs against swift-crypto's allocating API.
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        .target(name: "CChecksumReference", cSettings: [.unsafeFlags(["-O2"])]),
        .target(name: "CHeapInUse"),
        .target(
            name: "OffloadBenchmarkSupport",
            dependencies: [
                .product(name: "OffloadWire", package: "swift-offload"),
                .product(name: "OffloadEngine", package: "swift-offload"),
            ],
            swiftSettings: speed),
        .executableTarget(
            name: "offload-compare",
            dependencies: [
                "CChecksumReference", "OffloadBenchmarkSupport",
                .product(name: "OffloadWire", package: "swift-offload"),
                .product(name: "OffloadEngine", package: "swift-offload"),
                .product(name: "OffloadForwarder", package: "swift-offload"),
                .product(name: "OffloadSIIT", package: "swift-offload"),
            ],
            swiftSettings: speed),
        .executableTarget(
            name: "esp-crypto-compare",
            dependencies: [
                .product(name: "OffloadWire", package: "swift-offload"),
                .product(name: "OffloadEngine", package: "swift-offload"),
                .product(name: "OffloadTunnel", package: "swift-offload"),
                .product(name: "OffloadIPsec", package: "swift-offload"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: speed),
        .executableTarget(
            name: "nat64-sessions",
            dependencies: [
                "CHeapInUse",
                .product(name: "OffloadWire", package: "swift-offload"),
                .product(name: "OffloadNAT64", package: "swift-offload"),
            ],
            swiftSettings: speed),
        .executableTarget(
            name: "OffloadBenchmarks",
            dependencies: [
                "CChecksumReference", "OffloadBenchmarkSupport",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "OffloadWire", package: "swift-offload"),
                .product(name: "OffloadEngine", package: "swift-offload"),
                .product(name: "OffloadForwarder", package: "swift-offload"),
                .product(name: "OffloadSIIT", package: "swift-offload"),
                .product(name: "OffloadTUN", package: "swift-offload"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/OffloadBenchmarks",
            swiftSettings: speed,
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ]
)
