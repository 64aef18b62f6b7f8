import DaptCore
import DaptTestSupport
import DaptTokenizer
import DaptTrain
import Foundation
import XCTest

/// `dapt eval mc`: item files, prompts, scoring against transformers
/// (Fixtures/mc from scripts/fixtures/mc_parity.py), accuracy and the report.
final class MultipleChoiceTests: XCTestCase {
    struct Expected: Decodable {
        struct Case: Decodable { var format: String; var shots: Int; var items: [Item] }
        struct Item: Decodable {
            var prompt: String; var context_ids: [UInt32]; var continuation_ids: [[UInt32]]
            var loglikelihoods: [Double]; var pick: String; var answer: String
        }
        var cases: [Case]
    }

    func fixture(_ path: String) throws -> String {
        try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/mc/" + path, withExtension: nil)).path
    }

    func expected() throws -> Expected {
        try JSONDecoder().decode(Expected.self, from: Data(try FileSystem.readAll(try fixture("expected.json"))))
    }

    func item(_ q: String, _ choices: [String], _ answer: Int, id: String? = nil) -> MultipleChoiceItem {
        MultipleChoiceItem(file: "f.csv", line: 1, id: id, question: q, choices: choices, answer: answer)
    }

    // MARK: prompts

    func testZeroAndFewShotPromptsAreExact() {
        let shots = [item("What is 1+1?", ["1", "2", "3", "4"], 1), item("  Which is red? ", ["sky", "grass", "blood", "snow"], 2)]
        let question = item("Is a claim, \"broad\"?", ["yes", "no", "maybe", "never"], 0)
        XCTAssertEqual(MultipleChoicePrompt.prompt(question, shots: [], format: .mmlu, subject: "patent law"),
                       "The following are multiple choice questions (with answers) about patent law.\n\n"
                       + "Is a claim, \"broad\"?\nA. yes\nB. no\nC. maybe\nD. never\nAnswer:")
        XCTAssertEqual(MultipleChoicePrompt.prompt(question, shots: shots[...], format: .mmlu, subject: "patent law"),
                       "The following are multiple choice questions (with answers) about patent law.\n\n"
                       + "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
                       + "Which is red?\nA. sky\nB. grass\nC. blood\nD. snow\nAnswer: C\n\n"
                       + "Is a claim, \"broad\"?\nA. yes\nB. no\nC. maybe\nD. never\nAnswer:")
        XCTAssertEqual(MultipleChoicePrompt.prompt(question, shots: shots.prefix(1), format: .ceval, subject: "专利法"),
                       "以下是中国关于专利法考试的单项选择题，请选出其中的正确答案。\n\n"
                       + "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\n答案： B\n\n"
                       + "Is a claim, \"broad\"?\nA. yes\nB. no\nC. maybe\nD. never\n答案：")
    }

    // MARK: items

    func testRowsBecomeItemsOrRejectsNamingFileLineAndField() throws {
        let records = try CSV.parse(Array("q1,a,b,c,d,A\nq2,a,b,c,d\n\"q3\nmore\",a,b,c,d,E\n,a,b,c,d,B\nq5,a,,c,d,B\nq6,a,b,c,d, D\n".utf8), file: "s_test.csv")
        let read = try MultipleChoiceData.items(records: records, format: .mmlu, file: "s_test.csv", strict: false)
        XCTAssertEqual(read.items.map(\.question), ["q1", "q6"])
        XCTAssertEqual(read.items.map(\.answer), [0, 3])
        XCTAssertEqual(read.items.map(\.line), [1, 7])
        XCTAssertEqual(read.rejects.map(\.description), [
            "s_test.csv:2: 5 fields, expected 6 (question,A,B,C,D,answer)",
            "s_test.csv:4: answer: \"E\" is not one of A, B, C, D",
            "s_test.csv:5: question: empty",
            "s_test.csv:6: B: empty choice",
        ])
        XCTAssertThrowsError(try MultipleChoiceData.items(records: records, format: .mmlu, file: "s_test.csv", strict: true)) { error in
            XCTAssertEqual((error as? InputError)?.description, "s_test.csv:2: 5 fields, expected 6 (question,A,B,C,D,answer)")
        }
        let ceval = try CSV.parse(Array("id,question,A,B,C,D,answer\n7,问,甲,乙,丙,丁,C\n8,问,甲,乙,丙,丁,C,解释,多余\n".utf8), file: "x_val.csv")
        XCTAssertEqual(MultipleChoiceFormat.detect(ceval), .ceval)
        let cevalRead = try MultipleChoiceData.items(records: ceval, format: .ceval, file: "x_val.csv", strict: false)
        XCTAssertEqual(cevalRead.items.map(\.id), ["7"])
        XCTAssertEqual(cevalRead.rejects.map(\.description), ["x_val.csv:3: 9 fields, expected 7 or 8 (id,question,A,B,C,D,answer,explanation)"])
    }

    func testFormatsAreDetectedAndMustAgree() throws {
        let dir = try temporaryDirectory(self)
        try writeLines(["q,a,b,c,d,A"], to: dir + "/one_test.csv")
        try writeLines(["id,question,A,B,C,D,answer", "1,q,a,b,c,d,A"], to: dir + "/two_test.csv")
        XCTAssertThrowsError(try MultipleChoiceData.load(input: dir, format: nil, devDirectory: nil, strict: false)) { error in
            XCTAssertEqual((error as? InputError)?.description, "\(dir)/two_test.csv:1: looks like ceval (header present), but the first file is mmlu")
        }
        let one = try MultipleChoiceData.load(input: dir + "/one_test.csv", format: nil, devDirectory: nil, strict: false)
        XCTAssertEqual(one.format, .mmlu)
        XCTAssertEqual(one.subjects.map(\.displayName), ["one"])
    }

    // MARK: scoring

    func testLogLikelihoodsEqualTransformers() throws {
        var worst = 0.0
        for c in try expected().cases {
            var request = MultipleChoiceRequest(model: try fixture("model"), input: try fixture(c.format))
            request.shots = c.shots
            let report = try MultipleChoiceEvaluation.run(request)
            XCTAssertEqual(report.format.rawValue, c.format)
            XCTAssertEqual(report.results.count, c.items.count)
            XCTAssertEqual(report.rejects.count, 0)
            let tokenizer = try BPETokenizer.load(path: try fixture("model/tokenizer.json"))
            let subject = c.format == "mmlu" ? "toy physics" : "法学"
            for (result, want) in zip(report.results, c.items) {
                let format = try XCTUnwrap(MultipleChoiceFormat(rawValue: c.format))
                let dev = try MultipleChoiceData.load(input: try fixture(c.format), format: format, devDirectory: nil, strict: true).subjects[0].dev
                XCTAssertEqual(MultipleChoicePrompt.prompt(result.item, shots: dev.prefix(c.shots), format: format, subject: subject), want.prompt)
                XCTAssertEqual(tokenizer.encode(want.prompt), want.context_ids, "dapt's tokenizer and `tokenizers` agree on the prompt")
                XCTAssertEqual(result.promptTokens, want.context_ids.count)
                XCTAssertEqual(result.shots, c.shots)
                for (got, ref) in zip(result.logLikelihoods, want.loglikelihoods) {
                    XCTAssertEqual(got, ref, accuracy: 1e-4, "\(c.format) \(c.shots)-shot line \(result.item.line)")
                    worst = max(worst, abs(got - ref))
                }
                XCTAssertEqual(MultipleChoiceData.letters[result.pick], want.pick)
                XCTAssertEqual(MultipleChoiceData.letters[result.item.answer], want.answer)
            }
        }
        print("eval mc parity: largest log-likelihood difference to transformers \(worst)")
    }

    /// Continuations sharing their tokens before the last share a row: the
    /// same log-likelihoods as a row per continuation.
    func testSharedContextPassEqualsOneRowPerContinuation() throws {
        let directory = try ModelDirectory.resolve(try fixture("model"))
        let scoring = MultipleChoiceScoring(model: try directory.loadModel(), tokenizer: try BPETokenizer.load(path: try fixture("model/tokenizer.json")),
                                            maxLength: 768)
        let item = try XCTUnwrap(try expected().cases.first?.items.first)
        // One-token ones share the context's row; [39, 72] and [39, 73] share context + 39; [72, 73, 74] has its own.
        let continuations: [[UInt32]] = [[72], [73], [74], [75], [39], [39, 72], [39, 73], [72, 73, 74]]
        let shared = try scoring.logLikelihoods(context: item.context_ids, continuations: continuations)
        let rows = try scoring.logLikelihoods(context: item.context_ids, continuations: continuations, sharedContext: false)
        XCTAssertEqual(shared.count, 8)
        for (a, b) in zip(shared, rows) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        XCTAssertGreaterThan(Set(shared.map { ($0 * 1000).rounded() }).count, 1, "the choices differ")
    }

    /// Prompts scored several per forward pass (sorted by length, padded)
    /// get the log-likelihoods they get alone, within 1e-5, in their own
    /// order: one-token continuations (a row per context) and the fixture's
    /// two-token ones (a space shared by the four: one row per context too);
    /// and they equal a row per continuation scored alone (the path the
    /// transformers fixture checks) within 1e-4.
    func testBatchedScoringEqualsOnePromptAtATime() throws {
        let directory = try ModelDirectory.resolve(try fixture("model"))
        let scoring = MultipleChoiceScoring(model: try directory.loadModel(), tokenizer: try BPETokenizer.load(path: try fixture("model/tokenizer.json")),
                                            maxLength: 768)
        var prompts: [(context: [UInt32], continuations: [[UInt32]])] = []
        for c in try expected().cases {
            for (k, item) in c.items.enumerated() {
                // Alternate the two kinds so a batch's order differs from the prompts'.
                prompts.append(k % 2 == 0 ? (item.context_ids, [[72], [73], [74], [75]])
                                          : scoring.encode(context: item.prompt, continuations: MultipleChoicePrompt.continuations))
            }
        }
        XCTAssertGreaterThan(Set(prompts.map(\.context.count)).count, 4, "prompts of several lengths")
        XCTAssertTrue(prompts.contains { $0.continuations.contains { $0.count > 1 } })
        let alone = try prompts.map { try scoring.logLikelihoods(context: $0.context, continuations: $0.continuations) }
        let separate = try prompts.map { try scoring.logLikelihoods(context: $0.context, continuations: $0.continuations, sharedContext: false) }
        for (a, b) in zip(alone.joined(), separate.joined()) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        for batchSize in [1, 3, 8] {
            var passes = 0, scored = 0
            let batched = try scoring.logLikelihoods(prompts, batchSize: batchSize) { passes += 1; scored += $0 }
            XCTAssertEqual(scored, prompts.count)
            XCTAssertEqual(passes, (prompts.count + batchSize - 1) / batchSize)
            // Other batch shapes round differently in float32: within 1e-5 of
            // the value's size (a log-likelihood of -12.7 moved by 1.1e-5 at batch 8).
            for (got, want) in zip(batched, alone) {
                XCTAssertEqual(got.count, want.count)
                for (a, b) in zip(got, want) { XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, abs(b)), "batch size \(batchSize)") }
            }
        }
        // The whole evaluation: same picks and log-likelihoods at batch sizes 1 and 5.
        var request = MultipleChoiceRequest(model: try fixture("model"), input: try fixture("mmlu"))
        request.shots = 2
        request.batchSize = 1
        let one = try MultipleChoiceEvaluation.run(request)
        request.batchSize = 5
        let five = try MultipleChoiceEvaluation.run(request)
        XCTAssertEqual(one.results.map(\.item), five.results.map(\.item))
        for (a, b) in zip(one.results, five.results) {
            for (x, y) in zip(a.logLikelihoods, b.logLikelihoods) { XCTAssertEqual(x, y, accuracy: 1e-5 * max(1, abs(y))) }
        }
        request.batchSize = 0
        XCTAssertThrowsError(try MultipleChoiceEvaluation.run(request)) { XCTAssertTrue("\($0)".contains("--batch-size"), "\($0)") }
    }

    func testLongPromptsDropExamplesThenGoToRejects() throws {
        let cases = try expected().cases
        let zero = try XCTUnwrap(cases.first { $0.format == "mmlu" && $0.shots == 0 })
        let two = try XCTUnwrap(cases.first { $0.format == "mmlu" && $0.shots == 2 })
        // Room for every item with no examples (the model sees the prompt and
        // all but the last continuation token), but not for two examples.
        let longestAlone = zero.items.map { $0.context_ids.count + 1 }.max()!
        XCTAssertLessThan(longestAlone, two.items.map { $0.context_ids.count + 1 }.min()!)
        var request = MultipleChoiceRequest(model: try fixture("model"), input: try fixture("mmlu"))
        request.shots = 2
        request.maxLength = longestAlone
        var report = try MultipleChoiceEvaluation.run(request)
        XCTAssertEqual(report.results.count, 6)
        XCTAssertEqual(report.truncatedShots, 6)
        XCTAssertTrue(report.results.allSatisfy { $0.shots < 2 })
        for (r, want) in zip(report.results, zero.items) where r.shots == 0 {
            for (got, ref) in zip(r.logLikelihoods, want.loglikelihoods) { XCTAssertEqual(got, ref, accuracy: 1e-4) }
        }

        // One token less: the longest question no longer fits even alone.
        request.maxLength = longestAlone - 1
        report = try MultipleChoiceEvaluation.run(request)
        XCTAssertEqual(report.read, 6)
        XCTAssertEqual(report.results.count + report.rejects.count, 6)
        // Item k of the file starts on line k + 1.
        let tooLong = zero.items.indices.filter { zero.items[$0].context_ids.count + 1 == longestAlone }
        XCTAssertEqual(report.rejects.map(\.line), tooLong.map { $0 + 1 })
        let reject = try XCTUnwrap(report.rejects.first)
        XCTAssertTrue(reject.file.hasSuffix("toy_physics_test.csv"))
        XCTAssertEqual(reject.field, "question")
        XCTAssertEqual(reject.reason, "the prompt is \(longestAlone) tokens without examples, more than the model's \(longestAlone - 1)")
    }

    // MARK: accuracy and report

    func testAccuracyPerSubjectMicroAndMacro() {
        func result(_ subject: String, answer: Int, lls: [Double]) -> MultipleChoiceResult {
            MultipleChoiceResult(subject: subject, item: item("q", ["a", "b", "c", "d"], answer), shots: 0, promptTokens: 1, logLikelihoods: lls)
        }
        let results = [
            result("law", answer: 0, lls: [-1, -2, -3, -4]),   // right
            result("law", answer: 1, lls: [-1, -2, -3, -4]),   // wrong
            result("law", answer: 0, lls: [-2, -2, -3, -4]),   // tie: the first wins, right
            result("law", answer: 3, lls: [-4, -3, -2, -1]),   // right
            result("math", answer: 2, lls: [-4, -3, -2.5, -2.5]),  // tie C/D: C, right
            result("math", answer: 0, lls: [-4, -3, -2, -1]),  // wrong
        ]
        let a = MultipleChoiceEvaluation.accuracy(subjects: ["law", "math", "empty"], results: results, rejected: ["empty": 2])
        XCTAssertEqual(a.subjects.map(\.items), [4, 2, 0])
        XCTAssertEqual(a.subjects.map(\.correct), [3, 1, 0])
        XCTAssertEqual(a.subjects.map(\.rejected), [0, 0, 2])
        XCTAssertEqual(a.micro, 4.0 / 6.0, accuracy: 1e-12)
        XCTAssertEqual(a.macro, (0.75 + 0.5) / 2, accuracy: 1e-12, "subjects without scored items do not count")
    }

    func testReportHoldsTheSectionItemsAndRejects() throws {
        let dir = try temporaryDirectory(self)
        try writeLines(try String(contentsOfFile: try fixture("mmlu/toy_physics_test.csv"), encoding: .utf8)
            .split(separator: "\r\n", omittingEmptySubsequences: true).map(String.init) + ["bad row,a,b,c,d,Z"], to: dir + "/toy_physics_test.csv")
        let out = dir + "/eval"
        var request = MultipleChoiceRequest(model: try fixture("model"), input: dir + "/toy_physics_test.csv")
        request.shots = 2
        request.devDirectory = try fixture("mmlu")
        let report = try MultipleChoiceEvaluation.run(request, output: out)
        XCTAssertEqual(report.read, 7)
        let json = try EvalReport.load(directory: out)
        XCTAssertEqual(json["model"]?["tokenizer_xxh64"]?.string, try fileChecksum(try fixture("model/tokenizer.json")))
        let mc = try XCTUnwrap(json["sections"]?["mc"])
        XCTAssertEqual(mc["config"]?["format"]?.string, "mmlu")
        XCTAssertEqual(mc["config"]?["shots"]?.int, 2)
        XCTAssertEqual(mc["counts"], .object([("read", .integer(7)), ("scored", .integer(6)), ("shots_truncated", .integer(0)),
                                              ("items", .integer(6)), ("rejected", .integer(1))]))
        let two = try XCTUnwrap(try expected().cases.first { $0.format == "mmlu" && $0.shots == 2 })
        let correct = zip(two.items.map(\.pick), two.items.map(\.answer)).filter { $0 == $1 }.count
        XCTAssertEqual(mc["results"]?["correct"]?.int, correct)
        XCTAssertEqual(mc["results"]?["accuracy_micro"]?.double ?? -1, Double(correct) / 6, accuracy: 1e-12)
        XCTAssertEqual(mc["results"]?["subjects"]?["toy_physics"]?["rejected"]?.int, 1)
        let items = String(decoding: try FileSystem.readAll(out + "/mc.items.jsonl"), as: UTF8.self).split(separator: "\n")
        XCTAssertEqual(items.count, 6)
        let first = try JSONValue.parse(String(items[0]))
        XCTAssertEqual(first["pick"]?.string, two.items[0].pick)
        XCTAssertEqual(first["line"]?.int, 1)
        XCTAssertEqual(first["loglikelihoods"]?.array?.count, 4)
        let rejects = String(decoding: try FileSystem.readAll(out + "/mc.rejects.jsonl"), as: UTF8.self).split(separator: "\n")
        XCTAssertEqual(rejects.count, 1)
        XCTAssertEqual(try JSONValue.parse(String(rejects[0]))["error"]?.string, "\(dir)/toy_physics_test.csv:8: answer: \"Z\" is not one of A, B, C, D")
    }
}
