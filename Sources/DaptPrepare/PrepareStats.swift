/// Counts one rank gathers while it prepares; summed across ranks.
public struct PrepareStats: Equatable, Sendable {
    public static let histogramBins = 8

    /// Input records: JSONL lines that are not blank, and text files.
    public var records = 0
    public var blankLines = 0
    public var patents = 0
    public var steps = 0
    public var paragraphs = 0
    public var fragments = 0
    /// Unicode scalars in fragment texts (overlaps counted in each fragment).
    public var characters = 0
    /// Token cost of fragments in thousandths.
    public var tokenThousandths = 0
    public var rejects = 0
    public var rejectsByReason = [Int](repeating: 0, count: RejectReason.codes.count)
    /// Fragments by token count: bin i holds [i, i+1) × budget/8 (the last also holds any over budget).
    public var histogram = [Int](repeating: 0, count: PrepareStats.histogramBins)
    public var inputBytes = 0
    /// Patents kept by their steps, and patents without steps kept whole
    /// (`keep: description` or `steps_or_description`); they sum to `patents`.
    public var patentsBySteps = 0
    public var patentsByDescription = 0

    public init() {}

    public mutating func add(patent split: SplitPatent) {
        patents += 1
        steps += split.steps
        paragraphs += split.paragraphs
        if split.keptSteps { patentsBySteps += 1 } else { patentsByDescription += 1 }
    }

    public mutating func add(reject: PrepareReject) {
        rejects += 1
        rejectsByReason[RejectReason.codes.firstIndex(of: reject.reason.code)!] += 1
    }

    public mutating func add(fragment f: PreparedFragment, budgetTokens: Int) {
        fragments += 1
        tokenThousandths += f.cost
        var scalars = 0
        for b in f.text where b & 0xC0 != 0x80 { scalars += 1 }
        characters += scalars
        let bin = min(Self.histogramBins - 1, (f.cost / 1000) * Self.histogramBins / budgetTokens)
        histogram[bin] += 1
    }

    public var vector: [Int64] {
        ([records, blankLines, patents, steps, paragraphs, fragments, characters, tokenThousandths, rejects, inputBytes,
          patentsBySteps, patentsByDescription] + rejectsByReason + histogram).map(Int64.init)
    }

    public init(vector v: [Int64]) {
        let x = v.map(Int.init)
        (records, blankLines, patents, steps, paragraphs) = (x[0], x[1], x[2], x[3], x[4])
        (fragments, characters, tokenThousandths, rejects, inputBytes) = (x[5], x[6], x[7], x[8], x[9])
        (patentsBySteps, patentsByDescription) = (x[10], x[11])
        rejectsByReason = Array(x[12..<(12 + RejectReason.codes.count)])
        histogram = Array(x[(12 + RejectReason.codes.count)...])
    }

    public var estimatedTokens: Int { (tokenThousandths + 500) / 1000 }
}
