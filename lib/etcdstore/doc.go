// Package etcdstore holds the etcd storage patterns every mcpid service
// uses, written once:
//
//   - Key layout: each service owns the prefix "/mcpid/<service>/" (Prefix)
//     and builds keys with Prefix.Key, which escapes every part so that user
//     input cannot reach another collection or collide with another key.
//   - Create-if-absent (CreateRevision == 0), with the record's index keys in
//     the same transaction and unique index keys guarded as absent too.
//   - Compare-and-swap on ModRevision with bounded, jittered retry (Update,
//     DeleteFunc) — never a blind overwrite, never a lost update.
//   - Expiry by lease (CreateWithTTL, PutWithTTL), not by sweeps.
//   - Paginated reads with opaque page tokens, every page read at the
//     revision of the first (List).
//   - A list-then-watch in-memory cache that re-lists after compaction
//     (Cache).
//
// Values are bytes: the services keep their storage structs separate from
// their API messages and encode them themselves.
package etcdstore
