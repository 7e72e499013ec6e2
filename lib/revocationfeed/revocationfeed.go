// Package revocationfeed follows the token service's revocation feed
// (mcpid.token.v1 ListRevocations then WatchRevocations) and answers "is this
// access token revoked?" from memory. The policy service and sdk/mcpguard
// use it so that a revoked JWT stops working within a second instead of at
// its expiry.
//
// The follower lists the current set, then watches from the listing's
// revision + 1. When the stream breaks it resumes from the last revision it
// received + 1, so a gap of any length misses nothing as long as etcd has not
// compacted it; when it has (OUT_OF_RANGE), the follower lists again. A
// stream that stays silent longer than MaxSilence (the service sends progress
// at least every 5 seconds) is treated as broken: Ready turns false so the
// caller fails closed, and the stream is reopened.
package revocationfeed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
)

// DefaultMaxSilence is how long the stream may stay silent before the
// follower stops being ready (three missed progress notifications).
const DefaultMaxSilence = 15 * time.Second

// listPageSize is the page size of a listing.
const listPageSize = 1000

// Source is the part of tokenv1.TokenServiceClient the follower uses.
type Source interface {
	ListRevocations(ctx context.Context, in *tokenv1.ListRevocationsRequest, opts ...grpc.CallOption) (*tokenv1.ListRevocationsResponse, error)
	WatchRevocations(ctx context.Context, in *tokenv1.WatchRevocationsRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[tokenv1.WatchRevocationsResponse], error)
}

// Config configures a Follower.
type Config struct {
	// Source is the token service (a tokenv1.TokenServiceClient).
	Source Source
	// Resource restricts the feed to one resource: "" = every resource
	// (policy); an MCP server passes its own (the only one it may read).
	Resource string
	// MaxSilence: Ready() turns false when the stream is silent longer
	// (default DefaultMaxSilence).
	MaxSilence time.Duration
	// Logger receives connection problems; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Token is what a revocation check needs of a verified access token.
type Token struct {
	JTI, GrantID, Subject, ClientID string
	Audience                        []string
	IssuedAt                        time.Time
}

// entry is one live revocation.
type entry struct {
	kind         tokenv1.RevocationKind
	issuedBefore time.Time
	expires      time.Time
}

type key struct {
	kind tokenv1.RevocationKind
	id   string
}

// Follower keeps the revocation set of one feed. Safe for concurrent use.
type Follower struct {
	cfg Config
	log *slog.Logger

	mu      sync.RWMutex
	set     map[key]entry
	synced  bool
	changed chan struct{} // closed and replaced whenever the revision moves

	revision  atomic.Int64
	lastHeard atomic.Int64 // unix nanoseconds of the last message or listing
}

// ErrUnknownKind means the feed carried a revocation kind this follower does
// not understand; it fails closed and lists again.
var ErrUnknownKind = errors.New("revocationfeed: unknown revocation kind")

// New returns a follower; Run fills it.
func New(cfg Config) (*Follower, error) {
	if cfg.Source == nil {
		return nil, errors.New("revocationfeed: Source is required")
	}
	if cfg.MaxSilence <= 0 {
		cfg.MaxSilence = DefaultMaxSilence
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Follower{cfg: cfg, log: log, set: map[key]entry{}, changed: make(chan struct{})}, nil
}

// Run lists, then watches, reconnecting with backoff and listing again when
// the service answers OUT_OF_RANGE, until ctx ends. It returns ctx's error.
func (f *Follower) Run(ctx context.Context) error {
	relist := true
	failures := 0
	for ctx.Err() == nil {
		if relist {
			if err := f.list(ctx); err != nil {
				if ctx.Err() != nil {
					break
				}
				failures++
				f.log.WarnContext(ctx, "listing revocations failed; retrying", "error", err.Error(), "failures", failures)
				f.backoff(ctx, failures)
				continue
			}
			relist = false
		}
		progressed, err := f.watch(ctx)
		if ctx.Err() != nil {
			break
		}
		if progressed {
			failures = 0
		}
		failures++
		switch {
		case status.Code(err) == codes.OutOfRange, errors.Is(err, ErrUnknownKind):
			f.log.WarnContext(ctx, "revocation feed must be listed again", "error", errString(err))
			relist = true
		default:
			f.log.WarnContext(ctx, "revocation feed interrupted; resuming", "error", errString(err), "revision", f.Revision())
		}
		f.backoff(ctx, failures)
	}
	return ctx.Err()
}

func errString(err error) string {
	if err == nil {
		return "stream ended"
	}
	return err.Error()
}

// list reads the whole current set at one revision and replaces the
// follower's set with it.
func (f *Follower) list(ctx context.Context) error {
	set := map[key]entry{}
	now := f.cfg.Now()
	var rev int64
	token := ""
	for pages := 0; ; pages++ {
		resp, err := f.cfg.Source.ListRevocations(ctx, &tokenv1.ListRevocationsRequest{
			PageSize: listPageSize, PageToken: token, Resource: f.cfg.Resource,
		})
		if err != nil {
			return fmt.Errorf("list revocations: %w", err)
		}
		rev = resp.GetRevision()
		for _, r := range resp.GetRevocations() {
			k, e, err := decode(r)
			if err != nil {
				return err
			}
			if now.Before(e.expires) {
				set[k] = e
			}
		}
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
	}
	// The listing replaces everything: its revision is where the watch
	// resumes, even if an earlier stream had seen more.
	f.mu.Lock()
	f.set = set
	f.synced = true
	f.revision.Store(rev)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	f.heard()
	return nil
}

// watch follows the stream from the current revision + 1 until it fails. It
// reports whether any message arrived (so backoff restarts).
func (f *Follower) watch(ctx context.Context) (bool, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := f.cfg.Source.WatchRevocations(sctx, &tokenv1.WatchRevocationsRequest{
		StartRevision: f.Revision() + 1, Resource: f.cfg.Resource,
	})
	if err != nil {
		return false, err
	}
	// Watchdog: a stream silent for longer than MaxSilence is reopened.
	msgs := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(f.cfg.MaxSilence)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-msgs:
				if !t.Stop() {
					select {
					case <-t.C:
					default:
					}
				}
				t.Reset(f.cfg.MaxSilence)
			case <-t.C:
				cancel(fmt.Errorf("revocation feed silent for %v", f.cfg.MaxSilence))
				return
			}
		}
	}()
	progressed := false
	for {
		msg, err := stream.Recv()
		if err != nil {
			if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
				return progressed, cause
			}
			if errors.Is(err, io.EOF) {
				return progressed, nil
			}
			return progressed, err
		}
		progressed = true
		select {
		case msgs <- struct{}{}:
		default:
		}
		if err := f.apply(msg); err != nil {
			return progressed, err
		}
	}
}

// apply adds one message's entries and moves the revision.
func (f *Follower) apply(msg *tokenv1.WatchRevocationsResponse) error {
	if len(msg.GetRevocations()) > 0 {
		now := f.cfg.Now()
		f.mu.Lock()
		for _, r := range msg.GetRevocations() {
			k, e, err := decode(r)
			if err != nil {
				f.mu.Unlock()
				return err
			}
			if now.Before(e.expires) {
				if old, ok := f.set[k]; !ok || !e.issuedBefore.Before(old.issuedBefore) {
					f.set[k] = e
				}
			}
		}
		f.pruneLocked(now)
		f.mu.Unlock()
	}
	f.advance(msg.GetRevision())
	f.heard()
	return nil
}

// pruneLocked drops expired entries once the set has grown.
func (f *Follower) pruneLocked(now time.Time) {
	if len(f.set) < 1024 || len(f.set)%256 != 0 {
		return
	}
	for k, e := range f.set {
		if !now.Before(e.expires) {
			delete(f.set, k)
		}
	}
}

func decode(r *tokenv1.Revocation) (key, entry, error) {
	switch r.GetKind() {
	case tokenv1.RevocationKind_REVOCATION_KIND_GRANT, tokenv1.RevocationKind_REVOCATION_KIND_TOKEN,
		tokenv1.RevocationKind_REVOCATION_KIND_USER, tokenv1.RevocationKind_REVOCATION_KIND_CLIENT,
		tokenv1.RevocationKind_REVOCATION_KIND_RESOURCE:
	default:
		return key{}, entry{}, fmt.Errorf("%w: %v", ErrUnknownKind, r.GetKind())
	}
	e := entry{kind: r.GetKind(), expires: r.GetExpireTime().AsTime()}
	if r.GetIssuedBefore() != nil {
		e.issuedBefore = r.GetIssuedBefore().AsTime()
	}
	return key{kind: r.GetKind(), id: r.GetId()}, e, nil
}

func (f *Follower) advance(rev int64) {
	for {
		cur := f.revision.Load()
		if rev <= cur {
			return
		}
		if f.revision.CompareAndSwap(cur, rev) {
			f.mu.Lock()
			close(f.changed)
			f.changed = make(chan struct{})
			f.mu.Unlock()
			return
		}
	}
}

func (f *Follower) heard() { f.lastHeard.Store(f.cfg.Now().UnixNano()) }

func (f *Follower) backoff(ctx context.Context, failures int) {
	d := min(100*time.Millisecond<<min(failures, 6), 5*time.Second)
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Ready reports whether the set is current: listed, and the stream heard
// from within MaxSilence. Callers must fail closed when it is false.
func (f *Follower) Ready() bool {
	f.mu.RLock()
	synced := f.synced
	f.mu.RUnlock()
	if !synced {
		return false
	}
	last := time.Unix(0, f.lastHeard.Load())
	return f.cfg.Now().Sub(last) <= f.cfg.MaxSilence
}

// Revoked reports whether t is revoked: by its grant, its jti, or a user,
// client or resource "issued before" watermark. Before the first listing it
// reports true (fail closed); check Ready for freshness.
func (f *Follower) Revoked(t Token) bool {
	now := f.cfg.Now()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !f.synced {
		return true
	}
	live := func(kind tokenv1.RevocationKind, id string) (entry, bool) {
		if id == "" {
			return entry{}, false
		}
		e, ok := f.set[key{kind: kind, id: id}]
		if !ok || !now.Before(e.expires) {
			return entry{}, false
		}
		return e, true
	}
	if _, ok := live(tokenv1.RevocationKind_REVOCATION_KIND_GRANT, t.GrantID); ok {
		return true
	}
	if _, ok := live(tokenv1.RevocationKind_REVOCATION_KIND_TOKEN, t.JTI); ok {
		return true
	}
	before := func(kind tokenv1.RevocationKind, id string) bool {
		e, ok := live(kind, id)
		return ok && t.IssuedAt.Before(e.issuedBefore)
	}
	if before(tokenv1.RevocationKind_REVOCATION_KIND_USER, t.Subject) || before(tokenv1.RevocationKind_REVOCATION_KIND_CLIENT, t.ClientID) {
		return true
	}
	for _, aud := range t.Audience {
		if before(tokenv1.RevocationKind_REVOCATION_KIND_RESOURCE, aud) {
			return true
		}
	}
	return false
}

// Revision is the etcd revision the set reflects: every revocation written
// at or before it is known.
func (f *Follower) Revision() int64 { return f.revision.Load() }

// WaitForRevision waits until the set reflects revision rev (for example a
// RevokeGrantsResponse.revision), or ctx ends.
func (f *Follower) WaitForRevision(ctx context.Context, rev int64) error {
	for {
		f.mu.RLock()
		ch := f.changed
		f.mu.RUnlock()
		if f.Revision() >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
