// Keel — a microkernel plugin host. Licensed under Apache-2.0.

/// The environment a child process that runs plugin code gets (a worker, a probe): the host's, less its own settings
/// and anything named like a secret. Stateless; any thread.
public enum ChildEnvironment {
    /// True for a variable such a child does not inherit: the host's own settings (`KEEL_*`, which may name the state
    /// database with its password, or hold the admin or metrics token) and anything named like a secret
    /// (`*TOKEN*`, `*SECRET*`, `*PASSWORD*`, `*PASSWD*`, `*CREDENTIAL*`; `PGPASSWORD` among them).
    public static func isSecret(_ name: String) -> Bool {
        let upper = name.uppercased()
        return upper.hasPrefix("KEEL_") || ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL"].contains { upper.contains($0) }
    }

    /// `environment` without the variables `isSecret` names.
    public static func scrubbed(_ environment: [String: String]) -> [String: String] {
        environment.filter { !isSecret($0.key) }
    }
}
