// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// How a connection whose answer went before its request's body arrived whole ends, as nginx's lingering close does.
///
/// Such an answer (a 413, a refusal, an endpoint that takes no body, a proxied app answering an upload early) says
/// `Connection: close`. Once it is written, the connection's output is closed (the client reads the answer, then the
/// end of it), and what the client still sends is read and dropped here, unseen by the server above, until the
/// body's end, the end of the client's input, `quietLimit` without a byte, or `timeLimit` in all; then the connection
/// is closed. The bounds matter both ways:
/// - closed at once, with the client's bytes unread, the connection is reset, and a client still writing its body
///   (Python's urllib writes all of it before it reads anything) loses the answer;
/// - never closed, the rest of a keep-alive request's body was read for as long as the client sent it, and a
///   `Connection: close` request's rest was not read at all (the server reads no further on such a connection): its
///   client blocked writing until the idle time-out, then failed with a broken pipe, without the answer.
///
/// Once such an answer's head is written, no later request on the connection reaches the server: after the answered
/// request's end, every part is dropped (RFC 9112 9.6: a server that sent `close` processes no further request), and
/// so is an error of the parser (it would be answered after the answer). An answer is early only when it belongs to
/// the request whose body is arriving: with requests pipelined, NIO has read the next head before the first is
/// answered. A proxied app that answers an upload early has its request's input closed by `LimitedBody.Gate.release`:
/// that close is taken here (the server above sees the input end) while the rest is still read and dropped below, so
/// that the client is not reset either.
///
/// The decisions only: `ConnectionLimiter.Handler`, which reads every request part and answer part of the connection
/// already, asks them and acts (a handler of its own in the pipeline cost every request about 3,700 instructions, a
/// fiftieth of it, in casts of each part: `Scripts/icount.sh`). Event-loop bound, as its handler; plain data.
struct LingeringClose {
    /// How long, in all, the rest of a body is read after the answer (the server's `--body-timeout`).
    let timeLimit: TimeAmount
    /// How long the client may send nothing (no part of a request: a chunk's size line alone counts as nothing) before
    /// the connection is closed (nginx's `lingering_timeout`).
    let quietLimit: TimeAmount

    /// Request heads read whose answers have not ended.
    private var outstanding = 0
    /// The answer being written went out before its request's body arrived whole (it says `Connection: close`).
    private var early = false
    /// The early-answered request's end was read.
    private var answeredEnded = false
    /// Nothing read goes up any more: a request after the answered one, or anything once the input was closed for the
    /// server above.
    private var dropping = false
    /// The server above was told its input ended (`close(mode: .input)` taken here).
    private(set) var inputClosedAbove = false
    /// The connection's input ended below (the client closed its side), or the parser failed after an early answer.
    private var inputEnded = false
    /// The early answer is written: what arrives is dropped, and the connection closes at the first bound.
    private(set) var lingering = false
    private var lingerStart = NIODeadline.now(), lastRead = NIODeadline.now()

    init(timeLimit: TimeAmount, quietLimit: TimeAmount = .seconds(5)) {
        self.timeLimit = timeLimit
        self.quietLimit = quietLimit
    }

    /// Whether what is read goes nowhere (see `dropped`), and the connection is read on although the server above
    /// reads no more (its buffer full holds back the reads it would ask for).
    var isDropping: Bool { lingering || dropping }

    /// A part read while `isDropping`. Returns true when the connection should close now: the answered request's
    /// end was read while lingering (nothing is left to reset the connection with).
    mutating func dropped(_ part: HTTPRequestPart) -> Bool {
        lastRead = .now()
        guard case .end = part, early, !answeredEnded else { return false }
        answeredEnded = true
        return lingering
    }

    /// A request's head was read (it goes up).
    mutating func headRead() { outstanding += 1 }

    /// A request's end was read (it goes up: its reader may wait for it); after an early answer, nothing more does.
    mutating func endRead() {
        if early { (answeredEnded, dropping) = (true, true) }
    }

    /// Whether an answer's head about to be written is early: not an interim one, and for the request whose body
    /// is arriving (`receiving`, with one request outstanding: with requests pipelined, NIO has read the next head
    /// before the first is answered). When it is, the head must say `Connection: close`.
    mutating func answerHead(informational: Bool, receiving: Bool) -> Bool {
        guard !early, receiving, outstanding == 1, !informational else { return false }
        early = true
        return true
    }

    /// An answer's end is about to be written. Returns whether it is an early answer's: its write's outcome then goes
    /// to `written`.
    mutating func answerEnd() -> Bool {
        outstanding = max(0, outstanding - 1)
        return early
    }

    /// Whether, the early answer's end written, there is a rest to read (`startLingering`); else the connection
    /// closes now: the answered request's end was read already, or the input ended.
    var restToRead: Bool { !answeredEnded && !inputEnded }

    /// Lingering begins: the output is to be closed and reading goes on until `deadline`.
    mutating func startLingering() {
        lingering = true
        (lingerStart, lastRead) = (.now(), .now())
    }

    /// When to look again whether a bound is reached.
    var deadline: NIODeadline { min(lingerStart + timeLimit, lastRead + quietLimit) }

    /// Whether a bound is reached (the connection is to close).
    func expired(at now: NIODeadline) -> Bool { now >= lingerStart + timeLimit || now >= lastRead + quietLimit }

    enum Verdict { case forward, swallow, close }

    /// The connection's input ended below.
    mutating func inputClosed() -> Verdict {
        inputEnded = true
        return lingering ? .close : inputClosedAbove ? .swallow : .forward
    }

    /// The parser failed. Once the answer went early, the error would be answered above, after the answer: the
    /// connection closes instead (now when lingering, else once the answer is written).
    mutating func error() -> Verdict {
        if lingering { return .close }
        guard early else { return .forward }
        (inputEnded, dropping) = (true, true)
        return .swallow
    }

    /// The server above closes the input (`LimitedBody.Gate.release`, a proxied app that answered an upload early).
    /// Returns true when that close is taken here: the body still arrives after an early answer, so the server above
    /// is told its input ended (`inputClosedAbove`) while the rest is read and dropped below, and the client, maybe
    /// still writing, is not reset before it reads the answer.
    mutating func takesInputClose() -> Bool {
        guard early, !answeredEnded, !inputEnded else { return false }
        dropping = true
        return true
    }

    /// Marks the server above told (once).
    mutating func toldAbove() -> Bool {
        defer { inputClosedAbove = true }
        return !inputClosedAbove
    }
}
