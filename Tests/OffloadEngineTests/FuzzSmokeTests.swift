import Foundation
import OffloadTestSupport
import Testing

/// The package's root directory (this file is Tests/OffloadEngineTests/FuzzSmokeTests.swift).
private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

@Suite("Fuzz targets (libFuzzer), briefly")
struct FuzzSmokeTests {
    // Building the targets with the sanitizers takes minutes: CI does it, a local `swift test`
    // only when asked (FUZZ_SMOKE=1). scripts/fuzz.sh runs them for longer.
    @Test("Every fuzz target builds with -sanitize=fuzzer,address and runs 5 s with no crash and no oracle failure",
          .enabled(if: ProcessInfo.processInfo.environment["CI"] != nil || ProcessInfo.processInfo.environment["FUZZ_SMOKE"] != nil,
                   "the fuzz smoke run needs CI=true or FUZZ_SMOKE=1 (it builds the Fuzz package)"))
    func fuzzBriefly() {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-smoke-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        // The sanitizer build keeps both cores busy for minutes: not while a namespace test measures
        // TCP (on a loaded two-core machine the lab's flows turn unfair).
        let (status, output) = exclusiveNetwork {
            shell("FUZZ_OUT=\(work) \(packageRoot)/scripts/fuzz.sh 5 2>&1", timeout: 1_200)
        }
        #expect(status == 0, "scripts/fuzz.sh failed:\n\(output.suffix(4_000))")
        // Every target ran and reported its executions.
        for target in ["FuzzPacketLayout", "FuzzGRORoundTrip", "FuzzGSO", "FuzzCaptureReader", "FuzzVirtio", "FuzzSIIT", "FuzzTunnel", "FuzzESP", "FuzzIKE", "FuzzNAT64"] {
            let line = output.split(separator: "\n").first { $0.hasPrefix("\(target) executions=") }
            let runs = line.flatMap { Int($0.split(separator: " ")[1].dropFirst("executions=".count)) } ?? 0
            #expect(runs > 10, "\(target) ran \(runs) inputs")
        }
    }
}
