/// A section of text in strongSwan's swanctl.conf syntax (its settings format): `name { ... }`
/// sections, `key = value` settings, `#` comments, values to the end of the line (or a `}` on
/// the same line), quoted strings with `\"`, `\\`, `\n`. The syntax of ``SAFile`` and of
/// `offload ipsec --config`, so that a strongSwan user's file reads as it does in swanctl.
public struct SwanctlSection: Sendable {
    /// The section's name (empty for the whole file).
    public var name: String
    /// The line it opens on.
    public var line: Int
    /// Its settings, in order.
    public var settings: [Setting] = []
    /// Its sub-sections, in order.
    public var sections: [SwanctlSection] = []

    /// One `key = value`.
    public struct Setting: Sendable {
        /// The key.
        public var key: String
        /// The value, without quotes.
        public var value: String
        /// Its line.
        public var line: Int
    }

    /// A section.
    public init(name: String, line: Int) {
        self.name = name
        self.line = line
    }

    /// The value of `key` and its line (the last one given wins, as in swanctl).
    public func value(_ key: String) -> (value: String, line: Int)? {
        settings.last { $0.key == key }.map { ($0.value, $0.line) }
    }

    /// The sub-section `name`.
    public func section(_ name: String) -> SwanctlSection? { sections.first { $0.name == name } }

    /// A syntax error: its line and what is wrong.
    public struct SyntaxError: Error, Sendable {
        /// The line (1-based).
        public var line: Int
        /// What is wrong.
        public var message: String
    }

    enum Token: Equatable {
        case word(String)
        case open, close, equals, newline
    }

    static func tokens(_ text: String) throws(SyntaxError) -> [(Token, Int)] {
        var out: [(Token, Int)] = []
        var line = 1
        var chars = Array(text.unicodeScalars)[...]
        var word = ""
        func flush() {
            if !word.isEmpty { out.append((.word(word), line)) }
            word = ""
        }
        while let c = chars.popFirst() {
            switch c {
            case "#":
                flush()
                while let n = chars.first, n != "\n" { chars.removeFirst() }
            case "\n":
                flush()
                out.append((.newline, line))
                line += 1
            case " ", "\t", "\r":
                flush()
            case "{": flush(); out.append((.open, line))
            case "}": flush(); out.append((.close, line))
            case "=": flush(); out.append((.equals, line))
            case "\"":
                flush()
                var s = ""
                var closed = false
                while let n = chars.popFirst() {
                    if n == "\"" { closed = true; break }
                    if n == "\\", let e = chars.popFirst() {
                        s.unicodeScalars.append(e == "n" ? "\n" : e == "t" ? "\t" : e)
                    } else {
                        if n == "\n" { line += 1 }
                        s.unicodeScalars.append(n)
                    }
                }
                guard closed else { throw SyntaxError(line: line, message: "a quoted string is not closed") }
                out.append((.word(s), line))
            default:
                word.unicodeScalars.append(c)
            }
        }
        flush()
        return out
    }

    /// Parses a whole file into its root section.
    /// - Throws: ``SyntaxError``.
    public static func parse(_ text: String) throws(SyntaxError) -> SwanctlSection {
        let list = try tokens(text)
        var stack = [SwanctlSection(name: "", line: 0)]
        var i = 0
        while i < list.count {
            let (token, line) = list[i]
            switch token {
            case .newline: i += 1
            case .close:
                guard stack.count > 1 else { throw SyntaxError(line: line, message: "`}` without a section to close") }
                let done = stack.removeLast()
                stack[stack.count - 1].sections.append(done)
                i += 1
            case .open, .equals:
                throw SyntaxError(line: line, message: "expected `name {` or `key = value`")
            case .word(let name):
                guard i + 1 < list.count else { throw SyntaxError(line: line, message: "`\(name)` alone: expected `{` or `= value`") }
                switch list[i + 1].0 {
                case .open:
                    stack.append(SwanctlSection(name: name, line: line))
                    i += 2
                case .equals:
                    guard stack.count > 1 else { throw SyntaxError(line: line, message: "`\(name)` outside any section") }
                    // The value: every word up to the end of the line or a `}`.
                    var words: [String] = []
                    i += 2
                    while i < list.count, case .word(let w) = list[i].0 {
                        words.append(w)
                        i += 1
                    }
                    if i < list.count, list[i].0 == .open || list[i].0 == .equals {
                        throw SyntaxError(line: line, message: "`\(name)`: a value cannot hold `{` or `=` (quote it)")
                    }
                    stack[stack.count - 1].settings.append(Setting(key: name, value: words.joined(separator: " "), line: line))
                default:
                    throw SyntaxError(line: line, message: "`\(name)`: expected `{` or `= value` after it")
                }
            }
        }
        guard stack.count == 1 else { throw SyntaxError(line: stack.last!.line, message: "section `\(stack.last!.name)` is not closed") }
        return stack[0]
    }
}
