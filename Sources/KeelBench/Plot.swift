// Keel — a microkernel plugin host. Licensed under Apache-2.0.
//
// Small SVG line charts for the benchmark suite (`--plot DIR`): no dependencies, a log-scaled x axis for plugin
// counts, one panel per measure, side by side.

import Foundation

struct PlotPanel {
    var title: String
    var unit: String
    /// (x, y) points, x > 0 (drawn on a log scale).
    var points: [(x: Double, y: Double)]
}

enum Plot {
    /// Writes `panels` side by side into `path` as an SVG, with `caption` under them.
    static func write(_ panels: [PlotPanel], caption: String, to path: String) throws {
        let (w, h, pad) = (320.0, 220.0, 48.0)
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w) * panels.count)" height="\(Int(h) + 24)" \
            font-family="sans-serif" font-size="11">
            <rect width="100%" height="100%" fill="white"/>

            """
        for (i, panel) in panels.enumerated() where !panel.points.isEmpty {
            let ox = Double(i) * w
            let xs = panel.points.map { log10($0.x) }, ys = panel.points.map(\.y)
            let (x0, x1) = (xs.min() ?? 0, max((xs.max() ?? 1), (xs.min() ?? 0) + 1))
            let y1 = (ys.max() ?? 1) * 1.15
            func px(_ x: Double) -> Double { ox + pad + (log10(x) - x0) / (x1 - x0) * (w - pad - 16) }
            func py(_ y: Double) -> Double { h - pad + 12 - y / max(y1, 1e-9) * (h - pad - 24) }
            svg += "<text x=\"\(ox + w / 2)\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">\(escape(panel.title))</text>\n"
            svg += "<line x1=\"\(ox + pad)\" y1=\"\(py(0))\" x2=\"\(ox + w - 16)\" y2=\"\(py(0))\" stroke=\"#888\"/>\n"
            svg += "<line x1=\"\(ox + pad)\" y1=\"\(py(0))\" x2=\"\(ox + pad)\" y2=\"\(py(y1))\" stroke=\"#888\"/>\n"
            svg += "<text x=\"\(ox + 6)\" y=\"\(py(y1) - 4)\" fill=\"#555\">\(escape(panel.unit))</text>\n"
            for tick in [0, y1 / 2, y1 / 1.15] {
                svg += "<text x=\"\(ox + pad - 4)\" y=\"\(py(tick) + 4)\" text-anchor=\"end\" fill=\"#555\">\(label(tick))</text>\n"
            }
            let line = panel.points.map { "\(px($0.x)),\(py($0.y))" }.joined(separator: " ")
            svg += "<polyline points=\"\(line)\" fill=\"none\" stroke=\"#2563eb\" stroke-width=\"2\"/>\n"
            for p in panel.points {
                svg += "<circle cx=\"\(px(p.x))\" cy=\"\(py(p.y))\" r=\"3\" fill=\"#2563eb\"/>\n"
                svg += "<text x=\"\(px(p.x))\" y=\"\(py(0) + 14)\" text-anchor=\"middle\" fill=\"#555\">\(label(p.x))</text>\n"
                svg += "<text x=\"\(px(p.x))\" y=\"\(py(p.y) - 7)\" text-anchor=\"middle\">\(label(p.y))</text>\n"
            }
        }
        svg += "<text x=\"8\" y=\"\(Int(h) + 16)\" fill=\"#555\">\(escape(caption))</text>\n</svg>\n"
        try svg.write(toFile: path, atomically: true, encoding: .utf8)
    }

    static func label(_ v: Double) -> String {
        if v >= 10_000 { return String(format: "%.0fk", v / 1000) }
        if v >= 100 || v == v.rounded() { return String(format: "%.0f", v) }
        return String(format: "%.1f", v)
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
}
