import DaptCluster
import DaptCore

/// Byte-level BPE training over ranks: each rank counts the pre-tokens of
/// every size-th JSONL line, rank 0 merges the counts, learns the merges and
/// writes tokenizer.json. The result is the same for any number of ranks.
public enum BPETraining {
    public struct Outcome: Sendable {
        /// Records read and their text bytes, over all ranks.
        public var texts = 0
        public var bytes = 0
        /// Lines read, blank lines skipped and bad records rejected (not
        /// strict), over all ranks: lines = texts + blank + rejected.
        public var lines = 0
        public var blankLines = 0
        public var rejected = 0
        /// Where the rejects went (not strict): `rejectsPath(output)`.
        public var rejectsFile: String?
        /// Rank 0 only (0 elsewhere): distinct pre-tokens, and those dropped to stay within max_words.
        public var distinctWords = 0
        public var prunedWords = 0
        public var prunedBelowCount: Int64 = 0
        /// Rank 0 only: the trained vocabulary (special tokens included) and its merges.
        public var vocabularySize = 0
        public var merges = 0
        public var requestedVocabularySize = 0
        public var minFrequency = 0
        public var countSeconds = 0.0
        public var seconds = 0.0
        public var output = ""
        /// Ranks that took part.
        public var ranks = 0

        /// True when the corpus had too few repeated pairs for the vocabulary asked.
        public var vocabularyShort: Bool { vocabularySize < requestedVocabularySize }

        public var shortfall: String {
            "vocabulary \(vocabularySize) is smaller than the \(requestedVocabularySize) asked (vocab_size): the corpus has no more pairs seen at least min_frequency (\(minFrequency)) times"
        }

        /// The lines printed at the end of a run (rank 0).
        public var summary: [String] {
            var lines = [String(format: "counted %d texts (%.1f MB), %d distinct pre-tokens in %.2f s on %d rank(s)", texts, Double(bytes) / 1e6, distinctWords, countSeconds, ranks)]
            if prunedWords > 0 {
                lines.append("dropped \(prunedWords) rare pre-tokens (count <= \(prunedBelowCount)) to stay within max_words")
            }
            lines.append(String(format: "trained %d merges, vocabulary %d, in %.2f s total: %@", merges, vocabularySize, seconds, output))
            if vocabularyShort { lines.append("warning: " + shortfall) }
            lines.append("lines: \(self.lines) = \(texts) texts + \(rejected) rejected + \(blankLines) blank: "
                         + (self.lines == texts + rejected + blankLines ? "ok" : "MISMATCH")
                         + (rejectsFile.map { ", rejects in \($0)" } ?? ""))
            return lines
        }
    }

    /// The rejects file of a run writing `output` (tokenizer.json →
    /// tokenizer.rejects.jsonl, beside it).
    public static func rejectsPath(_ output: String) -> String {
        (output.hasSuffix(".json") ? String(output.dropLast(5)) : output) + ".rejects.jsonl"
    }

    /// Trains on `inputs` (JSONL, read in this order as one corpus) and, on
    /// rank 0, writes the tokenizer to `output`. Blank lines are skipped and
    /// counted. A bad record ends the run when `config.strict` (the first in
    /// input order, whatever the ranks), else it goes to the rejects file
    /// with `FILE:LINE: field: reason`.
    public static func run(config: TokenizerConfig, inputs: [String], output: String,
                           communicator: any Communicator, sink: any EventSink) throws -> Outcome {
        let started = monotonicSeconds()
        func makeTrainer() -> BPETrainer {
            BPETrainer(vocabSize: config.vocabSize, minFrequency: config.minFrequency,
                       specialTokens: config.specialTokens, preTokenizer: config.preTokenizerKind, maxWords: config.maxWords)
        }
        var trainer = makeTrainer()
        var lineIndex = 0
        var rejectLines: [UInt8] = []
        var firstRejects: [String] = []
        var rejected = 0, blank = 0, lines = 0
        // Under strict, this rank's first problem and its line position in the corpus.
        var strictProblem: (position: Int, error: InputError)?
        var text: [UInt8] = []
        var reader = JSONLText(field: config.textField)
        reading: for path in inputs {
            try LineReader(path: path).forEachLine { number, line in
                defer { lineIndex += 1 }
                guard lineIndex % communicator.size == communicator.rank else { return true }
                lines += 1
                if RecordProblem.isBlank(line) { blank += 1; return true }
                do {
                    try reader.extract(line, into: &text)
                } catch let bad as RecordProblem {
                    let problem = bad.located(file: path, line: number)
                    if config.strict { strictProblem = (lineIndex, problem); return false }
                    rejected += 1
                    rejectLines += Array((problem.rejectJSON + "\n").utf8)
                    if firstRejects.count < 10 { firstRejects.append("rejected \(problem)") }
                    return true
                }
                text.withUnsafeBufferPointer { trainer.add(text: $0) }
                return true
            }
            if strictProblem != nil { break reading }
        }
        // Every rank learns the first problem in input order and stops with it.
        if config.strict { try FirstBadRecord.agree(strictProblem, communicator) }
        // Rank 0 reports the first rejects of every rank and writes them all.
        if let all = try communicator.gather(firstRejects.joined(separator: "\n"), root: 0) {
            for message in all.flatMap({ $0.split(separator: "\n") }) {
                sink.report(.notice(stage: "tokenizer", message: String(message)))
            }
        }
        let allRejects = try communicator.gatherV(rejectLines, root: 0)
        var outcome = Outcome()
        if !config.strict {
            outcome.rejectsFile = rejectsPath(output)
            if let allRejects {
                let writer = try FileWriter(path: rejectsPath(output), atomic: true)
                for part in allRejects { try writer.write(part) }
                try writer.commit()
            }
        }
        outcome.ranks = communicator.size
        outcome.lines = Int(try communicator.allReduce(Int64(lines), op: .sum))
        outcome.blankLines = Int(try communicator.allReduce(Int64(blank), op: .sum))
        outcome.rejected = Int(try communicator.allReduce(Int64(rejected), op: .sum))
        outcome.texts = Int(try communicator.allReduce(Int64(trainer.textsSeen), op: .sum))
        outcome.bytes = Int(try communicator.allReduce(Int64(trainer.bytesSeen), op: .sum))
        outcome.requestedVocabularySize = config.vocabSize
        outcome.minFrequency = config.minFrequency
        outcome.output = output
        if communicator.size > 1, let parts = try communicator.gatherV(trainer.serializedCounts(), root: 0) {
            trainer = makeTrainer()
            for part in parts { trainer.merge(serializedCounts: part) }
        }
        outcome.countSeconds = monotonicSeconds() - started
        if communicator.rank == 0 {
            outcome.distinctWords = trainer.distinctWords
            outcome.prunedWords = trainer.prunedWords
            outcome.prunedBelowCount = trainer.prunedBelowCount
            let tokenizer = try trainer.train { done in sink.report(.progress(stage: "tokenizer", done: done, total: nil, unit: "merges")) }
            try tokenizer.save(path: output)
            outcome.vocabularySize = tokenizer.vocabSize
            outcome.merges = tokenizer.merges.count
            if outcome.vocabularyShort { sink.report(.warning(stage: "tokenizer", message: outcome.shortfall)) }
        }
        // No rank returns before the tokenizer is written.
        try communicator.barrier()
        outcome.seconds = monotonicSeconds() - started
        return outcome
    }
}

