/// How the bench commands summarise and print their figures.
enum BenchTable {
    /// The median of `values` (0 when there are none).
    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// `text` followed by spaces up to `width` characters (at least one).
    static func pad(_ text: String, _ width: Int) -> String {
        text + String(repeating: " ", count: max(1, width - text.count))
    }

    /// A rate as a whole number with thousands separated by commas.
    static func format(_ rate: Double) -> String {
        guard rate.isFinite, abs(rate) < 1e15 else { return "\(rate)" }
        var digits = Array(String(Int(rate.rounded())))
        var index = digits.count - 3
        while index > (digits.first == "-" ? 1 : 0) { digits.insert(",", at: index); index -= 3 }
        return String(digits)
    }

    /// A ratio as a whole percentage.
    static func percent(_ ratio: Double) -> String {
        guard ratio.isFinite, abs(ratio) < 1e12 else { return "-" }
        return "\(Int((ratio * 100).rounded()))%"
    }
}
