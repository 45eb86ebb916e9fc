// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel
import KeelManifest
import KeelSystem

extension KeelCommand {
    struct Tenants: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage tenants (workspaces) and who belongs to them with which role.",
            discussion: "A fresh install has one tenant, `default`. A running server picks up changes at once.",
            subcommands: [List.self, Create.self, Delete.self, AddMember.self, RemoveMember.self])
    }

    struct Roles: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage roles and the permission items (KEY:ACTION from plugins' manifests) they grant.",
            discussion: "The `admin` role exists from the start and grants everything.",
            subcommands: [List.self, Create.self, Delete.self, Grant.self, Revoke.self])
    }
}

/// Refuses a role or tenant that does not exist: the one likely meant when a name is near (`acmee`: did you mean
/// "acme"?), else how to make it.
func requireDirectoryNames(_ state: StateStore, tenant: String, role: String) throws {
    let d = try state.directory()
    func unknown(_ kind: String, _ name: String, among names: [String]) -> CLIError {
        let shown = Printable.escapingControls(name)
        if let near = Spelling.nearest(name, in: names) { return CLIError("unknown \(kind) \"\(shown)\" (did you mean \"\(near)\"?)") }
        return CLIError("unknown \(kind) \"\(shown)\"; create it with `keel \(kind)s create \(shown)`")
    }
    guard d.tenants.contains(tenant) else { throw unknown("tenant", tenant, among: d.tenants) }
    guard d.roles.contains(role) else { throw unknown("role", role, among: d.roles) }
}

extension KeelCommand.Tenants {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants with their members and plugins.")
        @OptionGroup var options: GlobalOptions
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            try await reporting {
                let options = try self.options.readingState()
                let d = try options.openState().directory()
                if json {
                    try printJSON(d.tenantViews)
                    return
                }
                for t in d.tenants {
                    print(t)
                    for (principal, roles) in (d.members[t] ?? [:]).sorted(by: { $0.key < $1.key }) {
                        print("  member \(principal): \(roles.sorted().joined(separator: ", "))")
                    }
                    let only = d.pluginTenants.filter { $0.value.contains(t) }.map(\.key).sorted()
                    if !only.isEmpty { print("  plugins enabled for it: \(only.joined(separator: ", "))") }
                }
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name: lowercase letters, digits, '-', '_', '.'.") var name: String

        func run() async throws {
            try await reporting { try await executeStored(options, .createTenant(name: name)) }
            print("created tenant \(name)")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a tenant; refused while plugins are enabled for it, unless --cascade.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name.", completion: Completion.tenants) var name: String
        @Flag(help: "Also disable the plugins enabled only for this tenant.") var cascade = false

        func run() async throws {
            let result = try await reporting {
                try await throughServerOrKernelResult(options, id: nil, command: .deleteTenant(name: name, cascade: cascade))
            }
            print("removed tenant \(name)" + (result.result.note.map { ": " + $0 } ?? ""))
        }
    }

    /// The three names both member commands take.
    struct Member: ParsableArguments {
        @Argument(help: "Tenant name.", completion: Completion.tenants) var tenant: String
        @Argument(help: "Principal id, as the authenticate hooks name it.") var principal: String
        @Argument(help: "Role name.", completion: Completion.roles) var role: String

        func command(member: Bool) -> KernelCommand {
            .setMember(tenant: tenant, principal: principal, role: role, member: member)
        }
    }

    struct AddMember: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add-member", abstract: "Put a principal in a tenant with a role.")
        @OptionGroup var options: GlobalOptions
        @OptionGroup var member: Member

        func run() async throws {
            try await reporting {
                try requireDirectoryNames(try options.openState(), tenant: member.tenant, role: member.role)
                try await executeStored(options, member.command(member: true))
            }
            print("\(member.principal) is \(member.role) in \(member.tenant)")
        }
    }

    struct RemoveMember: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "remove-member", abstract: "Take a role in a tenant away from a principal.")
        @OptionGroup var options: GlobalOptions
        @OptionGroup var member: Member

        func run() async throws {
            try await reporting {
                let result = try await executeStored(options, member.command(member: false))
                print(result.note ?? "\(member.principal) is no longer \(member.role) in \(member.tenant)")
            }
        }
    }
}

extension KeelCommand.Roles {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List roles and what they grant.")
        @OptionGroup var options: GlobalOptions
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            try await reporting {
                let options = try self.options.readingState()
                let d = try options.openState().directory()
                if json {
                    try printJSON(d.roleViews)
                    return
                }
                for r in d.roles {
                    let grants = r == "admin" ? "everything" : (d.rolePermissions[r] ?? []).sorted().joined(separator: ", ")
                    print("\(r): \(grants.isEmpty ? "nothing yet" : grants)")
                }
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a role.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Role name.") var name: String

        func run() async throws {
            try await reporting { try await executeStored(options, .createRole(name: name)) }
            print("created role \(name)")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a role, its permission items and its bindings in every tenant (not the built-in admin).")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Role name.", completion: Completion.roles) var name: String

        func run() async throws {
            let result = try await reporting { try await executeStored(options, .deleteRole(name: name)) }
            print("removed role \(name)" + (result.note.map { ": " + $0 } ?? ""))
        }
    }

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grant a permission item (KEY:ACTION or KEY:*) to a role.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Role name.", completion: Completion.roles) var role: String
        @Argument(help: "Permission, e.g. hello.greetings:view.", completion: Completion.permissions) var permission: String
        @Flag(help: "Grant it even though no plugin in the plugin folder declares it.") var force = false

        func validate() throws {
            guard permission.split(separator: ":").count == 2 else {
                throw ValidationError("write the permission as KEY:ACTION (e.g. hello.greetings:view) or KEY:*")
            }
        }

        func run() async throws {
            let result = try await reporting {
                if !force { try Self.requireDeclared(permission, pluginsDirectory: options.pluginsDirectory) }
                return try await executeStored(options, .setRolePermission(role: role, permission: permission, granted: true))
            }
            print(result.note.map { "role \(role): \($0)" } ?? "role \(role) may \(permission)")
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take a permission item away from a role.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Role name.", completion: Completion.roles) var role: String
        @Argument(help: "Permission.") var permission: String

        func run() async throws {
            try await reporting {
                let result = try await executeStored(options, .setRolePermission(role: role, permission: permission, granted: false))
                // A role that never had it, or whose KEY:* still allows it, is not said to have lost it.
                if let note = result.note { print("role \(role): \(note)") } else { print("role \(role) no longer may \(permission)") }
            }
        }
    }
}

extension KeelCommand.Roles.Grant {
    /// Refuses KEY:ACTION unless a plugin in the folder declares KEY with ACTION (or `*` for any declared action),
    /// naming the items that are declared.
    static func requireDeclared(_ permission: String, pluginsDirectory: String) throws {
        let items = PluginFolder.manifests(pluginsDirectory).flatMap(\.permissions).flatMap { d in d.actions.map { "\(d.key):\($0)" } }.sorted()
        if Kernel.isDeclared(permission, among: items) { return }
        let known = items.isEmpty ? "no plugin in \(pluginsDirectory) declares permission items"
            : "declared in \(pluginsDirectory): \(items.joined(separator: ", "))"
        throw CLIError("no plugin declares \"\(permission)\" (\(known)); pass --force to grant it anyway")
    }
}
