// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import KeelManifest
import Testing

@Suite("plugin.yaml", .scheduled)
struct ManifestTests {
    let loader = ManifestLoader()

    func parse(_ text: String) throws(ManifestError) -> (Manifest, [ManifestWarning]) {
        try loader.parse(Data(text.utf8), file: "p/plugin.yaml")
    }

    func error(_ text: String) -> ManifestError? {
        do { _ = try parse(text); return nil } catch { return error }
    }

    @Test("a complete manifest parses into every field")
    func complete() throws {
        let (m, warnings) = try parse("""
            id: hello
            name: Hello
            version: 1.2.3-beta.1
            description: says hi
            abi: "1.0"
            library: lib/libhello.so
            capabilities: [routes, menus, authenticate]
            host: ">=1.0.0 <2.0.0"
            menus:
              - id: hello.main
                title: Hello
                link: /ext/hello/
                order: 5
                permission: hello:view
            dependencies:
              auth-base: "^2.1"
            """)
        #expect(warnings.isEmpty)
        #expect(m.id == "hello")
        #expect(m.version == Semver(1, 2, 3, prerelease: ["beta", "1"]))
        #expect(m.abi == ABIVersion(1, 0))
        #expect(m.library == "lib/libhello.so")
        #expect(m.capabilities == [.routes, .menus, .authenticate])
        #expect(m.menus == [MenuDeclaration(id: "hello.main", title: "Hello", link: "/ext/hello/", order: 5, permission: "hello:view")])
        #expect(m.dependencies.map(\.id) == ["auth-base"])
        #expect(m.dependencies[0].versions.contains(Semver(2, 5, 0)))
        #expect(!m.dependencies[0].versions.contains(Semver(3, 0, 0)))
        #expect(m.hostVersions?.contains(Semver(1, 0, 0)) == true)
    }

    @Test("a missing key names the file, the line and the key")
    func missingKey() {
        let e = error("id: hello\nname: Hello\nabi: \"1.0\"\nlibrary: x.so\n")
        #expect(e?.description == "p/plugin.yaml:1: key \"version\": required key is missing")
    }

    @Test("a missing key with a misspelling of it beside: the error points at the misspelling")
    func misspelledKey() {
        let e = error("id: hello\nname: Hello\nverison: 1.0.0\nabi: \"1.0\"\nlibrary: x.so\n")
        #expect(e?.description == "p/plugin.yaml:1: key \"version\": required key is missing (is \"verison\" on line 3 a misspelling of it?)")
        // Nothing near: no hint.
        #expect(error("id: hello\nname: Hello\nrelease: 1.0.0\nabi: \"1.0\"\nlibrary: x.so\n")?.description
            == "p/plugin.yaml:1: key \"version\": required key is missing")
    }

    @Test("a wrong type names the line and the key")
    func wrongType() {
        let e = error("id: hello\nname: [a, b]\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: x.so\n")
        #expect(e?.line == 2)
        #expect(e?.key == "name")
        #expect(e?.description.contains("expected a string, found a list") == true)
        let order = error("id: h\nname: H\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: x.so\nmenus:\n  - id: a\n    title: A\n    order: soon\n")
        #expect(order?.line == 9)
        #expect(order?.key == "menus[0].order")
    }

    @Test("unknown keys are warnings, not errors")
    func unknownKey() throws {
        let (_, warnings) = try parse("id: h\nname: H\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: x.so\ncolour: blue\n")
        #expect(warnings.map(\.description) == ["p/plugin.yaml:6: warning: unknown key \"colour\" is ignored"])
    }

    @Test("bad values are refused with the reason", arguments: [
        ("id: Hello World", "id", "not a valid plugin id"),
        ("id: keel", "id", "\"keel\" is the host's own name: no plugin may take it"),
        ("version: one", "version", "expected a semantic version"),
        ("abi: latest", "abi", "expected an ABI version"),
        ("library: ../../etc/evil.so", "library", "must be a path inside the bundle folder"),
        // `..` and a combining mark after the slash: one character, but a `..` segment by bytes.
        ("library: \"../\u{301}x/evil.so\"", "library", "must be a path inside the bundle folder"),
        ("capabilities: [routes, root]", "capabilities[1]", "unknown capability \"root\""),
        ("dependencies: {other: \"not a range\"}", "dependencies.other", "is not a version range"),
        ("menus: [{id: m, title: M, link: \"javascript:alert(1)\"}]", "menus[0].link", "must be a console path starting with \"/\" or an http(s) URL"),
        ("menus: [{id: m, title: M, link: \"JavaScript:alert(1)\"}]", "menus[0].link", "must be a console path starting with \"/\" or an http(s) URL"),
        ("menus: [{id: m, title: M, link: \"//evil.example/x\"}]", "menus[0].link", "starts with \"//\""),
        ("menus: [{id: m, title: M, link: \"https:///x\"}]", "menus[0].link", "has no host"),
        ("menus: [{id: m, title: M, link: \"/ext/h/a b\"}]", "menus[0].link", "contains a space or a control character"),
        ("menus: [{id: m, title: M, link: \" javascript:alert(1)\"}]", "menus[0].link", "contains a space or a control character"),
        ("menus: [{id: m, title: M, link: \"ext/h/\"}]", "menus[0].link", "must be a console path"),
    ])
    func badValues(line: String, key: String, reason: String) {
        var fields = ["id: h", "name: H", "version: 1.0.0", "abi: \"1.0\"", "library: x.so"]
        let name = line.split(separator: ":")[0]
        fields.removeAll { $0.hasPrefix(name + ":") }
        fields.append(line)
        let e = error(fields.joined(separator: "\n"))
        #expect(e?.key == key)
        #expect(e?.description.contains(reason) == true, "\(String(describing: e))")
    }

    @Test("a menu link is a console path or an http(s) URL")
    func goodLinks() {
        for link in ["", "/ext/h/", "/", "https://docs.example/keel", "HTTP://10.0.0.1:8080/a?b=c#d"] {
            #expect(MenuDeclaration.linkProblem(link) == nil, "\(link)")
        }
        for link in ["javascript:alert(1)", "data:text/html,x", "vbscript:x", "//evil.example", "http:", "https://", "ext/h"] {
            #expect(MenuDeclaration.linkProblem(link) != nil, "\(link)")
        }
    }

    @Test("malformed YAML gives the line of the problem")
    func malformed() {
        let e = error("id: h\nname: [unclosed\nversion: 1.0.0\n")
        #expect(e?.line != nil)
        #expect(e?.description.hasPrefix("p/plugin.yaml:") == true)
        #expect(e?.description.contains("not valid YAML") == true)
    }

    @Test("hostile input is bounded: not UTF-8, too large, nested too deep, alias bombs, duplicate keys")
    func hostile() throws {
        var bytes = Array("id: h\nname: ".utf8)
        bytes += [0xFF, 0xFE, 0x0A]
        #expect(throws: ManifestError.self) { try loader.parse(Data(bytes), file: "f") }
        #expect((try? loader.parse(Data(bytes), file: "f")) == nil)
        do { _ = try loader.parse(Data(bytes), file: "f") } catch { #expect(error.reason == "not valid UTF-8") }

        let big = Data(repeating: UInt8(ascii: "#"), count: 300 * 1024)
        do { _ = try loader.parse(big, file: "f"); Issue.record("accepted a 300 KiB manifest") } catch {
            #expect(error.reason.contains("over the"))
        }

        let deep = "id: " + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        do { _ = try loader.parse(Data(deep.utf8), file: "f"); Issue.record("accepted deep nesting") } catch {
            #expect(error.reason.contains("nested deeper"))
        }

        var laughs = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        for i in 1...9 { laughs += "\(Character(UnicodeScalar(97 + i)!)): &\(Character(UnicodeScalar(97 + i)!)) [" + Array(repeating: "*\(Character(UnicodeScalar(96 + i)!))", count: 9).joined(separator: ", ") + "]\n" }
        laughs += "id: h\nname: *j\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: x.so\n"
        do { _ = try loader.parse(Data(laughs.utf8), file: "f"); Issue.record("accepted an alias bomb as a name") } catch {
            #expect(error.key == "name")
        }

        let dup = error("id: h\nname: H\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: x.so\nid: g\n")
        #expect(dup?.description == "p/plugin.yaml:6: duplicate key \"id\" (first on line 1)", "\(String(describing: dup))")
        let tab = error("id: h\nname: H\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: x.so\nmenus:\n\t- id: h.x\n")
        #expect(tab?.description == "p/plugin.yaml:7: not valid YAML: a tab at column 1; YAML indents with spaces only", "\(String(describing: tab))")
    }

    @Test("a missing manifest file is named")
    func missingFile() {
        do { _ = try loader.load(path: "/nonexistent/plugin.yaml"); Issue.record("loaded") } catch {
            #expect(error.description == "/nonexistent/plugin.yaml: missing: a plugin bundle needs a plugin.yaml")
        }
    }
}

@Suite("manifest values", .scheduled)
struct ManifestValueTests {
    /// A manifest is one reference inside (cheap to copy): copies must still behave as independent values.
    @Test("a changed copy of a manifest leaves the original as it was; equal manifests are equal and hash alike")
    func copiesAreValues() throws {
        let text = "id: alpha\nname: Alpha\nversion: 1.0.0\nabi: \"1.0\"\nlibrary: liba.so\nmenus:\n  - id: a\n    title: A\n    link: /ext/alpha/\n"
        let (original, _) = try ManifestLoader().parse(Data(text.utf8), file: "plugin.yaml")
        var copy = original
        #expect(copy == original)
        copy.name = "Changed"
        copy.menus.removeAll()
        copy.activation = .lazy
        #expect(original.name == "Alpha" && original.menus.count == 1 && original.activation == .eager)
        #expect(copy.name == "Changed" && copy.menus.isEmpty && copy.activation == .lazy)
        #expect(copy != original)
        let (again, _) = try ManifestLoader().parse(Data(text.utf8), file: "plugin.yaml")
        #expect(again == original && again.hashValue == original.hashValue && Set([again, original]).count == 1)
        copy.name = "Alpha"
        copy.menus = original.menus
        copy.activation = .eager
        #expect(copy == original)
    }
}

@Suite("versions", .scheduled)
struct VersionTests {
    @Test("semver precedence follows semver.org")
    func precedence() throws {
        let ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
                       "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "2.0.0"].map { Semver($0)! }
        #expect(ordered == ordered.sorted())
        #expect(Semver("v1.30.0-tke.1") == Semver(1, 30, 0, prerelease: ["tke", "1"]))
        #expect(Semver("1.0") == nil)
        #expect(Semver("01.0.0") == nil)
        #expect(Semver("1.0.0+build.5") == Semver(1, 0, 0))
    }

    @Test("plain MAJOR.MINOR.PATCH (read byte by byte) keeps the full rules")
    func plainVersions() {
        #expect(Semver("0.0.0") == Semver(0, 0, 0) && Semver("10.20.30") == Semver(10, 20, 30))
        #expect(Semver("0.1.0") == Semver(0, 1, 0) && Semver("123456789.0.1") == Semver(123_456_789, 0, 1))
        for text in ["01.2.3", "1.02.3", "1.2.03", "1..3", "1.2.", ".1.2", "1.2.3.4", "1234567890.0.0", "1.2.x", "1.2.3 "] {
            #expect(Semver(text) == nil, "\(text)")
        }
        #expect(Semver("1.2.3-rc.1") == Semver(1, 2, 3, prerelease: ["rc", "1"]) && Semver("v1.2.3") == Semver(1, 2, 3))
    }

    @Test("ranges", arguments: [
        ("^1.2", "1.9.9", true), ("^1.2", "2.0.0", false), ("^1.2", "1.1.0", false), ("^0.3.1", "0.3.9", true),
        ("^0.3.1", "0.4.0", false), ("~1.2.3", "1.2.9", true), ("~1.2.3", "1.3.0", false), (">=1.0.0 <2.0.0", "1.5.0", true),
        (">= 1.0 < 2", "2.0.0", false), ("1.x", "1.4.0", true), ("1.2.*", "1.3.0", false), ("*", "9.9.9", true),
        ("1.2.3", "1.2.3", true), ("=1.2.3", "1.2.4", false), ("^1.0 || ^3.0", "3.1.0", true), ("^1.0.0", "2.0.0-beta", false),
        (">1.2", "1.2.9", false), ("<=1.2", "1.2.9", true),
    ])
    func ranges(range: String, version: String, expected: Bool) throws {
        let r = try #require(VersionRange(range))
        #expect(r.contains(try #require(Semver(version))) == expected)
    }

    @Test("nonsense ranges are refused")
    func badRanges() {
        for text in ["", "abc", "^", ">=x.y", "1.2.3.4", "~>1.0"] { #expect(VersionRange(text) == nil, "\(text)") }
    }
}
