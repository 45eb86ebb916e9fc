// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import ArgumentParser
import Foundation
import Keel

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
            subcommands: [List.self, Create.self, Grant.self, Revoke.self])
    }
}

/// Applies a directory change and turns a refusal into a one-line error.
func directoryChange(_ body: () throws -> StateStore.ChangeResult) throws {
    if case let .refused(reason) = try body() { throw CLIError(reason) }
}

extension KeelCommand.Tenants {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants with their members and plugins.")
        @OptionGroup var options: GlobalOptions
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            try await reporting {
                let d = try options.openState().directory()
                if json {
                    try printJSON(d.tenants.map { t in
                        ["name": t, "members": (d.members[t] ?? [:]).map { "\($0.key)=\($0.value.sorted().joined(separator: "+"))" }.sorted().joined(separator: " "),
                         "plugins": d.pluginTenants.filter { $0.value.contains(t) }.map(\.key).sorted().joined(separator: " ")]
                    })
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
            try await reporting { try directoryChange { try options.openState().createTenant(name) } }
            print("created tenant \(name)")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a tenant; refused while plugins are enabled for it, unless --cascade.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name.") var name: String
        @Flag(help: "Also disable the plugins enabled only for this tenant.") var cascade = false

        func run() async throws {
            try await reporting {
                _ = try await throughServerOrKernel(options, id: nil,
                    remote: { state in try await RemoteControl.submit(.deleteTenant(name: name, cascade: cascade), state: state) },
                    local: { kernel in try await kernel.deleteTenant(name, cascade: cascade) })
            }
            print("removed tenant \(name)")
        }
    }

    struct AddMember: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add-member", abstract: "Put a principal in a tenant with a role.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name.") var tenant: String
        @Argument(help: "Principal id, as the authenticate hooks name it.") var principal: String
        @Argument(help: "Role name.") var role: String

        func run() async throws {
            try await reporting {
                try directoryChange { try options.openState().setMember(tenant: tenant, principal: principal, role: role, member: true) }
            }
            print("\(principal) is \(role) in \(tenant)")
        }
    }

    struct RemoveMember: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "remove-member", abstract: "Take a role in a tenant away from a principal.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name.") var tenant: String
        @Argument(help: "Principal id.") var principal: String
        @Argument(help: "Role name.") var role: String

        func run() async throws {
            try await reporting {
                try directoryChange { try options.openState().setMember(tenant: tenant, principal: principal, role: role, member: false) }
            }
            print("\(principal) is no longer \(role) in \(tenant)")
        }
    }
}

extension KeelCommand.Roles {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List roles and what they grant.")
        @OptionGroup var options: GlobalOptions

        func run() async throws {
            try await reporting {
                let d = try options.openState().directory()
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
            try await reporting { try directoryChange { try options.openState().createRole(name) } }
            print("created role \(name)")
        }
    }

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grant a permission item (KEY:ACTION or KEY:*) to a role.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Role name.") var role: String
        @Argument(help: "Permission, e.g. hello.greetings:view.") var permission: String

        func validate() throws {
            guard permission.split(separator: ":").count == 2 else {
                throw ValidationError("write the permission as KEY:ACTION (e.g. hello.greetings:view) or KEY:*")
            }
        }

        func run() async throws {
            try await reporting { try directoryChange { try options.openState().setRolePermission(role, permission, granted: true) } }
            print("role \(role) may \(permission)")
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take a permission item away from a role.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "Role name.") var role: String
        @Argument(help: "Permission.") var permission: String

        func run() async throws {
            try await reporting { try directoryChange { try options.openState().setRolePermission(role, permission, granted: false) } }
            print("role \(role) no longer may \(permission)")
        }
    }
}
