import ArgumentParser
import OffloadWire

@main
struct Offload: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "offload", abstract: "GRO/GSO for forwarders")
}
