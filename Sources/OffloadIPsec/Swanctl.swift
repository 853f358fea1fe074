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

    /// One `key = value`. A setting that holds a secret (see ``SwanctlSection/parse(_:secretSections:secretKeys:)``)
    /// prints its value as `<secret>`: described, reflected or dumped.
    public struct Setting: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
        /// The key.
        public var key: String
        /// The value, without quotes.
        public var value: String
        /// Its line.
        public var line: Int
        /// Whether the value is a secret (a key, a pre-shared key, anything in a secret section).
        public var isSecret: Bool

        /// A setting.
        public init(key: String, value: String, line: Int, isSecret: Bool = false) {
            self.key = key
            self.value = value
            self.line = line
            self.isSecret = isSecret
        }

        /// `key = value`, the value redacted when secret.
        public var description: String { "\(key) = \(isSecret ? SwanctlSection.redacted : value)" }
        /// The same as ``description``.
        public var debugDescription: String { description }
        /// Key, line and the value redacted when secret (so that `dump` shows no secret).
        public var customMirror: Mirror {
            Mirror(self, children: ["key": key, "value": isSecret ? SwanctlSection.redacted : value, "line": line])
        }
    }

    /// What an error or a description shows instead of a secret.
    public static let redacted = "<secret>"

    /// The sections whose every token is secret by default: swanctl.conf's `secrets`.
    public static let defaultSecretSections: Set<String> = ["secrets"]
    /// The keys whose values are secret by default, wherever they are: `secret` (swanctl.conf)
    /// and `key` (SA files).
    public static let defaultSecretKeys: Set<String> = ["secret", "key"]

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
    ///
    /// Errors name the line and what was expected. They quote a name only where it cannot be a
    /// secret: never a token inside one of `secretSections` (at any depth), nor the token after a
    /// `secretKeys` setting left empty (a value put on the next line); those show as `<secret>`.
    /// Settings of `secretKeys`, and every setting inside `secretSections`, are marked
    /// ``Setting/isSecret``.
    /// - Throws: ``SyntaxError``.
    public static func parse(_ text: String, secretSections: Set<String> = defaultSecretSections,
                             secretKeys: Set<String> = defaultSecretKeys) throws(SyntaxError) -> SwanctlSection {
        let list = try tokens(text)
        var stack = [SwanctlSection(name: "", line: 0)]
        var i = 0
        // Whether the last setting was a secret key with an empty value: its value may be the next token.
        var afterEmptySecret = false
        func inSecretSection() -> Bool { stack.contains { secretSections.contains($0.name) } }
        /// A token as an error may show it: `name` in backquotes, or `<secret>`.
        func shown(_ name: String) -> String { inSecretSection() || afterEmptySecret ? redacted : "`\(name)`" }
        while i < list.count {
            let (token, line) = list[i]
            if case .word = token {} else if token != .newline { afterEmptySecret = false }
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
                guard i + 1 < list.count else { throw SyntaxError(line: line, message: "\(shown(name)) alone: expected `{` or `= value`") }
                switch list[i + 1].0 {
                case .open:
                    stack.append(SwanctlSection(name: name, line: line))
                    afterEmptySecret = false
                    i += 2
                case .equals:
                    guard stack.count > 1 else { throw SyntaxError(line: line, message: "\(shown(name)) outside any section") }
                    // The value: every word up to the end of the line or a `}`.
                    var words: [String] = []
                    i += 2
                    while i < list.count, case .word(let w) = list[i].0 {
                        words.append(w)
                        i += 1
                    }
                    if i < list.count, list[i].0 == .open || list[i].0 == .equals {
                        throw SyntaxError(line: line, message: "\(shown(name)): a value cannot hold `{` or `=` (quote it)")
                    }
                    let secret = secretKeys.contains(name) || inSecretSection() || afterEmptySecret
                    afterEmptySecret = secretKeys.contains(name) && words.isEmpty
                    stack[stack.count - 1].settings.append(Setting(key: name, value: words.joined(separator: " "), line: line,
                                                                   isSecret: secret))
                default:
                    throw SyntaxError(line: line, message: "\(shown(name)): expected `{` or `= value` after it")
                }
            }
        }
        guard stack.count == 1 else {
            let open = stack.removeLast()
            // The section's own name is secret when it sits inside a secret section.
            throw SyntaxError(line: open.line, message: "section \(shown(open.name)) is not closed")
        }
        return stack[0]
    }
}
