import DaptCore
import Foundation

/// The input files of a dedup run. A path ending in `.json` is read as a
/// `dapt prepare` manifest (`"format": "dapt-prepare-manifest/1"`) and stands
/// for its shards, in the manifest's order (shard files are relative to the
/// manifest's directory); any other path is a JSONL file.
public enum DedupInputs {
    public static let manifestFormat = "dapt-prepare-manifest/1"

    public struct ManifestError: Error, CustomStringConvertible, Equatable {
        public var path: String
        public var reason: String
        public var description: String { "\(path): \(reason)" }
    }

    public static func expand(_ paths: [String]) throws -> [String] {
        try paths.flatMap { path -> [String] in
            guard path.hasSuffix(".json") else { return [path] }
            let data = Data(try FileSystem.readAll(path))
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ManifestError(path: path, reason: "not a JSON object")
            }
            guard object["format"] as? String == manifestFormat else {
                throw ManifestError(path: path, reason: "format: not \(manifestFormat)")
            }
            guard let shards = object["shards"] as? [[String: Any]] else {
                throw ManifestError(path: path, reason: "shards: missing or not a list")
            }
            let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
            return try shards.enumerated().map { index, shard in
                guard let file = shard["file"] as? String, !file.isEmpty else {
                    throw ManifestError(path: path, reason: "shards[\(index)].file: missing")
                }
                return file.hasPrefix("/") ? file : directory + "/" + file
            }
        }
    }
}
