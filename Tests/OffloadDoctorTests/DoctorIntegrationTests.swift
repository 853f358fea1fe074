import Foundation
import OffloadCapture
import OffloadDoctor
import OffloadLab
import OffloadTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif


let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
let corpus = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/corpus/pcap").path

@Suite("offload doctor on real captures")
struct DoctorIntegrationTests {
    @Test("runs on every corpus capture: a diagnosis, or for the damaged ones a clear capture error; never a crash",
          .enabled(if: pcapCorpusPresent, "the development corpus (../shared/corpus/pcap) is not beside the project"))
    func corpusRuns() throws {
        let files = try #require(FileManager.default.enumerator(atPath: corpus)?.compactMap({ $0 as? String })
            .filter({ $0.hasSuffix(".pcap") || $0.hasSuffix(".pcapng") }).sorted())
        var diagnosed = 0
        for file in files {
            do {
                let d = try Doctor.diagnose(paths: ["\(corpus)/\(file)"])
                diagnosed += 1
                #expect(!DoctorPresentation.text(d).isEmpty)
                _ = try DoctorPresentation.json(d)
                _ = DoctorPresentation.html(d)
            } catch {
                #expect(file.hasPrefix("malformed/"), "\(file): \(error)")
            }
        }
        #expect(diagnosed >= files.count - files.filter { $0.hasPrefix("malformed/") }.count)
        print("doctor: \(diagnosed) of \(files.count) corpus captures diagnosed")
    }

    @Test("the HTML report renders in headless Chromium with time–sequence points, retransmission marks and stall bands",
          .enabled(if: chromiumInstalled, "no Chromium (apt-get install chromium)"))
    func chromium() throws {
        var trace = Trace()
        var seq: UInt32 = 1000
        trace.bulk(from: 0, seq: &seq, count: 100)
        let lost = seq
        trace.tcp(0.1, seq: seq, payload: 1448)
        seq &+= 1448
        trace.tcp(0.6, seq: lost, payload: 1448)
        trace.tcp(0.6005, toServer: false, seq: 1, ack: seq)
        trace.bulk(from: 0.601, seq: &seq, count: 100)
        let d = try diagnose(trace)
        guard let dom = try renderedDOM(ofHTML: DoctorPresentation.html(d), name: "doctor") else { return }
        #expect(!dom.isEmpty, "Chromium rendered the page")
        let points = dom.contains("<g class=\"series\" data-name=\"data\"")
        #expect(points, "time–sequence points")
        let marked = dom.contains("<circle class=\"marker\"")
        #expect(marked, "the retransmission is marked")
        let shaded = dom.contains("<rect class=\"band\"")
        #expect(shaded, "the stall is shaded")
        let lines = dom.contains("<polyline class=\"series\"")
        #expect(lines, "goodput over time")
    }

    @Test("on the lab's captures: LRO behind a smaller MTU is named as a merging black hole; GRO+GSO shows no problem",
          .enabled(if: LabRunner.missingPrerequisites(capture: true) == nil,
                   "\(LabRunner.missingPrerequisites(capture: true) ?? "")"),
          .enabled(if: offloadBuilt, "the offload executable was not built"))
    func labCaptures() throws { try exclusiveNetwork { try labCapturesBody() } }
    func labCapturesBody() throws {
        let offload = try #require(builtExecutable(named: "offload"))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("labcap-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (status, output) = shell("\(offload) lab --scenarios 4,5 --mtus smaller --seconds 1 --json --capture \(dir) 2>/dev/null",
                                     timeout: 240)
        #expect(status == 0, "\(output)")
        struct Document: Decodable { var rows: [LabRow] }
        let rows = (try? JSONDecoder().decode(Document.self, from: Data(output.utf8)))?.rows ?? []
        let groRow = try #require(rows.first { $0.scenario == .forwarderGRO }, "\(output.prefix(500))")
        #expect(groRow.ingressQueueDrops != nil, "the lab reports what the forwarder's queue lost")
        func pair(_ scenario: Int) throws -> [String] {
            let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("scenario\(scenario)-") }
            return ["lan", "wan"].compactMap { side in files.first { $0.contains("-\(side)-") }.map { "\(dir)/\($0)" } }
        }
        let lro = try Doctor.diagnose(paths: try pair(5))
        print(DoctorPresentation.text(lro).split(separator: "\n").prefix(12).joined(separator: "\n"))
        #expect(lro.findings.first?.kind == .pmtuBlackHoleMerging, "\(lro.titles(Array(lro.findings.prefix(3))))")
        #expect(lro.findings.contains { $0.kind == .stall })
        // The doctor and the lab agree on the same row: one definition of fairness over the same
        // test, and the ICMP errors the forwarder counted are those the capture saw (less what
        // tcpdump lost); the forwarder's merges are not called a pass-through.
        let lroRow = try #require(rows.first { $0.scenario == .forwarderLRO })
        let lroForwarder = try #require(lro.forwarder.first)
        let lroMerged = try #require(lro.finding(.forwarderMerged))
        #expect(!lro.titles([lroMerged])[0].contains("without merging"), "\(lro.titles([lroMerged]))")
        // (The forwarder's count also holds the errors it sent after the captures stopped.)
        if let sent = lroRow.icmpSent {
            #expect(lroForwarder.icmpErrors > 0 && lroForwarder.icmpErrors <= sent,
                    "doctor \(lroForwarder.icmpErrors) ICMP errors, lab \(sent)")
        }
        if let jain = lro.jainIndex, lroRow.flows.count > 1 {
            print("LRO row Jain: lab \(lroRow.fairness.jainIndex), doctor \(jain)")
            #expect(abs(jain - lroRow.fairness.jainIndex) <= 0.05, "lab \(lroRow.fairness.jainIndex), doctor \(jain)")
        }
        let gro = try Doctor.diagnose(paths: try pair(4))
        print(DoctorPresentation.text(gro).split(separator: "\n").prefix(12).joined(separator: "\n"))
        // Segments missing between the two captures are the forwarder's only when neither the captures
        // (tcpdump's own drops) nor the kernel's queue in front of the forwarder lost them.
        let explained = (groRow.captureDrops ?? 0) + (groRow.ingressQueueDrops ?? 0)
        // Likewise an ACK seen leaving but not coming in is the forwarder's only when the capture on its
        // way in lost nothing (tcpdump's drops on a loaded machine). When tcpdump could not report
        // (killed before its closing counts, on a loaded machine), what it lost is unknown.
        #expect(gro.findings.contains { $0.kind == .pmtuWorking })
        #expect((gro.forwarder.first?.meanSegmentsPerPacket ?? 0) >= 8)
        guard let captureLost = groRow.captureDrops else {
            print("skipped the loss checks: tcpdump did not report what it lost")
            return
        }
        let problems = gro.findings.filter {
            // Fairness over a 1 s run on a shared machine is a measurement, not a behaviour: the
            // lab and the benchmarks show it; this test asserts what the forwarder did.
            $0.severity != .info && $0.kind != .retransmissions && $0.kind != .unfair
                && !($0.kind == .forwarderDropped && ($0.comparison?.droppedSegments ?? .max) <= explained)
                && !($0.kind == .ackEmitted && ($0.comparison?.acksEmittedOrChanged ?? .max) <= captureLost)
        }
        #expect(problems.isEmpty, "\(gro.titles(problems)); the captures lost \(captureLost)")
        #expect((gro.forwarder.first?.acksEmittedOrChanged ?? .max) <= captureLost)
    }
}

@Suite("offload doctor on the sender's and the receiver's veth")
struct DoctorCaptureSideTests {
    @Test("""
        a capture on the sender's veth with TSO on is never called the receiver's GRO; with tcpdump -i any \
        (which records the direction) each side is named
        """,
          .enabled(if: netnsReady, "\(netnsSkipReason)"),
          .enabled(if: installed("tcpdump") && installed("iperf3") && installed("ethtool"),
                   "needs tcpdump, iperf3 and ethtool"))
    func sides() throws { try exclusiveNetwork { try sidesBody() } }
    func sidesBody() throws {
        let (a, b) = ("dsa\(getpid() % 100_000)", "dsb\(getpid() % 100_000)")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sides-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer {
            _ = shell("ip netns del \(a); ip netns del \(b)")
            try? FileManager.default.removeItem(atPath: dir)
        }
        let setup = shell("""
            ip netns add \(a) && ip netns add \(b) && ip link add va netns \(a) type veth peer name vb netns \(b) && \
            ip -n \(a) addr add 10.9.0.1/24 dev va && ip -n \(b) addr add 10.9.0.2/24 dev vb && \
            ip -n \(a) link set va up && ip -n \(b) link set vb up && ip -n \(b) link set lo up && \
            ip netns exec \(a) ethtool -K va tso on gso on >/dev/null && ip netns exec \(b) ethtool -K vb gro on >/dev/null
            """)
        #expect(setup.status == 0, "\(setup.output)")
        // Four captures at once: each side, on the veth (Ethernet, no direction) and on `any` (cooked, with it).
        let dumps = [("tx-veth", a, "va"), ("tx-any", a, "any"), ("rx-veth", b, "vb"), ("rx-any", b, "any")]
        let start = dumps.map { "ip netns exec \($0.1) tcpdump -i \($0.2) -s 128 -U -w \(dir)/\($0.0).pcap tcp 2>\(dir)/\($0.0).log &" }
            .joined(separator: " ")
        let run = shell("""
            \(start)
            for i in $(seq 100); do [ $(cat \(dir)/*.log 2>/dev/null | grep -c listening) -ge 4 ] && break; sleep 0.05; done
            ip netns exec \(b) timeout 15 iperf3 -s -1 >/dev/null 2>&1 &
            for i in $(seq 100); do ip netns exec \(b) ss -Htln 'sport = :5201' | grep -q 5201 && break; sleep 0.05; done
            ip netns exec \(a) timeout 15 iperf3 -c 10.9.0.2 -t 1 >/dev/null; s=$?
            sleep 0.3; pkill -INT -f 'tcpdump -i .* -w \(dir)/'; wait; exit $s
            """, timeout: 60)
        #expect(run.status == 0, "\(run.output)")
        func point(_ name: String) throws -> Finding.SuperPacketEvidence? {
            let d = try Doctor.diagnose(paths: ["\(dir)/\(name).pcap"])
            return d.findings.first { $0.kind == .superPackets }?.superPackets
        }
        // The sender's veth hands TSO packets over whole, so their ACKs land on their ends, as after
        // GRO: without a recorded direction the doctor must not call this the receiver's side.
        let txVeth = try #require(try point("tx-veth"))
        #expect(txVeth.capturePoint != .afterMerge, "\(txVeth)")
        let txAny = try #require(try point("tx-any"))
        #expect(txAny.capturePoint == .beforeSegmentation && txAny.recordedDirection == .outbound, "\(txAny)")
        let rxAny = try #require(try point("rx-any"))
        #expect(rxAny.capturePoint == .afterMerge && rxAny.recordedDirection == .inbound, "\(rxAny)")
        let rxVeth = try #require(try point("rx-veth"))
        #expect(rxVeth.capturePoint != .beforeSegmentation, "\(rxVeth)")
    }
}
