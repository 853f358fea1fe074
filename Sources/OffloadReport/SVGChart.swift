/// A chart drawn as standalone SVG text: lines or points over a shared x axis, shaded bands
/// (stalls) and markers (retransmissions). No JavaScript and no external resources, so the
/// page that holds it renders anywhere, including a headless browser in a test.
///
/// Every plotted element carries a class the tests look for: `series` (a polyline or a group of
/// points), `band`, `marker`, and `axis`.
public struct SVGChart: Sendable {
    /// How a series is drawn.
    public enum Style: Sendable {
        /// A polyline through the points, in order.
        case line
        /// A small dot per point.
        case points
    }

    /// One named series.
    public struct Series: Sendable {
        /// The legend text.
        public var name: String
        /// The points, x then y, in chart units.
        public var points: [(x: Double, y: Double)]
        /// How it is drawn.
        public var style: Style

        /// Creates a series.
        public init(name: String, points: [(x: Double, y: Double)], style: Style = .line) {
            self.name = name
            self.points = points
            self.style = style
        }
    }

    /// A shaded stretch of the x axis, such as a stall.
    public struct Band: Sendable {
        /// Where it starts and ends on the x axis.
        public var from: Double, to: Double
        /// A tooltip (SVG `<title>`).
        public var label: String

        /// Creates a band.
        public init(from: Double, to: Double, label: String) {
            self.from = from
            self.to = to
            self.label = label
        }
    }

    /// A marked point, such as a retransmission.
    public struct Marker: Sendable {
        /// Its position in chart units.
        public var x: Double, y: Double
        /// A tooltip.
        public var label: String

        /// Creates a marker.
        public init(x: Double, y: Double, label: String) {
            self.x = x
            self.y = y
            self.label = label
        }
    }

    /// The title above the plot.
    public var title: String
    /// The x axis label.
    public var xLabel: String
    /// The y axis label.
    public var yLabel: String
    /// The series, drawn in the palette's colours in order.
    public var series: [Series] = []
    /// Shaded bands, drawn under the series.
    public var bands: [Band] = []
    /// Markers, drawn over the series.
    public var markers: [Marker] = []
    /// Fixed x range; nil fits the data.
    public var xRange: ClosedRange<Double>?
    /// Fixed y range; nil is 0 up to the largest value.
    public var yRange: ClosedRange<Double>?
    /// The size in pixels.
    public var width = 640, height = 240
    /// At most this many points per series are drawn: more are thinned to the largest y per
    /// pixel column, which keeps a million-packet time–sequence graph a few kilobytes.
    public var maximumPointsPerSeries = 1_200

    /// Creates an empty chart.
    public init(title: String, xLabel: String, yLabel: String) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
    }

    /// Colours that stay distinct for the first eight series and for colour-blind readers.
    public static let palette = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"]

    /// The chart as an `<svg>` element.
    public func render() -> String {
        let left = 64.0, right = 16.0, bottom = 40.0
        // The legend runs left to right under the title and wraps onto more rows (each 14 px,
        // added to the chart's height) rather than off the left edge.
        let legend = legendLayout(from: left, to: Double(width) - right)
        let extraRows = Double(max(0, (legend.map(\.row).max() ?? 0)))
        let top = 40.0 + extraRows * 14
        let height = self.height + Int(extraRows * 14)
        let plotWidth = Double(width) - left - right, plotHeight = Double(height) - top - bottom
        let allX = series.flatMap { $0.points.map(\.x) } + bands.flatMap { [$0.from, $0.to] } + markers.map(\.x)
        let allY = series.flatMap { $0.points.map(\.y) } + markers.map(\.y)
        var xr = xRange ?? ((allX.min() ?? 0)...(allX.max() ?? 1))
        if xr.upperBound <= xr.lowerBound { xr = xr.lowerBound...(xr.lowerBound + 1) }
        var yr = yRange ?? (0...max(allY.max() ?? 1, 1e-9))
        if yr.upperBound <= yr.lowerBound { yr = yr.lowerBound...(yr.lowerBound + 1) }
        func px(_ x: Double) -> Double { left + (x - xr.lowerBound) / (xr.upperBound - xr.lowerBound) * plotWidth }
        func py(_ y: Double) -> Double { top + plotHeight - (y - yr.lowerBound) / (yr.upperBound - yr.lowerBound) * plotHeight }
        func f(_ v: Double) -> String { v.isFinite ? String(Int((v * 10).rounded())) .inserting(decimalBefore: 1) : "0" }

        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"\(width)\" height=\"\(height)\" "
            + "viewBox=\"0 0 \(width) \(height)\" font-family=\"sans-serif\" font-size=\"11\">\n"
        out += "<title>\(escapeXML(title))</title>\n"
        out += "<text x=\"\(f(left))\" y=\"16\" font-size=\"13\" font-weight=\"bold\">\(escapeXML(title))</text>\n"
        // Axes, with ticks at the range ends and the middle.
        out += "<g class=\"axis\" stroke=\"#444\" fill=\"none\"><path d=\"M\(f(left)),\(f(top))V\(f(top + plotHeight))H\(f(left + plotWidth))\"/></g>\n"
        for fraction in [0.0, 0.5, 1.0] {
            let xv = xr.lowerBound + fraction * (xr.upperBound - xr.lowerBound)
            let yv = yr.lowerBound + fraction * (yr.upperBound - yr.lowerBound)
            out += "<text x=\"\(f(px(xv)))\" y=\"\(f(top + plotHeight + 14))\" text-anchor=\"middle\">\(tick(xv))</text>"
            out += "<text x=\"\(f(left - 4))\" y=\"\(f(py(yv) + 4))\" text-anchor=\"end\">\(tick(yv))</text>\n"
        }
        out += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(height - 6)\" text-anchor=\"middle\">\(escapeXML(xLabel))</text>\n"
        out += "<text transform=\"translate(12,\(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">"
            + "\(escapeXML(yLabel))</text>\n"
        for band in bands {
            let x0 = px(max(band.from, xr.lowerBound)), x1 = px(min(band.to, xr.upperBound))
            out += "<rect class=\"band\" x=\"\(f(x0))\" y=\"\(f(top))\" width=\"\(f(max(x1 - x0, 1)))\" "
                + "height=\"\(f(plotHeight))\" fill=\"#d55e00\" fill-opacity=\"0.15\"><title>\(escapeXML(band.label))</title></rect>\n"
        }
        for (index, s) in series.enumerated() {
            let colour = Self.palette[index % Self.palette.count]
            let points = thinned(s.points, xr: xr, plotWidth: plotWidth)
            switch s.style {
            case .line:
                let coordinates = points.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
                out += "<polyline class=\"series\" data-name=\"\(escapeXML(s.name))\" fill=\"none\" stroke=\"\(colour)\" "
                    + "stroke-width=\"1.5\" points=\"\(coordinates)\"><title>\(escapeXML(s.name))</title></polyline>\n"
            case .points:
                out += "<g class=\"series\" data-name=\"\(escapeXML(s.name))\" fill=\"\(colour)\"><title>\(escapeXML(s.name))</title>"
                for p in points { out += "<rect x=\"\(f(px(p.x) - 1))\" y=\"\(f(py(p.y) - 1))\" width=\"2\" height=\"2\"/>" }
                out += "</g>\n"
            }
        }
        for marker in markers.prefix(500) {
            out += "<circle class=\"marker\" cx=\"\(f(px(marker.x)))\" cy=\"\(f(py(marker.y)))\" r=\"3\" fill=\"none\" "
                + "stroke=\"#d00\" stroke-width=\"1.5\"><title>\(escapeXML(marker.label))</title></circle>\n"
        }
        for entry in legend {
            let y = 22.0 + Double(entry.row) * 14
            out += "<g class=\"legend\"><rect x=\"\(f(entry.x))\" y=\"\(f(y))\" width=\"10\" height=\"10\" "
                + "fill=\"\(Self.palette[entry.index % Self.palette.count])\"/><text x=\"\(f(entry.x + 13))\" "
                + "y=\"\(f(y + 9))\">\(escapeXML(series[entry.index].name))</text></g>\n"
        }
        out += "</svg>"
        return out
    }

    /// Where each series' legend entry goes (none for a single series): left to right from `from`,
    /// a new row when the next would pass `to`. Text width is estimated at 6.5 px a character.
    func legendLayout(from: Double, to: Double) -> [(index: Int, x: Double, row: Int)] {
        guard series.count > 1 else { return [] }
        var out: [(index: Int, x: Double, row: Int)] = []
        var x = from, row = 0
        for (index, s) in series.enumerated() {
            let w = Double(s.name.count) * 6.5 + 22
            if x + w > to && x > from {
                x = from
                row += 1
            }
            out.append((index, x, row))
            x += w
        }
        return out
    }

    /// Keeps at most `maximumPointsPerSeries` points: the highest y in each pixel column, in x order.
    private func thinned(_ points: [(x: Double, y: Double)], xr: ClosedRange<Double>, plotWidth: Double)
        -> [(x: Double, y: Double)]
    {
        guard points.count > maximumPointsPerSeries else { return points }
        let columns = max(1, min(maximumPointsPerSeries, Int(plotWidth)))
        var best = [(x: Double, y: Double)?](repeating: nil, count: columns)
        let span = xr.upperBound - xr.lowerBound
        for p in points {
            let column = min(columns - 1, max(0, Int((p.x - xr.lowerBound) / span * Double(columns))))
            if best[column] == nil || best[column]!.y < p.y { best[column] = p }
        }
        return best.compactMap { $0 }
    }
}

/// A short tick label: at most three significant digits, k/M/G suffixes.
func tick(_ v: Double) -> String {
    let a = abs(v)
    if a >= 1e9 { return trim(v / 1e9) + "G" }
    if a >= 1e6 { return trim(v / 1e6) + "M" }
    if a >= 1e4 { return trim(v / 1e3) + "k" }
    return trim(v)
}

private func trim(_ v: Double) -> String {
    let rounded = abs(v) >= 10 ? v.rounded() : (v * 100).rounded() / 100
    if rounded == rounded.rounded() { return String(Int(rounded)) }
    return String(rounded)
}

extension String {
    /// "1234" with a decimal point before the last `digits` digits: "123.4" (for fixed-point output).
    fileprivate func inserting(decimalBefore digits: Int) -> String {
        var s = self
        let negative = s.hasPrefix("-")
        if negative { s.removeFirst() }
        while s.count <= digits { s = "0" + s }
        let cut = s.index(s.endIndex, offsetBy: -digits)
        let fraction = s[cut...]
        let whole = String(s[..<cut])
        let body = fraction.allSatisfy { $0 == "0" } ? whole : whole + "." + fraction
        return negative ? "-" + body : body
    }
}

/// Escapes text for XML and HTML content and attribute values.
public func escapeXML(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for c in text {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}
