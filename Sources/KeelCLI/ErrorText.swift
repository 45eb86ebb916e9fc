// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Foundation
import Glibc
import NIOCore
import Keel
import KeelSystem

/// The one place that turns any error into the one line `keel: error: ...` shows: Keel's own errors keep their text
/// (they already name the file and the reason); Foundation, POSIX and NIO errors become "PATH: reason" in plain words,
/// so no `Error Domain=NSCocoaErrorDomain ...` or `bind(descriptor:ptr:bytes:)` text ever reaches a user.
enum ErrorText {
    /// One line for `error`, without the `keel: error: ` prefix.
    static func describe(_ error: any Error) -> String {
        if let kernel = error as? KernelError { return sanitize(kernel.localReason ?? kernel.reason) }
        if let io = error as? IOError { return plain(errno: io.errnoCode) }
        if let posix = error as? POSIXError { return plain(errno: posix.code.rawValue) }
        if let unknown = error as? SocketAddressError.UnknownHost {
            return "\(unknown.host): no such host (use an IP address or a name this machine resolves)"
        }
        if let address = error as? SocketAddressError {
            switch address {
            case let .unknown(host, _): return "\(host): no such host (use an IP address or a name this machine resolves)"
            case let .failedToParseIPString(text): return "\(text): not an IP address"
            default: return "not a usable address"
            }
        }
        if let url = error as? URLError { return network(url) }
        let bridged = error as NSError
        if bridged.domain == NSCocoaErrorDomain || bridged.domain == NSPOSIXErrorDomain { return foundation(bridged) }
        return sanitize(String(describing: error))
    }

    /// A failed HTTP exchange with the server, in plain words (never libcurl's text).
    static func network(_ error: URLError) -> String {
        switch error.code {
        case .cannotConnectToHost: return "connection refused (is keel serve running there?)"
        case .cannotFindHost, .dnsLookupFailed: return "no such host"
        case .timedOut: return "no answer in time"
        case .networkConnectionLost: return "the connection was closed (did the server stop?)"
        case .badServerResponse, .cannotParseResponse: return "not an answer from a keel server"
        default: return "the request failed (URL error \(error.code.rawValue))"
        }
    }

    /// Keel's own errors are one line naming the file and the reason; a few embed a Foundation error's text (its
    /// `description` or `localizedDescription`). That part is put in plain words here.
    static func sanitize(_ message: String) -> String {
        var text = oneLine(message)
        if let start = text.range(of: "Error Domain=") {
            let dump = text[start.lowerBound...]
            let domain = capture(#"Domain=(\S+)"#, in: dump) ?? NSCocoaErrorDomain
            let code = capture(#"Code=(-?\d+)"#, in: dump).flatMap { Int($0) } ?? 0
            var info: [String: Any] = [:]
            if let posix = capture(#"NSPOSIXErrorDomain Code=(\d+)"#, in: dump).flatMap({ Int($0) }) {
                info[NSUnderlyingErrorKey] = NSError(domain: NSPOSIXErrorDomain, code: posix)
            }
            text = String(text[..<start.lowerBound]) + reason(NSError(domain: domain, code: code, userInfo: info))
        }
        text = text.replacingOccurrences(of: "The operation could not be completed. ", with: "")
        return text.hasSuffix(".") ? String(text.dropLast()) : text
    }

    private static func capture(_ pattern: String, in text: Substring) -> String? {
        guard let regex = try? Regex(pattern), let match = text.firstMatch(of: regex), match.output.count > 1 else { return nil }
        return match.output[1].substring.map(String.init)
    }

    /// A Foundation error as "PATH: reason" (the path from the error's user info, when it has one).
    static func foundation(_ error: NSError) -> String {
        let path = (error.userInfo[NSFilePathErrorKey] as? String) ?? (error.userInfo[NSURLErrorKey] as? URL)?.path
        let reason = Self.reason(error)
        return path.map { "\($0): \(reason)" } ?? reason
    }

    private static func reason(_ error: NSError) -> String {
        if let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return plain(errno: Int32(underlying.code))
        }
        if error.domain == NSPOSIXErrorDomain { return plain(errno: Int32(error.code)) }
        guard error.domain == NSCocoaErrorDomain else { return "failed (\(error.domain) \(error.code))" }
        switch error.code {
        case CocoaError.fileNoSuchFile.rawValue, CocoaError.fileReadNoSuchFile.rawValue: return "no such file or folder"
        case CocoaError.fileReadNoPermission.rawValue, CocoaError.fileWriteNoPermission.rawValue: return "permission denied"
        case CocoaError.fileWriteFileExists.rawValue: return "already exists"
        case CocoaError.fileWriteOutOfSpace.rawValue: return "no space left on the device"
        case CocoaError.fileWriteVolumeReadOnly.rawValue: return "the file system is read-only"
        case CocoaError.fileReadInvalidFileName.rawValue, CocoaError.fileWriteInvalidFileName.rawValue: return "not a valid file name"
        case CocoaError.fileReadTooLarge.rawValue: return "too large to read"
        case CocoaError.fileReadCorruptFile.rawValue: return "unreadable (corrupt)"
        case CocoaError.fileReadInapplicableStringEncoding.rawValue, CocoaError.fileWriteInapplicableStringEncoding.rawValue:
            return "not UTF-8 text"
        case CocoaError.fileReadUnsupportedScheme.rawValue, CocoaError.fileWriteUnsupportedScheme.rawValue:
            return "not a local file"
        case CocoaError.fileLocking.rawValue: return "locked by another process"
        case CocoaError.fileReadUnknown.rawValue: return "cannot be read"
        case CocoaError.fileWriteUnknown.rawValue: return "cannot be written"
        default: return "failed (file error \(error.code))"
        }
    }

    /// An errno value in plain words ("not a folder" rather than "Not a directory").
    static func plain(errno code: Int32) -> String { SystemFile.describe(errno: code) }

    /// Lines joined with "; ", then anything a terminal would act on escaped (`Printable`).
    private static func oneLine(_ text: String) -> String {
        Printable.escapingControls(text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: "; "))
    }
}
