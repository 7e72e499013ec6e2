package auditemit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
)

// meterName is the instrumentation scope of this package's metrics.
const meterName = "github.com/mcpid/mcpid/lib/auditemit"

// Batcher defaults.
const (
	DefaultQueueSize       = 10_000
	DefaultMaxDelay        = time.Second
	DefaultMaxAttempts     = 3
	DefaultBatchMinBackoff = 100 * time.Millisecond
	DefaultBatchMaxBackoff = 2 * time.Second
	DefaultBatchTimeout    = 10 * time.Second
)

// Conditions Emit and Close report.
var (
	// ErrQueueFull: normal mode, the queue was full and the event was dropped
	// (and counted). Request paths usually ignore it.
	ErrQueueFull = errors.New("auditemit: emitter queue full; event dropped")
	// ErrClosed: the Batcher is closed (or closing) and takes no events.
	ErrClosed = errors.New("auditemit: emitter closed")
	// ErrNotDelivered: audit did not acknowledge the event (its batch failed
	// every attempt, or Close ran out of time before it was sent).
	ErrNotDelivered = errors.New("auditemit: event not delivered")
	// ErrRejected: audit answered REJECTED; the error is a *RejectedError.
	ErrRejected = errors.New("auditemit: event rejected by audit")
)

// RejectedError is audit's reason for rejecting one event (strict mode).
type RejectedError struct {
	EventID string
	Reason  auditv1.ErrorReason
	Message string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("%v: event %s: %v: %s", ErrRejected, e.EventID, e.Reason, e.Message)
}

// Unwrap returns ErrRejected.
func (e *RejectedError) Unwrap() error { return ErrRejected }

// Reasons of dropped events (attribute "reason" of
// mcpid.audit.emitter.events_dropped).
const (
	DropQueueFull  = "queue_full"  // normal mode, queue full
	DropSendFailed = "send_failed" // the batch failed every attempt
	DropRejected   = "rejected"    // audit answered REJECTED
	DropClosed     = "closed"      // emitted after Close, or not sent before Close's deadline
	DropInvalid    = "invalid"     // refused by Emit (ErrInvalidEvent)
)

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	// Appender delivers the batches. Required: a service without an audit
	// service to talk to has nothing to batch for.
	Appender Appender
	// Service is the emitting service's name ("token", "policy", ...).
	// Required.
	Service string
	// Strict makes Emit wait for audit's acknowledgement (see Batcher).
	Strict bool
	// QueueSize bounds the events waiting to be sent; zero means the
	// default.
	QueueSize int
	// MaxBatchEvents and MaxBatchBytes bound one AppendEvents call; zero (or
	// more than the contract allows) means the contract's limit. An event
	// larger than MaxBatchBytes goes alone.
	MaxBatchEvents int
	MaxBatchBytes  int
	// MaxDelay is the longest an event waits for its batch to fill before
	// it is sent (normal mode); zero means the default.
	MaxDelay time.Duration
	// MaxAttempts is how often a batch is sent before it is dropped; zero
	// means the default.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the jittered exponential wait between
	// attempts; zero means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds one AppendEvents call; zero means the default.
	CallTimeout time.Duration
	// MeterProvider provides the metrics; nil means no metrics.
	MeterProvider metric.MeterProvider
	// Logger receives failed and rejected batches; nil discards them.
	Logger *slog.Logger
	// IDs generates event ids; nil means a generator of its own.
	IDs *IDGenerator
	// Now stamps events without a time; nil means time.Now.
	Now func() time.Time
}

// Batcher delivers high-volume read-path events (client_credentials
// issuance, policy decisions) in batches through one background sender.
//
// Normal mode: Emit never blocks. It validates and stamps the event and puts
// it on a bounded queue; when the queue is full the event is dropped and
// counted (ErrQueueFull). The sender sends a batch when it holds
// MaxBatchEvents events (or MaxBatchBytes) or MaxDelay after its first
// event, retries a failed batch up to MaxAttempts times with backoff, then
// drops it and counts the events. Events in memory are lost by a crash: that
// is the trade made for never slowing a request down.
//
// Strict mode: Emit returns only once audit acknowledged the event
// (APPENDED or DUPLICATE), or with an error when it was rejected, its batch
// failed every attempt, or ctx ended. The sender does not wait for a batch
// to fill: it sends whatever is queued as soon as the previous call
// returned, so concurrent requests share calls (group commit) and a lone
// request pays one round trip.
//
// Metrics (instrumentation scope "github.com/mcpid/mcpid/lib/auditemit"):
// mcpid.audit.emitter.queue_depth (gauge), .events_sent, .events_dropped
// (attribute reason: see the Drop* constants) and .batches_failed (each
// failed AppendEvents call, retried or not).
//
// Close flushes what is queued. A Batcher is safe for concurrent use.
type Batcher struct {
	cfg    BatcherConfig
	stamp  stamper
	log    *slog.Logger
	queue  chan *item
	strict bool

	// mu orders Emit's enqueue against Close: once closed is set under the
	// write lock, no Emit is between its check and its send, so the final
	// drain sees every accepted event.
	mu       sync.RWMutex
	closed   bool
	stopEmit chan struct{} // closed by Close: wakes strict Emits waiting for room

	closing   chan struct{} // closed by Close: the sender flushes and exits
	closeOnce sync.Once
	ctx       context.Context // the sender's calls; cancelled when Close gives up
	cancel    context.CancelFunc
	done      chan struct{} // closed when the sender has exited
	lostClose int64         // events not delivered during Close; read after done

	m batcherMetrics
}

type item struct {
	ev   *auditv1.Event
	size int
	done chan error // strict mode: the outcome; nil in normal mode
}

type batcherMetrics struct {
	sent    metric.Int64Counter
	dropped metric.Int64Counter
	failed  metric.Int64Counter
	reg     metric.Registration
	// Prebuilt attribute options: Emit's drop path allocates nothing.
	reason map[string]metric.AddOption
}

// NewBatcher returns a running Batcher. Call Close to stop it.
func NewBatcher(cfg BatcherConfig) (*Batcher, error) {
	if cfg.Appender == nil {
		return nil, errors.New("auditemit: BatcherConfig.Appender is required")
	}
	st, err := newStamper(cfg.Service, cfg.IDs, cfg.Now)
	if err != nil {
		return nil, err
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxBatchEvents <= 0 || cfg.MaxBatchEvents > MaxBatchEvents {
		cfg.MaxBatchEvents = MaxBatchEvents
	}
	if cfg.MaxBatchBytes <= 0 || cfg.MaxBatchBytes > MaxBatchBytes {
		cfg.MaxBatchBytes = MaxBatchBytes
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = DefaultMaxDelay
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultBatchMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, DefaultBatchMaxBackoff)
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultBatchTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Batcher{
		cfg:      cfg,
		stamp:    st,
		log:      log,
		queue:    make(chan *item, cfg.QueueSize),
		strict:   cfg.Strict,
		stopEmit: make(chan struct{}),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	if err := b.initMetrics(cfg.MeterProvider); err != nil {
		return nil, err
	}
	// The sender's context is independent of any caller's: it lives until
	// Close finishes (or gives up).
	b.ctx, b.cancel = context.WithCancel(context.Background())
	go b.run()
	return b, nil
}

func (b *Batcher) initMetrics(mp metric.MeterProvider) error {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter(meterName)
	var err error
	if b.m.sent, err = m.Int64Counter("mcpid.audit.emitter.events_sent", metric.WithUnit("{event}"),
		metric.WithDescription("Batched audit events acknowledged by the audit service (appended or duplicate).")); err != nil {
		return fmt.Errorf("auditemit: metric: %w", err)
	}
	if b.m.dropped, err = m.Int64Counter("mcpid.audit.emitter.events_dropped", metric.WithUnit("{event}"),
		metric.WithDescription("Batched audit events given up, by reason.")); err != nil {
		return fmt.Errorf("auditemit: metric: %w", err)
	}
	if b.m.failed, err = m.Int64Counter("mcpid.audit.emitter.batches_failed", metric.WithUnit("{batch}"),
		metric.WithDescription("AppendEvents calls of the batched emitter that failed (retried or dropped).")); err != nil {
		return fmt.Errorf("auditemit: metric: %w", err)
	}
	depth, err := m.Int64ObservableGauge("mcpid.audit.emitter.queue_depth", metric.WithUnit("{event}"),
		metric.WithDescription("Audit events waiting in the emitter's bounded queue."))
	if err != nil {
		return fmt.Errorf("auditemit: metric: %w", err)
	}
	if b.m.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(depth, int64(len(b.queue)))
		return nil
	}, depth); err != nil {
		return fmt.Errorf("auditemit: metric: %w", err)
	}
	b.m.reason = map[string]metric.AddOption{}
	for _, r := range []string{DropQueueFull, DropSendFailed, DropRejected, DropClosed, DropInvalid} {
		b.m.reason[r] = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r)))
	}
	return nil
}

func (b *Batcher) drop(ctx context.Context, reason string, n int) {
	b.m.dropped.Add(ctx, int64(n), b.m.reason[reason])
}

// Emit validates ev, fills in its id, time, source_service and trace_id
// (from ctx's span) when unset, and queues it. The Batcher owns ev from then
// on: the caller must not change it.
//
// Normal mode: Emit does not block; it returns ErrQueueFull when the event
// was dropped for want of room. Strict mode: Emit waits for room in the
// queue and then for audit's answer, and returns nil only once the event is
// acknowledged; otherwise a *RejectedError, ErrNotDelivered, ErrClosed or
// ctx's error. After ctx ends the event may still be delivered.
//
// In both modes: ErrInvalidEvent for an event audit would reject,
// ErrClosed after Close.
func (b *Batcher) Emit(ctx context.Context, ev *auditv1.Event) error {
	size, err := b.stamp.stamp(ctx, ev)
	if err != nil {
		b.drop(ctx, DropInvalid, 1)
		return err
	}
	it := &item{ev: ev, size: size}
	if !b.strict {
		b.mu.RLock()
		defer b.mu.RUnlock()
		if b.closed {
			b.drop(ctx, DropClosed, 1)
			return ErrClosed
		}
		select {
		case b.queue <- it:
			return nil
		default:
			b.drop(ctx, DropQueueFull, 1)
			return ErrQueueFull
		}
	}

	it.done = make(chan error, 1)
	if err := b.enqueueWait(ctx, it); err != nil {
		return err
	}
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("auditemit: waiting for audit to acknowledge event %s: %w", ev.GetId(), ctx.Err())
	}
}

// enqueueWait queues it, waiting for room (strict mode).
func (b *Batcher) enqueueWait(ctx context.Context, it *item) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		b.drop(ctx, DropClosed, 1)
		return ErrClosed
	}
	select {
	case b.queue <- it:
		return nil
	case <-b.stopEmit:
		b.drop(ctx, DropClosed, 1)
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("auditemit: waiting for room in the emitter queue: %w", ctx.Err())
	}
}

// Close stops taking events and sends what is queued, within ctx: when ctx
// ends first, the calls in flight are cancelled and the remaining events are
// dropped (counted with reason "closed"). It returns nil when every queued
// event was acknowledged or rejected, an error wrapping ErrNotDelivered
// (and ctx's error, if that was the cause) otherwise. Only the first call
// does the work; later calls wait for it.
func (b *Batcher) Close(ctx context.Context) error {
	b.closeOnce.Do(func() {
		close(b.stopEmit) // strict Emits waiting for room give up, releasing mu
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		close(b.closing)
	})
	var ctxErr error
	select {
	case <-b.done:
	case <-ctx.Done():
		ctxErr = ctx.Err()
		b.cancel()
		<-b.done // the sender exits promptly once its context is cancelled
	}
	b.cancel()
	if b.lostClose > 0 {
		if ctxErr != nil {
			return fmt.Errorf("%w: %d events at close: %w", ErrNotDelivered, b.lostClose, ctxErr)
		}
		return fmt.Errorf("%w: %d events at close", ErrNotDelivered, b.lostClose)
	}
	return nil
}

// run is the sender: it collects batches from the queue and sends them, one
// call at a time, until Close.
func (b *Batcher) run() {
	defer close(b.done)
	defer func() { _ = b.m.reg.Unregister() }()
	var (
		batch []*item
		bytes int
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		timer.Stop()
		if len(batch) > 0 {
			b.send(batch)
			batch, bytes = nil, 0
		}
	}
	// add appends it to the batch, sending the batch first if it would grow
	// past MaxBatchBytes, and after if it is full.
	add := func(it *item) {
		n := requestEntrySize(it.size)
		if len(batch) > 0 && bytes+n > b.cfg.MaxBatchBytes {
			flush()
		}
		if len(batch) == 0 && !b.strict {
			timer.Reset(b.cfg.MaxDelay)
		}
		batch = append(batch, it)
		bytes += n
		if len(batch) >= b.cfg.MaxBatchEvents {
			flush()
		}
	}
	for {
		select {
		case it := <-b.queue:
			add(it)
			if b.strict {
				// Group commit: take what is queued right now, then send.
				for more := true; more && len(batch) > 0; {
					select {
					case it := <-b.queue:
						add(it)
					default:
						more = false
					}
				}
				flush()
			}
		case <-timer.C:
			flush()
		case <-b.closing:
			// Emit no longer sends (closed is set under the lock before
			// closing is closed), so this drains everything accepted.
			for drained := false; !drained; {
				select {
				case it := <-b.queue:
					add(it)
				default:
					drained = true
				}
			}
			flush()
			return
		}
	}
}

// send delivers one batch, with up to MaxAttempts calls, and settles every
// event in it.
func (b *Batcher) send(batch []*item) {
	ctx := b.ctx
	req := &auditv1.AppendEventsRequest{Events: make([]*auditv1.Event, len(batch))}
	for i, it := range batch {
		req.Events[i] = it.ev
	}
	var lastErr error
	for attempt := 1; attempt <= b.cfg.MaxAttempts && ctx.Err() == nil; attempt++ {
		if attempt > 1 && !sleep(ctx, backoffDelay(b.cfg.MinBackoff, b.cfg.MaxBackoff, attempt-1)) {
			break
		}
		cctx, cancel := context.WithTimeout(ctx, b.cfg.CallTimeout)
		resp, err := b.cfg.Appender.AppendEvents(cctx, req)
		cancel()
		if err == nil {
			err = checkResponse(req, resp)
		}
		if err == nil {
			b.settle(batch, resp)
			return
		}
		lastErr = err
		b.m.failed.Add(ctx, 1)
		b.log.Warn("auditemit: sending audit events failed", "events", len(batch), "attempt", attempt, "error", err)
	}

	reason := DropSendFailed
	select {
	case <-b.closing:
		b.lostClose += int64(len(batch))
		if ctx.Err() != nil {
			reason = DropClosed
		}
	default:
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	b.log.Error("auditemit: audit events dropped", "events", len(batch), "reason", reason, "error", lastErr)
	b.drop(context.Background(), reason, len(batch))
	err := fmt.Errorf("%w: %w", ErrNotDelivered, lastErr)
	for _, it := range batch {
		if it.done != nil {
			it.done <- err
		}
	}
}

// settle reports audit's answer for each event of a delivered batch.
func (b *Batcher) settle(batch []*item, resp *auditv1.AppendEventsResponse) {
	sent := 0
	for i, res := range resp.GetResults() {
		var err error
		if acknowledged(res.GetStatus()) {
			sent++
		} else {
			err = &RejectedError{EventID: res.GetEventId(), Reason: res.GetReason(), Message: res.GetMessage()}
			b.drop(context.Background(), DropRejected, 1)
			b.log.Error("auditemit: audit rejected an event", "event_id", res.GetEventId(), "reason", res.GetReason().String(), "message", res.GetMessage())
		}
		if batch[i].done != nil {
			batch[i].done <- err
		}
	}
	b.m.sent.Add(context.Background(), int64(sent))
}
