// Package auditemit is the producer side of the audit trail: how the
// registration, token and policy services (and audit itself) hand their
// events to the audit service's AppendEvents (mcpid.audit.v1).
//
// There are two paths, chosen by what the event is about:
//
//   - State changes go through the Outbox. Outbox.Op returns an etcd
//     operation that the caller commits in the same transaction as the change
//     (etcdstore.Create, Update, Delete ... extra ops), so the event exists if
//     and only if the change does. A Relay then forwards the outbox to the
//     audit service in id order and deletes each entry only after audit
//     acknowledged it: no crash anywhere can lose an event, it can only cause
//     a resend that audit answers DUPLICATE.
//   - High-volume read-path events (client_credentials issuance, policy
//     decisions) go through a Batcher: a bounded in-memory queue, flushed by
//     size and by time, that never blocks a request. These events are the
//     one documented exception to "nothing only in memory": a crash or a full
//     queue loses them (counted in metrics). Strict mode closes the gap for
//     installations that want every event acknowledged before the request
//     answers.
//
// Both paths stamp events the same way: an id (a ULID, see IDGenerator), the
// time, the source service, and the trace id of the request's span, each only
// when the producer left it unset; and both refuse, before anything is
// written or queued, events the audit service would reject for good (no type,
// a type the service may not emit, no actor, another service's name, more
// than 32 KiB encoded).
//
// Until the audit service exists there is nowhere to deliver: a Relay
// without an Appender does nothing, and the outbox simply keeps the events
// for the relay that will drain it.
package auditemit
