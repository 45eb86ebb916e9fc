// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Yams

/// A plugin's configuration: YAML from the operator, checked against the schema the bundle ships
/// (`config.schema.yaml`), handed to the plugin as JSON.
///
/// The schema is a small subset of JSON Schema, written in YAML: `type` (object, array, string, integer, number,
/// boolean), `properties`, `required`, `additionalProperties: false`, `items`, `enum`, `minimum`, `maximum`.
public enum PluginConfig {
    public static let schemaFile = "config.schema.yaml"
    /// The largest configuration, and the largest schema, in bytes; neither may hold more values than that once its
    /// aliases are expanded (no more than a document of that size holds without them).
    public static let maxBytes = 1 << 20

    /// `text` as Swift values (nil when empty), refused when it is over `maxBytes` or its aliases expand it past
    /// `maxBytes` values (see `BoundedYAML`).
    /// - Throws: `ManifestError` naming `file`.
    static func load(_ text: String, file: String) throws(ManifestError) -> Any? {
        guard text.utf8.count <= maxBytes else { throw ManifestError(file: file, reason: "over the 1 MiB limit") }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch let error as YamlError {
            throw ManifestLoader.describe(error, file: file)
        } catch { throw ManifestError(file: file, reason: "not valid YAML") }
        guard let node else { return nil }
        guard BoundedYAML.fits(node, maxValues: maxBytes) else {
            throw ManifestError(file: file, reason: "more than \(maxBytes) values once its aliases are expanded")
        }
        return node.any
    }

    /// The schema at `schemaPath` as Swift values.
    /// - Throws: `ManifestError` naming the schema file when it cannot be read, is over `maxBytes`, is not UTF-8, not
    ///   YAML (with the line), expands past `maxBytes` or is not a mapping.
    static func loadSchema(_ schemaPath: String) throws(ManifestError) -> [String: Any] {
        let bytes = try ManifestLoader(maximumSize: maxBytes).readBytes(path: schemaPath, missing: "no such file", kind: "a configuration schema")
        guard bytes.count <= maxBytes else { throw ManifestError(file: schemaPath, reason: "over the 1 MiB limit for a configuration schema") }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw ManifestError(file: schemaPath, reason: "not UTF-8 text") }
        guard let schema = try load(text, file: schemaPath) as? [String: Any] else {
            throw ManifestError(file: schemaPath, reason: "a configuration schema must be a mapping")
        }
        return schema
    }

    /// Checks `yaml` (named `file` in errors) against the schema at `schemaPath` (nil: the bundle ships none, so any
    /// mapping is accepted) and returns it as compact JSON.
    /// - Throws: `ManifestError` naming the file, the key and the reason.
    public static func validate(yaml: String, file: String, schemaPath: String?) throws(ManifestError) -> String {
        guard yaml.utf8.count <= maxBytes else { throw ManifestError(file: file, reason: "over the 1 MiB limit for a configuration") }
        guard let object = try load(yaml, file: file) as? [String: Any] else {
            throw ManifestError(file: file, reason: "a configuration must be a mapping")
        }
        if let schemaPath { try check(object, loadSchema(schemaPath), path: "", file: file, schemaFile: schemaPath) }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
            throw ManifestError(file: file, reason: "cannot be expressed as JSON")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The configuration (JSON) an activation is given: `yaml` (nil: none stored or given) checked against the schema
    /// at `schemaPath` (nil: the bundle ships none). With neither, none (""); with a schema alone, `{}` checked, so a
    /// schema that requires keys refuses a plugin with no configuration. The host's, the probe's and the CLI's rule.
    /// - Throws: `ManifestError` as `validate`.
    public static func activationJSON(yaml: String?, file: String, schemaPath: String?) throws(ManifestError) -> String {
        guard yaml != nil || schemaPath != nil else { return "" }
        return try validate(yaml: yaml ?? "{}", file: file, schemaPath: schemaPath)
    }

    /// The schema file of the bundle in `folder`, when it ships one.
    public static func schema(inBundle folder: String) -> String? {
        let schema = folder + "/" + schemaFile
        return access(schema, F_OK) == 0 ? schema : nil
    }

    /// The schema at `schemaPath` as compact JSON (keys sorted), for a form built from it (the console's).
    /// - Throws: `ManifestError` naming the file when it cannot be read, is not YAML or not a mapping.
    public static func schemaJSON(at schemaPath: String) throws(ManifestError) -> String {
        let schema = try loadSchema(schemaPath)
        guard let data = try? JSONSerialization.data(withJSONObject: schema, options: [.sortedKeys]) else {
            throw ManifestError(file: schemaPath, reason: "cannot be expressed as JSON")
        }
        return String(decoding: data, as: UTF8.self)
    }

    static func kind(_ v: Any) -> String {
        switch v {
        case is [String: Any]: return "a mapping"
        case is [Any]: return "a list"
        case is String: return "a string"
        case is Bool: return "a boolean"
        case is Int: return "an integer"
        case is Double: return "a number"
        default: return "null"
        }
    }

    /// Checks `value` (from `file`, at key `path`) against `schema`; a fault of the schema itself names `schemaFile`.
    static func check(_ value: Any, _ schema: [String: Any], path: String, file: String, schemaFile: String) throws(ManifestError) {
        func fail(_ reason: String) -> ManifestError { ManifestError(file: file, key: path.isEmpty ? nil : path, reason: reason) }
        if let type = schema["type"] as? String {
            let ok: Bool
            switch type {
            case "object": ok = value is [String: Any]
            case "array": ok = value is [Any]
            case "string": ok = value is String
            case "integer": ok = value is Int && !(value is Bool)
            case "number": ok = (value is Int || value is Double) && !(value is Bool)
            case "boolean": ok = value is Bool
            default: throw ManifestError(file: schemaFile, key: path.isEmpty ? "type" : path + ".type", reason: "unknown type \"\(type)\" (object, array, string, integer, number or boolean)")
            }
            guard ok else { throw fail("expected \(type), found \(kind(value))") }
        }
        if let options = schema["enum"] as? [Any] {
            guard options.contains(where: { "\($0)" == "\(value)" }) else {
                throw fail("\"\(value)\" is not one of \(options.map { "\($0)" }.joined(separator: ", "))")
            }
        }
        if let n = (value as? Int).map(Double.init) ?? (value as? Double) {
            if let min = (schema["minimum"] as? Int).map(Double.init) ?? (schema["minimum"] as? Double), n < min { throw fail("\(value) is below the minimum \(schema["minimum"] ?? min)") }
            if let max = (schema["maximum"] as? Int).map(Double.init) ?? (schema["maximum"] as? Double), n > max { throw fail("\(value) is above the maximum \(schema["maximum"] ?? max)") }
        }
        if let object = value as? [String: Any] {
            let properties = schema["properties"] as? [String: Any] ?? [:]
            // Keys the schema does not name, sorted so that a hint is the same on every run.
            let unknown = object.keys.filter { properties[$0] == nil }.sorted()
            for key in schema["required"] as? [String] ?? [] where object[key] == nil {
                let typo = unknown.first { Spelling.nearest($0, in: [key]) == key }
                throw ManifestError(file: file, key: path.isEmpty ? key : path + "." + key,
                                    reason: "required key is missing" + (typo.map { " (is \"\($0)\" a misspelling of it?)" } ?? ""))
            }
            for (key, item) in object {
                let childPath = path.isEmpty ? key : path + "." + key
                if let sub = properties[key] as? [String: Any] {
                    try check(item, sub, path: childPath, file: file, schemaFile: schemaFile)
                } else if schema["additionalProperties"] as? Bool == false {
                    let known = properties.keys.sorted()
                    let hint = Spelling.nearest(key, in: known).map { "; did you mean \"\($0)\"?" }
                        ?? (known.isEmpty ? "; it takes no keys" : "; it takes " + known.joined(separator: ", "))
                    throw ManifestError(file: file, key: childPath, reason: "not allowed by the plugin's schema" + hint)
                }
            }
        }
        if let list = value as? [Any], let items = schema["items"] as? [String: Any] {
            for (i, item) in list.enumerated() { try check(item, items, path: "\(path)[\(i)]", file: file, schemaFile: schemaFile) }
        }
    }
}
