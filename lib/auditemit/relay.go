package auditemit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
)

// Relay defaults.
const (
	DefaultRelayMinBackoff     = 100 * time.Millisecond
	DefaultRelayMaxBackoff     = 10 * time.Second
	DefaultRelayCallTimeout    = 30 * time.Second
	DefaultRelayResyncInterval = time.Minute
)

const (
	// deleteChunk keys are deleted per transaction: well below etcd's
	// default limit of 128 operations per transaction.
	deleteChunk = 64
	// settleTimeout bounds the etcd writes that follow an acknowledgement.
	// They run even when Run's context has ended, so that a shutdown right
	// after an answer does not leave acknowledged events to be sent again.
	settleTimeout = 5 * time.Second
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Client reads, watches and deletes the outbox. Required.
	Client etcdstore.WatchClient
	// Service is the service whose outbox is relayed. Required.
	Service string
	// Appender delivers the events. Nil means no audit service is
	// configured: Run then leaves the outbox untouched.
	Appender Appender
	// Logger receives failures and dead-lettered events; nil discards them.
	Logger *slog.Logger
	// MeterProvider provides the relay's metrics; nil means no metrics.
	MeterProvider metric.MeterProvider
	// MaxBatchEvents and MaxBatchBytes bound one AppendEvents call; zero
	// (or more than the contract's MaxBatchEvents / MaxBatchBytes) means the
	// contract's limit. An event larger than MaxBatchBytes goes alone.
	MaxBatchEvents int
	MaxBatchBytes  int
	// MinBackoff and MaxBackoff bound the jittered exponential wait after a
	// failure (of the audit service or etcd); zero means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds one AppendEvents call; zero means the default.
	CallTimeout time.Duration
	// ResyncInterval is how often an idle relay reads the outbox even
	// without a watch event, a safety net under the watch; zero means the
	// default.
	ResyncInterval time.Duration
}

// Relay forwards one service's outbox to the audit service. It lists the
// outbox in key (that is, id) order, sends the events in batches within the
// contract's limits, deletes each event only after audit answered APPENDED
// or DUPLICATE for it (with a compare on its ModRevision), and moves each
// REJECTED event to the dead-letter prefix in one transaction, logging
// audit's reason. When the outbox is empty it watches it from the revision
// of that empty read (WithRequireLeader; after a compaction it reads the
// outbox again), so nothing committed in between is missed.
//
// Failures are retried, never given up: a failed call or etcd error waits a
// jittered exponential backoff and starts again from the oldest event left,
// so order is kept and nothing is lost. A crash between audit's answer and
// the delete leaves the events in the outbox; they are sent again and
// answered DUPLICATE.
//
// Several replicas of a service may run a Relay on the same outbox at once.
// That is safe because AppendEvents is idempotent by event id (a resend is
// answered DUPLICATE with the original sequence) and each delete is guarded
// by the key's ModRevision; it only costs duplicate calls. For the same
// reason delivery is in id order among the events present when the relay
// reads: an event committed after a later id was already delivered (a slow
// transaction, clocks of two replicas apart) is delivered when it is seen.
// The audit sequence, not the id, is the trail's total order.
type Relay struct {
	cfg    RelayConfig
	log    *slog.Logger
	prefix etcdstore.Prefix
	dead   etcdstore.Prefix

	delivered    metric.Int64Counter
	deadLettered metric.Int64Counter
	sendFailures metric.Int64Counter
}

// NewRelay returns a relay; it works once Run is called.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Client == nil {
		return nil, errors.New("auditemit: RelayConfig.Client is required")
	}
	if _, err := SourceServiceOf(cfg.Service); err != nil {
		return nil, err
	}
	prefix, err := OutboxPrefix(cfg.Service)
	if err != nil {
		return nil, err
	}
	dead, err := DeadLetterPrefix(cfg.Service)
	if err != nil {
		return nil, err
	}
	if cfg.MaxBatchEvents <= 0 || cfg.MaxBatchEvents > MaxBatchEvents {
		cfg.MaxBatchEvents = MaxBatchEvents
	}
	if cfg.MaxBatchBytes <= 0 || cfg.MaxBatchBytes > MaxBatchBytes {
		cfg.MaxBatchBytes = MaxBatchBytes
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultRelayMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, DefaultRelayMaxBackoff)
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultRelayCallTimeout
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = DefaultRelayResyncInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	r := &Relay{cfg: cfg, log: log.With("outbox", string(prefix)), prefix: prefix, dead: dead}
	m := mp.Meter(meterName)
	if r.delivered, err = m.Int64Counter("mcpid.audit.outbox.delivered", metric.WithUnit("{event}"),
		metric.WithDescription("Outbox events acknowledged by the audit service (appended or duplicate) and deleted.")); err != nil {
		return nil, fmt.Errorf("auditemit: metric: %w", err)
	}
	if r.deadLettered, err = m.Int64Counter("mcpid.audit.outbox.dead_lettered", metric.WithUnit("{event}"),
		metric.WithDescription("Outbox events moved to the dead-letter prefix (rejected by audit, or unreadable).")); err != nil {
		return nil, fmt.Errorf("auditemit: metric: %w", err)
	}
	if r.sendFailures, err = m.Int64Counter("mcpid.audit.outbox.send_failures", metric.WithUnit("{call}"),
		metric.WithDescription("AppendEvents calls of the outbox relay that failed and will be retried.")); err != nil {
		return nil, fmt.Errorf("auditemit: metric: %w", err)
	}
	return r, nil
}

// Run relays until ctx ends, then returns ctx.Err(). Failures are logged and
// retried, never returned. Without an Appender it only waits for ctx: the
// outbox keeps its events for a relay that can deliver them.
func (r *Relay) Run(ctx context.Context) error {
	if r.cfg.Appender == nil {
		r.log.Info("auditemit: no audit service configured; the outbox keeps its events")
		<-ctx.Done()
		return ctx.Err()
	}
	failures := 0
	for {
		rev, err := r.drain(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			failures++
			r.log.Warn("auditemit: relaying the outbox failed; retrying", "error", err, "failures", failures)
			r.backoff(ctx, failures)
			continue
		}
		failures = 0
		if err := r.wait(ctx, rev); err != nil && ctx.Err() == nil {
			// Wait before reading again, so a watch that fails at once
			// (no leader) does not turn into a hot loop.
			r.log.Warn("auditemit: outbox watch failed", "error", err)
			r.backoff(ctx, 1)
		}
	}
}

// drain delivers the outbox from its oldest event until it is empty, and
// returns the revision at which it was read empty.
func (r *Relay) drain(ctx context.Context) (int64, error) {
	for {
		resp, err := r.cfg.Client.Get(ctx, string(r.prefix),
			clientv3.WithRange(clientv3.GetPrefixRangeEnd(string(r.prefix))),
			clientv3.WithLimit(int64(r.cfg.MaxBatchEvents)))
		if err != nil {
			return 0, fmt.Errorf("list %q: %w", r.prefix, err)
		}
		if len(resp.Kvs) == 0 {
			return resp.Header.Revision, nil
		}
		if err := r.deliver(ctx, resp.Kvs); err != nil {
			return 0, err
		}
	}
}

// pending is an outbox entry on its way.
type pending struct {
	kv *mvccpb.KeyValue
	id string
}

// deliver sends the leading events of kvs (in key order) that fit one
// batch and settles each according to audit's answer. It returns an error
// when any sent event is still in the outbox afterwards (failed call, etcd
// error), so that the caller backs off before starting again from the
// oldest event.
func (r *Relay) deliver(ctx context.Context, kvs []*mvccpb.KeyValue) error {
	req := &auditv1.AppendEventsRequest{}
	var batch []pending
	size := 0
	for _, kv := range kvs {
		ev, why := r.decode(kv)
		if why != "" {
			// Sending it could only fail forever and block the outbox.
			if err := r.moveToDeadLetter(ctx, kv, why, ""); err != nil {
				return err
			}
			continue
		}
		n := requestEntrySize(len(kv.Value))
		if len(batch) > 0 && size+n > r.cfg.MaxBatchBytes {
			break
		}
		size += n
		req.Events = append(req.Events, ev)
		batch = append(batch, pending{kv: kv, id: ev.GetId()})
	}
	if len(batch) == 0 {
		return nil // all were dead-lettered; read again
	}

	cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	resp, err := r.cfg.Appender.AppendEvents(cctx, req)
	cancel()
	if err == nil {
		err = checkResponse(req, resp)
	}
	if err != nil {
		r.sendFailures.Add(ctx, 1)
		return fmt.Errorf("append %d events from %s: %w", len(batch), batch[0].id, err)
	}

	// Settle even if ctx has just ended: audit has the events now.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer scancel()
	var acked []*mvccpb.KeyValue
	for i, res := range resp.GetResults() {
		if acknowledged(res.GetStatus()) {
			acked = append(acked, batch[i].kv)
			continue
		}
		if err := r.moveToDeadLetter(sctx, batch[i].kv, res.GetReason().String(), res.GetMessage()); err != nil {
			return err
		}
	}
	if err := r.deleteAcked(sctx, acked); err != nil {
		return err
	}
	r.delivered.Add(ctx, int64(len(acked)))
	return nil
}

// decode reads an outbox value; a non-empty reason says why it cannot be
// sent.
func (r *Relay) decode(kv *mvccpb.KeyValue) (*auditv1.Event, string) {
	if len(kv.Value) > MaxEventSize {
		return nil, fmt.Sprintf("event of %d bytes exceeds %d", len(kv.Value), MaxEventSize)
	}
	ev := &auditv1.Event{}
	if err := proto.Unmarshal(kv.Value, ev); err != nil {
		return nil, "undecodable event: " + err.Error()
	}
	// The key names the event; a mismatch means the value was not written by
	// Outbox.Op, and deleting by one id after audit acknowledged the other
	// would be wrong.
	if r.prefix.Key(ev.GetId()) != string(kv.Key) {
		return nil, fmt.Sprintf("event id %q does not match its key", ev.GetId())
	}
	return ev, ""
}

// deleteAcked deletes the acknowledged keys, each only if unchanged since it
// was read. A chunk whose compare fails (another relay replica deleted a key
// first) is retried key by key, skipping keys that are gone or changed.
func (r *Relay) deleteAcked(ctx context.Context, kvs []*mvccpb.KeyValue) error {
	for len(kvs) > 0 {
		chunk := kvs[:min(len(kvs), deleteChunk)]
		kvs = kvs[len(chunk):]
		cmps := make([]clientv3.Cmp, len(chunk))
		ops := make([]clientv3.Op, len(chunk))
		for i, kv := range chunk {
			cmps[i] = clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)
			ops[i] = clientv3.OpDelete(string(kv.Key))
		}
		resp, err := r.cfg.Client.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("delete delivered events: %w", err)
		}
		if resp.Succeeded {
			continue
		}
		for i, kv := range chunk {
			if _, err := r.cfg.Client.Txn(ctx).If(cmps[i]).Then(ops[i]).Commit(); err != nil {
				return fmt.Errorf("delete delivered event %q: %w", kv.Key, err)
			}
		}
	}
	return nil
}

// moveToDeadLetter moves one outbox entry to the dead-letter prefix, in one
// transaction guarded by its ModRevision, and logs why.
func (r *Relay) moveToDeadLetter(ctx context.Context, kv *mvccpb.KeyValue, reason, message string) error {
	key := string(kv.Key)
	deadKey := string(r.dead) + key[len(r.prefix):]
	resp, err := r.cfg.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
		Then(clientv3.OpDelete(key), clientv3.OpPut(deadKey, string(kv.Value))).
		Commit()
	if err != nil {
		return fmt.Errorf("move %q to dead letter: %w", key, err)
	}
	if resp.Succeeded {
		r.deadLettered.Add(ctx, 1)
		r.log.Error("auditemit: outbox event moved to dead letter", "key", key, "dead_letter_key", deadKey, "reason", reason, "message", message)
	}
	return nil
}

// wait watches the outbox from the revision after rev and returns when
// there may be something to deliver: an event was written, the watch
// revision was compacted (the caller reads the outbox again, which is the
// re-list), the resync interval passed, or ctx ended. It returns an error
// when the watch broke.
func (r *Relay) wait(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Deletes are filtered out: the relay's own deletes must not wake it.
	wch := r.cfg.Client.Watch(wctx, string(r.prefix),
		clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterDelete())
	resync := time.NewTimer(r.cfg.ResyncInterval)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			return nil
		case wr, ok := <-wch:
			switch {
			case !ok:
				return errors.New("watch channel closed")
			case wr.CompactRevision != 0:
				r.log.Info("auditemit: outbox watch revision compacted; reading the outbox again", "revision", rev+1, "compact_revision", wr.CompactRevision)
				return nil
			case wr.Err() != nil:
				return wr.Err()
			case len(wr.Events) > 0:
				return nil
			}
		}
	}
}

// backoff waits a jittered exponential delay (half fixed, half random, so
// that replicas spread out), or until ctx ends.
func (r *Relay) backoff(ctx context.Context, failures int) {
	sleep(ctx, backoffDelay(r.cfg.MinBackoff, r.cfg.MaxBackoff, failures))
}

func backoffDelay(minD, maxD time.Duration, failures int) time.Duration {
	d := maxD
	if shift := failures - 1; shift >= 0 && shift < 30 && minD<<shift < maxD {
		d = minD << shift
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends, reporting whether the full d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
