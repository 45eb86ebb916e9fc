// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import Glibc

/// Checks a file's ELF header before it is handed to dlopen, so that the common mistakes get a precise message
/// instead of the dynamic loader's ("invalid ELF header"): an empty or text file, an object for another CPU, a
/// relocatable object or an executable instead of a shared library, a file cut short.
enum ELFHeader {
    static let hostMachine: UInt16 = {
        #if arch(x86_64)
        return 62
        #elseif arch(arm64)
        return 183
        #elseif arch(riscv64)
        return 243
        #else
        return 0
        #endif
    }()

    static func machineName(_ m: UInt16) -> String {
        switch m {
        case 3: return "i386"
        case 8: return "MIPS"
        case 20: return "PowerPC"
        case 21: return "PowerPC64"
        case 40: return "ARM"
        case 62: return "x86_64"
        case 183: return "aarch64"
        case 243: return "RISC-V"
        default: return "machine \(m)"
        }
    }

    /// Throws a `LoadError` describing why the file at `path` cannot be a loadable shared object for this host.
    static func check(path: String) throws(LoadError) {
        // O_NONBLOCK: a FIFO in the library's place is refused below, not waited on (a regular file ignores it).
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            throw LoadError(.fileUnreadable, path: path, reason: errno == ENOENT ? "no such file" : "cannot be read")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw LoadError(.fileUnreadable, path: path, reason: "cannot be read") }
        if st.st_mode & S_IFMT == S_IFDIR {
            throw LoadError(.notSharedObject, path: path, reason: "a folder, not a shared library file")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw LoadError(.notSharedObject, path: path, reason: "not a regular file (a FIFO, a device or a socket), not a shared library file")
        }
        var header = [UInt8](repeating: 0, count: 64)
        let got = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 64, 0) }
        try check(prefix: header.prefix(max(got, 0)), fileSize: Int(st.st_size), path: path)
    }

    /// Same as `check(path:)` for a file whose first bytes (`prefix`, at least 64 when the file has them) and size
    /// are already in memory. `path` only names the file in errors.
    static func check<Bytes: Collection<UInt8>>(prefix bytes: Bytes, fileSize size: Int, path: String) throws(LoadError) {
        let header = Array(bytes.prefix(64))
        if size == 0 { throw LoadError(.notSharedObject, path: path, reason: "empty file, not a shared object") }
        guard header.count >= 4, header[0] == 0x7F, header[1] == 0x45, header[2] == 0x4C, header[3] == 0x46 else {
            throw LoadError(.notSharedObject, path: path, reason: "not an ELF shared object (no ELF magic number)")
        }
        guard header.count >= 64 else {
            throw LoadError(.truncated, path: path, reason: "truncated ELF file (\(size) bytes, the header alone needs 64)")
        }
        guard header[4] == 2 else {
            throw LoadError(.wrongArchitecture, path: path, reason: "32-bit ELF object; this host is 64-bit")
        }
        guard header[5] == 1 else {
            throw LoadError(.wrongArchitecture, path: path, reason: "big-endian ELF object; this host is little-endian")
        }
        func u16(_ o: Int) -> UInt16 { UInt16(header[o]) | UInt16(header[o + 1]) << 8 }
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(header[o + $1]) << (8 * UInt64($1)) } }
        switch u16(16) {
        case 3: break
        case 1: throw LoadError(.notSharedObject, path: path, reason: "a relocatable object (.o), not a shared library: link it with -shared")
        case 2: throw LoadError(.notSharedObject, path: path, reason: "an executable, not a shared library: link it with -shared -fPIC")
        case let t: throw LoadError(.notSharedObject, path: path, reason: "ELF type \(t), not a shared library")
        }
        let machine = u16(18)
        if hostMachine != 0, machine != hostMachine {
            throw LoadError(.wrongArchitecture, path: path,
                            reason: "built for \(machineName(machine)); this host is \(machineName(hostMachine))")
        }
        // Program headers (what dlopen maps) and section headers must lie inside the file.
        // Without overflow: a crafted offset near 2^64 made the sum trap (the host died, in a kernel without a probe).
        let phEnd = u64(32).addingReportingOverflow(UInt64(u16(54)) * UInt64(u16(56)))
        let shEnd = u64(40).addingReportingOverflow(UInt64(u16(58)) * UInt64(u16(60)))
        if phEnd.overflow || shEnd.overflow {
            throw LoadError(.truncated, path: path, reason: "a malformed ELF header (its header tables lie past any file's end)")
        }
        let end = max(phEnd.partialValue, shEnd.partialValue)
        if end > UInt64(size) {
            throw LoadError(.truncated, path: path, reason: "truncated ELF file (\(size) bytes, its headers reach byte \(end))")
        }
    }
}
