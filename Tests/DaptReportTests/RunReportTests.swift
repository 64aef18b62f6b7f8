import DaptCore
@testable import DaptReport
import DaptTestSupport
import DaptTrain
import Foundation
import XCTest

/// A run directory laid out as scripts/run-sample.sh writes it, with each
/// stage's outputs cut down to the fields the report reads.
final class RunReportTests: XCTestCase {
    func write(_ text: String, _ path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func filterGroup(bucket: Int, lang: String, count: Int, counts: [Int]) -> String {
        """
        {"bucket": \(bucket), "lang": "\(lang)", "tokens_from": \(bucket * 16), "tokens_below": \(bucket == 1 ? "null" : "\(bucket * 16 + 16)"),
         "count": \(count), "threshold_high": 40.5, "threshold_low": 3.25, "removed_high": 2, "removed_low": 1,
         "perplexity_before": 12.5, "perplexity_after": 11.25,
         "log_perplexity_histogram": {"from": 1.0, "to": 4.0, "counts": \(counts)}}
        """
    }

    /// prepare 12 patents → 40 fragments; dedup 40 → 31 kept + 9 removed;
    /// filter (on 24 of them) 24 = 18 kept + 6 removed; tokenizer 18
    /// documents; pretrain 6 steps with two held-out evaluations, a rollback
    /// and a curriculum change. No finetune, no eval.
    func makeRun() throws -> String {
        let run = try temporaryDirectory(self) + "/run"
        try write("""
            {"records_in": 12, "blank_lines": 1, "patents": 11, "rejects": 1, "steps": 30, "fragments": 40, "estimated_tokens": 900,
             "check": {"records_in": 12, "patents_out": 11, "rejects": 1, "balanced": true}}
            """, run + "/prepare/summary.json")
        try write("""
            {"lines": 40, "blank_lines": 0, "rejected": 0, "records": 40, "removed": 9, "removed_exact": 4, "removed_near": 5,
             "kept": 31, "clusters": 4, "largest_cluster": 5, "cluster_sizes": [[2, 2], [3, 1], [5, 1]],
             "remaining_duplicate_rate": {"upper": 0.0123}}
            """, run + "/dedup/report.json")
        try write("""
            {"lines": 25, "blank_lines": 1, "records": 24, "rejected": 0, "kept": 18, "removed_high": 4, "removed_low": 2,
             "perplexity_before": 22.8773, "perplexity_after": 21.0362, "bucket_edges": [16],
             "groups": [\(filterGroup(bucket: 0, lang: "zh", count: 14, counts: [3, 5, 6])), \(filterGroup(bucket: 1, lang: "en", count: 10, counts: [4, 4, 2]))]}
            """, run + "/filter/report.json")
        try write("""
            {"vocab_size": 512, "lines": 18, "blank_lines": 0, "documents": 18, "rejected": 0, "tokens": 777,
             "languages": {"zh": {"documents": 10, "tokens_per_character": 0.5}, "en": {"documents": 8, "tokens_per_character": 0.25},
                           "other": {"documents": 0, "tokens_per_character": 0}}}
            """, run + "/tokens/manifest.json")
        try write("{}", run + "/tokenizer.json")
        try FileManager.default.createDirectory(atPath: run + "/pretrain", withIntermediateDirectories: true)
        try writeLines([
            #"{"eval_loss":6.5,"eval_ppl":665.1,"step":0}"#,
            #"{"loss":6.4,"lr":0.001,"step":1,"tokens":64}"#,
            #"{"loss":5.9,"lr":0.001,"step":2,"tokens":64}"#,
            #"{"loss":9.5,"lr":0.001,"step":3,"tokens":64}"#,
            #"{"event":"rollback","step":3,"to_step":2,"reason":"spike"}"#,
            #"{"loss":5.5,"lr":0.001,"step":4,"tokens":64}"#,
            #"{"event":"curriculum","step":4,"sequence_length":128}"#,
            #"{"loss":5.1,"lr":0.001,"step":5,"tokens":64}"#,
            #"{"eval_loss":5.0,"eval_ppl":148.4,"loss":4.9,"lr":0.001,"step":6,"tokens":64}"#,
        ], to: run + "/pretrain/metrics.jsonl")
        return run
    }

    func testPageHasEveryStagesCountsAnSVGPerPlotAndTheEvents() throws {
        let run = try makeRun()
        let report = try RunReport.load(directory: run)
        XCTAssertEqual(report.stages.map(\.name), ["prepare", "dedup", "filter", "tokenizer", "pretrain", "finetune", "eval"])
        let prepare = report.stage("prepare")!
        XCTAssertEqual([prepare.recordsIn, prepare.recordsOut, prepare.rejected], [12, 40, 1])
        XCTAssertEqual(prepare.balanced, true)
        let dedup = report.stage("dedup")!
        XCTAssertEqual([dedup.recordsIn, dedup.recordsOut, dedup.removed, dedup.rejected], [40, 31, 9, 0])
        XCTAssertEqual(dedup.balanced, true)
        let filter = report.stage("filter")!
        XCTAssertEqual([filter.recordsIn, filter.recordsOut, filter.removed, filter.rejected], [24, 18, 6, 0])
        XCTAssertEqual(filter.balanced, true)
        XCTAssertEqual(report.stage("tokenizer")!.recordsOut, 18)
        XCTAssertEqual(report.stage("pretrain")!.recordsOut, 6)
        XCTAssertEqual(report.pretrain!.events.map(\.name), ["rollback", "curriculum"])
        XCTAssertEqual(report.pretrain!.events.map(\.step), [3, 4])

        try report.writePage(to: run + "/report.html")
        let page = try String(contentsOfFile: run + "/report.html", encoding: .utf8)
        // One SVG per plot: the duplicate histogram, two filter groups, the pretrain loss curve.
        XCTAssertEqual(page.components(separatedBy: "<svg").count - 1, 4)
        // The stage rows carry the counts and their checks.
        XCTAssertTrue(page.contains("<td>dedup</td><td class=\"n\">40</td><td class=\"n\">31 records</td><td class=\"n\">9</td><td class=\"n\">0</td>"), page)
        XCTAssertEqual(page.components(separatedBy: "<span class=\"ok\">ok</span>").count - 1, 4)
        XCTAssertFalse(page.contains("MISMATCH"))
        // Duplicate clusters of sizes 2, 3, 5 as bars; each filter group's cuts as lines.
        XCTAssertTrue(page.contains("<title>2: 2</title>") && page.contains("<title>5: 1</title>"))
        XCTAssertEqual(page.components(separatedBy: "<title>high cut: ppl 40.5000</title>").count - 1, 2)
        XCTAssertEqual(page.components(separatedBy: "<title>low cut: ppl 3.2500</title>").count - 1, 2)
        // The events are drawn on the loss curve at their steps and listed.
        XCTAssertTrue(page.contains("<title>step 3: rollback to_step=2 reason=spike</title>"), page)
        XCTAssertTrue(page.contains("<title>step 4: curriculum sequence_length=128</title>"))
        XCTAssertTrue(page.contains("<td class=\"n\">4</td><td>curriculum</td><td>sequence_length=128</td>"))
        // Missing stages are said to be missing, not errors.
        XCTAssertTrue(page.contains("eval wrote no report.json"))
        XCTAssertTrue(page.contains("finetune did not run"))

        let summary = report.summaryLines()
        XCTAssertTrue(summary.contains("dedup      40 in, 31 records out, 9 removed, 0 rejected, counts ok → \(run)/dedup"), "\(summary)")
        XCTAssertTrue(summary.contains { $0.hasPrefix("eval       not run (\(run)/eval/report.json not found)") }, "\(summary)")
        XCTAssertTrue(summary.contains("           held-out perplexity (at step): 665.1 (0) → 148.4 (6)"), "\(summary)")
        XCTAssertTrue(summary.contains("           events: 1 curriculum, 1 rollback"), "\(summary)")
    }

    func testMissingStageIsNotedAndCountsThatDoNotAddUpAreFlagged() throws {
        let run = try makeRun()
        try FileManager.default.removeItem(atPath: run + "/dedup")
        // 25 lines - 1 blank = 24 records, but 18 kept + 5 removed.
        let filter = run + "/filter/report.json"
        try write(try String(contentsOfFile: filter, encoding: .utf8).replacingOccurrences(of: "\"removed_low\": 2,", with: "\"removed_low\": 1,"), filter)
        let report = try RunReport.load(directory: run)
        XCTAssertEqual(report.stage("dedup")!.missing, "\(run)/dedup/report.json not found")
        XCTAssertEqual(report.stage("filter")!.balanced, false)
        let page = report.html()
        XCTAssertTrue(page.contains("dedup did not run: no duplicate histogram"))
        XCTAssertEqual(page.components(separatedBy: "<svg").count - 1, 3)
        XCTAssertTrue(page.contains("MISMATCH"))
        XCTAssertTrue(report.summaryLines().contains { $0.hasPrefix("filter     24 in, 18 records out, 5 removed, 0 rejected, COUNTS DO NOT ADD UP") })
    }

    func testEvalSectionsBecomeTables() throws {
        let run = try makeRun()
        try write("""
            {"format": "dapt-eval-report", "version": 1, "model": {"path": "out/pretrain/checkpoint-00000006", "weights_xxh64": "ab"},
             "sections": {
               "ppl": {"counts": {"documents": 5, "items": 5, "rejected": 0}, "results": {"perplexity": 7.6992136, "tokens": 900}},
               "mc": {"counts": {"items": 20, "rejected": 1}, "results": {"accuracy": 0.35, "by_subject": {"law": {"accuracy": 0.5}}}}}}
            """, run + "/eval/report.json")
        try write("", run + "/eval/" + OutputPublisher.marker)
        let report = try RunReport.load(directory: run)
        XCTAssertEqual(report.evalSections.map(\.kind), ["ppl", "mc"])
        XCTAssertEqual(report.evalSections[1].results.map(\.name), ["accuracy", "by_subject.law.accuracy"])
        let page = report.html()
        XCTAssertTrue(page.contains("<h3>ppl</h3>") && page.contains("<h3>mc</h3>"))
        XCTAssertTrue(page.contains("<tr><td>perplexity</td><td>7.699</td></tr>"), page)
        XCTAssertTrue(page.contains("<tr><td>by_subject.law.accuracy</td><td>0.5</td></tr>"), page)
        XCTAssertFalse(page.contains("eval wrote no report.json"))
    }

    /// run-sample.sh evaluates the pretrained model in `eval` and the
    /// finetuned adapter in `eval-json`: the page and the summary say which
    /// adapter each report is on (none for the first).
    func testEachEvalShowsItsAdapter() throws {
        let run = try makeRun()
        try write(#"{"format": "dapt-eval-report", "version": 1, "model": {"path": "out/pretrain", "weights_xxh64": "ab", "adapter": null}, "sections": {"mc": {"counts": {"items": 4, "rejected": 0}, "results": {"accuracy_micro": 0.5}}}}"#,
                  run + "/eval/report.json")
        try write("", run + "/eval/" + OutputPublisher.marker)
        try write(#"{"format": "dapt-eval-report", "version": 1, "model": {"path": "out/pretrain", "weights_xxh64": "ab", "adapter": {"path": "out/finetune", "adapter_model_xxh64": "00c0ffee"}}, "sections": {"json": {"counts": {"items": 3, "rejected": 0}, "results": {"unconstrained": {"records": 3, "json_valid": 0, "json_valid_rate": 0}, "constrained": {"records": 3, "json_valid": 3, "json_valid_rate": 1}}}}}"#,
                  run + "/eval-json/report.json")
        try write("", run + "/eval-json/" + OutputPublisher.marker)
        let report = try RunReport.load(directory: run)
        XCTAssertEqual(report.evals.map(\.name), ["eval", "eval-json"])
        XCTAssertNil(report.evals[0].model.adapterPath)
        XCTAssertEqual(report.evals[1].model.adapterPath, "out/finetune")
        XCTAssertEqual(report.evalSections.map(\.kind), ["mc", "json"])
        let page = report.html()
        XCTAssertTrue(page.contains("<code>eval</code>: model <code>out/pretrain</code> (weights xxh64 ab), adapter none (the model alone)."), page)
        XCTAssertTrue(page.contains("<code>eval-json</code>: model <code>out/pretrain</code> (weights xxh64 ab), adapter <code>out/finetune</code> (adapter_model.safetensors xxh64 00c0ffee)."), page)
        // The adapter line comes before that folder's tables.
        let adapterAt = try XCTUnwrap(page.range(of: "<code>out/finetune</code>")).lowerBound, jsonAt = try XCTUnwrap(page.range(of: "<h3>json</h3>")).lowerBound
        XCTAssertLessThan(adapterAt, jsonAt)
        let summary = report.summaryLines()
        let evalAt = try XCTUnwrap(summary.firstIndex { $0.hasPrefix("eval       ") }), jsonEvalAt = try XCTUnwrap(summary.firstIndex { $0.hasPrefix("eval-json  ") })
        XCTAssertEqual(summary[evalAt + 2], "           adapter: none (the model alone)", "\(summary)")
        XCTAssertEqual(summary[jsonEvalAt + 2], "           adapter: out/finetune (adapter_model.safetensors xxh64 00c0ffee)", "\(summary)")
        // The summary lines show the headline results: accuracy, and each decoding mode's validity past its counts.
        XCTAssertEqual(summary[evalAt + 3], "           mc: accuracy_micro 0.5", "\(summary)")
        XCTAssertEqual(summary[jsonEvalAt + 3], "           json: unconstrained.json_valid_rate 0, constrained.json_valid_rate 1", "\(summary)")
        // An adapter without its checksum is refused, naming the file.
        try write(#"{"format": "dapt-eval-report", "version": 1, "model": {"path": "out/pretrain", "weights_xxh64": "ab", "adapter": {"path": "out/finetune"}}, "sections": {}}"#,
                  run + "/eval-json/report.json")
        XCTAssertThrowsError(try RunReport.load(directory: run)) { error in
            XCTAssertTrue("\(error)".contains(run + "/eval-json/report.json") && "\(error)".contains("model.adapter"), "\(error)")
        }
    }

    /// An evaluation's summary line: loss and perplexity for ppl, the two
    /// accuracies for mc (not the count or a subject's), each mode's two
    /// validity rates for JSON with a schema, else the first four results.
    func testSummaryLinesShowEachEvaluationsHeadline() {
        func names(_ results: [String]) -> [String] { RunReport.headline(results.map { ($0, "1") }).map(\.name) }
        XCTAssertEqual(names(["loss", "perplexity", "tokens"]), ["loss", "perplexity"])
        XCTAssertEqual(names(["accuracy_micro", "accuracy_macro", "correct", "by_subject.law.accuracy"]), ["accuracy_micro", "accuracy_macro"])
        XCTAssertEqual(names(["unconstrained.records", "unconstrained.json_valid_rate", "unconstrained.schema_valid_rate", "unconstrained.fields_correct",
                              "constrained.records", "constrained.json_valid_rate", "constrained.schema_valid_rate"]),
                       ["unconstrained.json_valid_rate", "unconstrained.schema_valid_rate", "constrained.json_valid_rate", "constrained.schema_valid_rate"])
        XCTAssertEqual(names(["a", "b", "c", "d", "e"]), ["a", "b", "c", "d"])
    }

    func testMalformedOutputsNameTheFileAndField() throws {
        let run = try makeRun()
        let filter = run + "/filter/report.json"
        let good = try String(contentsOfFile: filter, encoding: .utf8)
        func failure() -> String {
            do { _ = try RunReport.load(directory: run); return "no error" } catch { return "\(error)" }
        }
        try write(good.replacingOccurrences(of: "\"kept\": 18", with: "\"kept\": \"many\""), filter)
        XCTAssertEqual(failure(), "\(filter): kept: expected an integer, got \"many\"")
        try write(good.replacingOccurrences(of: "\"counts\": [4, 4, 2]", with: "\"counts\": [4, -4, 2]"), filter)
        XCTAssertEqual(failure(), "\(filter): groups[1].log_perplexity_histogram.counts[1]: expected a count, got -4")
        try write(good.replacingOccurrences(of: "\"log_perplexity_histogram\"", with: "\"histogram\""), filter)
        XCTAssertEqual(failure(), "\(filter): groups[0].log_perplexity_histogram: missing")
        try write("{\"kept\": ", filter)
        XCTAssertTrue(failure().hasPrefix("\(filter): not JSON"), failure())
        try write(good, filter)

        let metrics = run + "/pretrain/metrics.jsonl"
        var lines = try String(contentsOfFile: metrics, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[2] = #"{"loss":"low","step":2}"#
        try writeLines(lines, to: metrics)
        XCTAssertEqual(failure(), "\(metrics):3: loss: expected a number")
        lines[2] = #"{"event":"rollback"}"#
        try writeLines(lines, to: metrics)
        XCTAssertEqual(failure(), "\(metrics):3: step: missing")
    }

    func testADirectoryWithoutStageOutputsIsAnError() throws {
        let empty = try temporaryDirectory(self)
        XCTAssertThrowsError(try RunReport.load(directory: empty)) { error in
            XCTAssertTrue("\(error)".contains("no stage outputs found"), "\(error)")
        }
        XCTAssertThrowsError(try RunReport.load(directory: empty + "/absent")) { error in
            XCTAssertEqual("\(error)", "\(empty)/absent: not a directory")
        }
    }
}

final class RunComparisonTests: XCTestCase {
    /// 40 steps near 2.0 with one two-step jump to 6 at steps 31–32: pretrain's
    /// detector finds one spike starting at 31; a lone outlier is no spike.
    func testSpikesAreFoundByPretrainsDetector() throws {
        var lines: [String] = [#"{"eval_loss":3.0,"eval_ppl":20.09,"step":0}"#]
        for step in 1...40 {
            let loss = step == 31 || step == 32 ? 6.0 : (step == 12 ? 5.0 : 2.0 + 0.01 * Double(step % 5))
            lines.append("{\"loss\":\(loss),\"step\":\(step)}")
        }
        lines[40] = #"{"eval_loss":2.1,"eval_ppl":8.17,"loss":2.0,"step":40}"#
        let root = try temporaryDirectory(self)
        try FileManager.default.createDirectory(atPath: root + "/spiky", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/calm", withIntermediateDirectories: true)
        try writeLines(lines, to: root + "/spiky/metrics.jsonl")
        try writeLines(lines.map { $0.replacingOccurrences(of: "\"loss\":6.0", with: "\"loss\":2.0") }, to: root + "/calm/metrics.jsonl")
        var detector = PretrainConfig.Spikes()
        detector.warmup = 5
        let comparison = try RunComparison.load([("spiky", root + "/spiky"), ("calm", root + "/calm")], detector: detector)
        XCTAssertEqual(comparison.runs[0].spikes.map(\.firstStep), [31])
        XCTAssertEqual(comparison.runs[1].spikes.count, 0)
        let table = comparison.table()
        XCTAssertEqual(table[2], "| spiky | 40 | 1 (31) | 2.0000 | 2.1000 | 8.17 |")
        XCTAssertEqual(table[3], "| calm | 40 | 0 | 2.0000 | 2.1000 | 8.17 |")
        let plot = comparison.plot(title: "masks")
        XCTAssertEqual(plot.components(separatedBy: "<polyline").count - 1, 2)
        XCTAssertTrue(plot.contains("<title>spiky: spike at step 31</title>"))
    }
}
