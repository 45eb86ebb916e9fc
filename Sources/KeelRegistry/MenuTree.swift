// Keel — a microkernel plugin host. Licensed under Apache-2.0.

import KeelLoader
import KeelManifest

/// One node of the composed navigation.
public struct MenuNode: Sendable, Hashable, Codable {
    public var id: String
    public var title: String
    public var link: String
    public var icon: String
    public var order: Int
    public var pluginID: String
    public var permission: String
    public var children: [MenuNode]
}

extension Snapshot {
    /// The navigation composed from every active plugin's menu entries: sorted by order then id, nested under
    /// their parents. Entries `visible` rejects are left out together with their subtrees; an entry whose parent
    /// is missing or hidden shows at the top level only if the parent does not exist at all.
    public func menuTree(visible: (MenuDeclaration) -> Bool = { _ in true }) -> [MenuNode] {
        var all: [String: (MenuDeclaration, String)] = [:]
        for id in order { for m in plugins[id]?.menus ?? [] { all[m.entry.id] = (m.entry, id) } }
        let shown = all.filter { visible($0.value.0) }
        var children: [String: [String]] = [:]
        var roots: [String] = []
        for (id, (entry, _)) in shown {
            if !entry.parent.isEmpty, entry.parent != id, all[entry.parent] != nil {
                children[entry.parent, default: []].append(id)
            } else {
                roots.append(id)
            }
        }
        func build(_ ids: [String], depth: Int) -> [MenuNode] {
            guard depth < 16 else { return [] }
            return ids.compactMap { id -> MenuNode? in
                guard let (e, plugin) = shown[id] else { return nil }
                return MenuNode(id: e.id, title: e.title, link: e.link, icon: e.icon, order: e.order, pluginID: plugin,
                                permission: e.permission, children: build(children[id] ?? [], depth: depth + 1))
            }.sorted { ($0.order, $0.id) < ($1.order, $1.id) }
        }
        return build(roots, depth: 0)
    }
}
