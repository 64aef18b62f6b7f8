import DaptCore
import DaptTestSupport
import DaptTokenizer
import DaptTrain
import XCTest

/// The shared eval report: one report.json with a section per kind, items
/// and rejects beside it, other sections kept, one model per report.
final class EvalReportTests: XCTestCase {
    func interop(_ path: String) throws -> String {
        try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/interop/" + path, withExtension: nil)).path
    }

    func lines(_ path: String) throws -> [String] {
        String(decoding: try FileSystem.readAll(path), as: UTF8.self).split(separator: "\n").map(String.init)
    }

    func testPerplexityWritesItsSectionAndOtherSectionsAreKept() throws {
        let out = try temporaryDirectory(self) + "/eval"
        let model = try interop("dapt")
        var request = PerplexityRequest(model: model, input: try interop("ppl/eval.jsonl"))
        request.sequenceLength = 32
        let ppl = try PerplexityEvaluation.run(request, output: out)

        var report = try EvalReport.load(directory: out)
        XCTAssertEqual(report["format"]?.string, "dapt-eval-report")
        XCTAssertEqual(report["model"]?["path"]?.string, model)
        XCTAssertEqual(report["model"]?["weights_xxh64"]?.string, try fileChecksum(model + "/model.safetensors"))
        XCTAssertEqual(report["model"]?["tokenizer_xxh64"]?.string, try fileChecksum(model + "/tokenizer.json"))
        let section = try XCTUnwrap(report["sections"]?["ppl"])
        XCTAssertEqual(section["results"]?["loss"]?.double, ppl.loss)
        XCTAssertEqual(section["results"]?["perplexity"]?.double, ppl.perplexity)
        XCTAssertEqual(section["counts"]?["tokens"]?.int, ppl.tokens)
        XCTAssertEqual(section["counts"]?["documents"]?.int, 30)
        XCTAssertEqual(section["config"]?["sequence_length"]?.int, 32)
        XCTAssertEqual(section["inputs"], .array([.string(request.input)]))

        // Another kind's section joins the same report; ppl's stays as it was.
        let mc = EvalSection(kind: .mc, inputs: ["items.csv"], config: .object([("shots", .integer(0))]),
                             counts: [("read", 3)], results: .object([("accuracy", .float(0.5))]),
                             items: [.object([("id", .integer(1))]), .object([("id", .integer(2))])],
                             rejects: [InputError(file: "items.csv", line: 3, field: "answer", reason: "not one of A, B, C, D")])
        try EvalReport.write(mc, model: try EvalModelInfo(modelDirectory: model, tokenizer: model + "/tokenizer.json"), to: out)
        report = try EvalReport.load(directory: out)
        XCTAssertEqual(report["sections"]?.members?.map(\.0), ["ppl", "mc"])
        XCTAssertEqual(report["sections"]?["ppl"], section)
        let mcSection = try XCTUnwrap(report["sections"]?["mc"])
        XCTAssertEqual(mcSection["counts"], .object([("read", .integer(3)), ("items", .integer(2)), ("rejected", .integer(1))]))
        XCTAssertEqual(try lines(out + "/mc.items.jsonl"), [#"{"id":1}"#, #"{"id":2}"#])
        XCTAssertEqual(try lines(out + "/mc.rejects.jsonl"), [mc.rejects[0].rejectJSON])
        XCTAssertTrue(FileSystem.exists(out + "/ppl.items.jsonl"), "the kept section's files move over")

        // Writing ppl again replaces only its own section.
        request.sequenceLength = 16
        try PerplexityEvaluation.run(request, output: out)
        report = try EvalReport.load(directory: out)
        XCTAssertEqual(report["sections"]?.members?.map(\.0), ["ppl", "mc"])
        XCTAssertEqual(report["sections"]?["ppl"]?["config"]?["sequence_length"]?.int, 16)
        XCTAssertEqual(report["sections"]?["mc"], mcSection)
        XCTAssertEqual(try lines(out + "/mc.items.jsonl").count, 2)
    }

    func testReportOnAnotherModelIsRefusedAndLeftAsItWas() throws {
        let out = try temporaryDirectory(self) + "/eval"
        var request = PerplexityRequest(model: try interop("dapt"), input: try interop("ppl/eval.jsonl"))
        request.sequenceLength = 32
        try PerplexityEvaluation.run(request, output: out)
        let before = try FileSystem.readAll(out + "/report.json")

        request.model = try interop("hf")
        request.tokenizer = try interop("dapt/tokenizer.json")
        XCTAssertThrowsError(try PerplexityEvaluation.run(request, output: out)) { error in
            guard case .otherModel(let dir, _, _) = error as? EvalReportError else { return XCTFail("\(error)") }
            XCTAssertEqual(dir, out)
        }
        XCTAssertEqual(try FileSystem.readAll(out + "/report.json"), before)
    }

    func testFolderThatIsNotAReportIsRefused() throws {
        let out = try temporaryDirectory(self)
        try writeLines(["mine"], to: out + "/notes.txt")
        let model = try interop("dapt")
        XCTAssertThrowsError(try EvalReport.write(EvalSection(kind: .json, inputs: [], config: .null, results: .null),
                                                  model: try EvalModelInfo(modelDirectory: model, tokenizer: nil), to: out)) { error in
            XCTAssertEqual(error as? PublishError, .foreignFolder(out))
        }
        XCTAssertEqual(try FileSystem.list(out), ["notes.txt"])
    }
}
