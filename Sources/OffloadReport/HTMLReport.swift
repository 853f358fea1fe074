/// A self-contained HTML page: headings, paragraphs, tables and inline SVG charts, with a little
/// CSS and no JavaScript. `offload lab --report` and `offload doctor --report` write these.
public struct HTMLReport: Sendable {
    /// The page title.
    public var title: String
    private var body = ""

    /// Starts a page.
    public init(title: String) { self.title = title }

    /// Adds a heading (level 2 or 3).
    public mutating func heading(_ text: String, level: Int = 2) {
        let l = min(max(level, 2), 4)
        body += "<h\(l)>\(escapeXML(text))</h\(l)>\n"
    }

    /// Adds a paragraph of plain text.
    public mutating func paragraph(_ text: String, className: String? = nil) {
        body += "<p\(className.map { " class=\"\(escapeXML($0))\"" } ?? "")>\(escapeXML(text))</p>\n"
    }

    /// Adds preformatted text.
    public mutating func preformatted(_ text: String) {
        body += "<pre>\(escapeXML(text))</pre>\n"
    }

    /// Adds a bulleted list.
    public mutating func list(_ items: [String]) {
        body += "<ul>\n" + items.map { "<li>\(escapeXML($0))</li>\n" }.joined() + "</ul>\n"
    }

    /// Adds a table; `highlight` rows get the `warn` class.
    public mutating func table(headers: [String], rows: [[String]], highlight: Set<Int> = []) {
        body += "<table class=\"results\">\n<thead><tr>"
            + headers.map { "<th>\(escapeXML($0))</th>" }.joined() + "</tr></thead>\n<tbody>\n"
        for (index, row) in rows.enumerated() {
            body += "<tr\(highlight.contains(index) ? " class=\"warn\"" : "")>"
                + row.map { cell in
                    // Numbers (and "a / b", "1500→1400") align right, words left.
                    let numeric = !cell.isEmpty && cell.allSatisfy { "0123456789.-/ →".contains($0) }
                    return "<td\(numeric ? " class=\"num\"" : "")>\(escapeXML(cell))</td>"
                }.joined() + "</tr>\n"
        }
        body += "</tbody></table>\n"
    }

    /// Adds a chart.
    public mutating func chart(_ chart: SVGChart) {
        body += "<figure>\(chart.render())</figure>\n"
    }

    /// Adds several charts side by side, wrapping.
    public mutating func charts(_ charts: [SVGChart]) {
        body += "<div class=\"charts\">\n" + charts.map { "<figure>\($0.render())</figure>\n" }.joined() + "</div>\n"
    }

    /// The whole page.
    public func render() -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(escapeXML(title))</title>
        <style>
        body { font-family: sans-serif; margin: 2em; max-width: 1400px; color: #222; }
        table.results { border-collapse: collapse; font-size: 13px; }
        table.results th, table.results td { border: 1px solid #bbb; padding: 3px 8px; text-align: left; }
        table.results th { background: #eee; }
        table.results td.num { text-align: right; }
        tr.warn td { background: #fde8e0; }
        div.charts { display: flex; flex-wrap: wrap; gap: 12px; }
        figure { margin: 0; }
        pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }
        </style></head>
        <body>
        <h1>\(escapeXML(title))</h1>
        \(body)</body></html>

        """
    }
}
