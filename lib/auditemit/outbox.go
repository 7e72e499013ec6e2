package auditemit

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
)

// Collections below a service's prefix.
const (
	outboxCollection     = "outbox"
	deadLetterCollection = "outbox-dead"
)

// OutboxPrefix returns "/mcpid/<service>/outbox/": one key per pending
// event, named by its id, holding the event in proto binary.
func OutboxPrefix(service string) (etcdstore.Prefix, error) {
	p, err := etcdstore.NewPrefix(service)
	if err != nil {
		return "", err
	}
	return p.Sub(outboxCollection), nil
}

// DeadLetterPrefix returns "/mcpid/<service>/outbox-dead/": the events audit
// rejected (or the relay could not read), under their outbox key name and
// with their outbox value, kept for an operator to inspect, fix and move
// back.
func DeadLetterPrefix(service string) (etcdstore.Prefix, error) {
	p, err := etcdstore.NewPrefix(service)
	if err != nil {
		return "", err
	}
	return p.Sub(deadLetterCollection), nil
}

// OutboxConfig configures an Outbox.
type OutboxConfig struct {
	// Service is the emitting service's name ("registration", "token",
	// "policy", "audit"). Required.
	Service string
	// IDs generates event ids; nil means a generator of its own on Now and
	// crypto/rand.
	IDs *IDGenerator
	// Now stamps events without a time; nil means time.Now.
	Now func() time.Time
}

// Outbox writes a service's state-change events into its outbox prefix,
// inside the transaction that makes the change. It holds no connection: the
// caller's transaction does the writing. It is safe for concurrent use.
type Outbox struct {
	stamp  stamper
	prefix etcdstore.Prefix
}

// NewOutbox returns the outbox of cfg.Service.
func NewOutbox(cfg OutboxConfig) (*Outbox, error) {
	st, err := newStamper(cfg.Service, cfg.IDs, cfg.Now)
	if err != nil {
		return nil, err
	}
	p, err := OutboxPrefix(cfg.Service)
	if err != nil {
		return nil, err
	}
	return &Outbox{stamp: st, prefix: p}, nil
}

// Prefix returns the outbox prefix.
func (o *Outbox) Prefix() etcdstore.Prefix { return o.prefix }

// Key returns the outbox key of the event with this id.
func (o *Outbox) Key(id string) string { return o.prefix.Key(id) }

// Op validates ev, fills in its id, time, source_service and trace_id (from
// ctx's span) when unset, and returns the operation that writes it to the
// outbox. Pass it as an extra op to the etcdstore write that makes the
// change (Create, Update, DeleteFunc, Delete ...): the event is stored if and
// only if that transaction commits. ev.Id names the stored event afterwards.
//
// The error wraps ErrInvalidEvent when audit would reject the event for
// good; the change should then not be made either, since it could not be
// audited.
//
// The key is deliberately written without a lease even when the record is
// lease-bound (etcdstore.PutOp would join the record's lease): an event must
// outlive an expiring record until the relay has delivered it.
//
// An UpdateFunc may run several times; calling Op again for the same ev
// reuses the id it was given, and only the committed attempt's event lands.
func (o *Outbox) Op(ctx context.Context, ev *auditv1.Event) (etcdstore.Op, error) {
	if _, err := o.stamp.stamp(ctx, ev); err != nil {
		return etcdstore.Op{}, err
	}
	b, err := proto.Marshal(ev)
	if err != nil {
		return etcdstore.Op{}, fmt.Errorf("auditemit: encode event: %w", err)
	}
	return etcdstore.RawOp(clientv3.OpPut(o.Key(ev.GetId()), string(b))), nil
}
