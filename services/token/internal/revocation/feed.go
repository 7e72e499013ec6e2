package revocation

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// Feed errors; the gRPC layer maps them.
var (
	// ErrCompacted: the requested revision (or the listing's) is compacted.
	ErrCompacted = errors.New("revocation: revision compacted")
	// ErrAhead: the requested start revision is beyond the store's.
	ErrAhead = errors.New("revocation: start revision ahead of the store")
	// ErrInvalidPageToken: the page token is not one of ours.
	ErrInvalidPageToken = errors.New("revocation: invalid page token")
	// ErrWatchLost: etcd ended the watch (connection lost, no leader).
	ErrWatchLost = errors.New("revocation: watch lost")
)

// Page sizes of ListRevocations.
const (
	DefaultListPageSize = 1000
	MaxListPageSize     = 5000
)

// DefaultProgressEvery is how often a watch asks etcd for a progress
// notification, and the silence after which it repeats its last revision
// (the contract promises a message at least every 5 seconds of quiet; two
// intervals is the longest gap).
const DefaultProgressEvery = 2 * time.Second

// Feed serves the revocation set to followers: a paginated listing at one
// revision and a watch from a revision, filtered by resource.
type Feed struct {
	cli           *clientv3.Client
	prefix        etcdstore.Prefix
	now           func() time.Time
	progressEvery time.Duration
}

// NewFeed returns the feed over the revocation prefix.
func NewFeed(cli *clientv3.Client, prefix etcdstore.Prefix, now func() time.Time, progressEvery time.Duration) *Feed {
	if now == nil {
		now = time.Now
	}
	if progressEvery <= 0 {
		progressEvery = DefaultProgressEvery
	}
	return &Feed{cli: cli, prefix: prefix, now: now, progressEvery: progressEvery}
}

// Relevant reports whether r concerns resource ("" = every resource): GRANT
// and TOKEN entries of the resource, its RESOURCE watermark, and every USER
// and CLIENT watermark.
func Relevant(r *store.Revocation, res string) bool {
	if res == "" {
		return true
	}
	switch r.Kind {
	case store.RevokeGrant, store.RevokeToken:
		return r.Resource == res
	case store.RevokeResource:
		return r.ID == res
	default:
		return true
	}
}

// Proto converts a stored entry.
func Proto(r *store.Revocation, rev int64) *tokenv1.Revocation {
	out := &tokenv1.Revocation{Id: r.ID, Resource: r.Resource, ExpireTime: timestamppb.New(r.Expires), Revision: rev}
	switch r.Kind {
	case store.RevokeGrant:
		out.Kind = tokenv1.RevocationKind_REVOCATION_KIND_GRANT
	case store.RevokeToken:
		out.Kind = tokenv1.RevocationKind_REVOCATION_KIND_TOKEN
	case store.RevokeUser:
		out.Kind = tokenv1.RevocationKind_REVOCATION_KIND_USER
	case store.RevokeClient:
		out.Kind = tokenv1.RevocationKind_REVOCATION_KIND_CLIENT
	case store.RevokeResource:
		out.Kind = tokenv1.RevocationKind_REVOCATION_KIND_RESOURCE
	}
	if !r.IssuedBefore.IsZero() {
		out.IssuedBefore = timestamppb.New(r.IssuedBefore)
	}
	return out
}

func decodeKV(kv *mvccpb.KeyValue) (*store.Revocation, error) {
	r := new(store.Revocation)
	if err := json.Unmarshal(kv.Value, r); err != nil {
		return nil, &store.DecodeError{Key: string(kv.Key), Err: err}
	}
	return r, nil
}

// List returns one page of live entries relevant to res, the revision the
// whole listing is read at, and the next page token.
func (f *Feed) List(ctx context.Context, res string, pageSize int, token string) ([]*tokenv1.Revocation, int64, string, error) {
	switch {
	case pageSize <= 0:
		pageSize = DefaultListPageSize
	case pageSize > MaxListPageSize:
		pageSize = MaxListPageSize
	}
	from := string(f.prefix)
	var rev int64
	if token != "" {
		after, r, err := decodeToken(token)
		if err != nil {
			return nil, 0, "", err
		}
		from, rev = string(f.prefix)+after+"\x00", r
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(string(f.prefix))), clientv3.WithLimit(int64(pageSize))}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := f.cli.Get(ctx, from, opts...)
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return nil, 0, "", fmt.Errorf("%w: %w", ErrCompacted, err)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return nil, 0, "", ErrInvalidPageToken
	case err != nil:
		return nil, 0, "", fmt.Errorf("revocation: list: %w", err)
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	now := f.now()
	var out []*tokenv1.Revocation
	for _, kv := range resp.Kvs {
		r, err := decodeKV(kv)
		if err != nil {
			return nil, 0, "", err
		}
		if !now.Before(r.Expires) || !Relevant(r, res) {
			continue
		}
		out = append(out, Proto(r, kv.ModRevision))
	}
	next := ""
	if resp.More && len(resp.Kvs) > 0 {
		next = encodeToken(rev, string(resp.Kvs[len(resp.Kvs)-1].Key)[len(f.prefix):])
	}
	return out, rev, next, nil
}

func encodeToken(rev int64, after string) string {
	b := binary.AppendUvarint([]byte{1}, uint64(rev))
	return base64.RawURLEncoding.EncodeToString(append(b, after...))
}

func decodeToken(tok string) (string, int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 2 || b[0] != 1 || len(tok) > 4096 {
		return "", 0, ErrInvalidPageToken
	}
	r, n := binary.Uvarint(b[1:])
	if n <= 0 || r == 0 || r > 1<<62 || 1+n == len(b) {
		return "", 0, ErrInvalidPageToken
	}
	return string(b[1+n:]), int64(r), nil
}

// Watch sends the entries relevant to res written from revision start on
// (0: from now), one message per revision, plus progress notifications: one
// when the watch is established, one whenever etcd confirms progress (asked
// every progressEvery), and one repeating the last revision sent whenever a
// whole progressEvery passed without any message. It returns when ctx ends
// (nil), when send fails, or with ErrCompacted, ErrAhead or ErrWatchLost.
//
// The repeat is what keeps a quiet stream alive: etcd answers a progress
// request only when every watcher on the client's shared watch stream is
// synced and has reached its start revision, so while nothing at all is
// written (a watch from "now" starts one revision ahead of the store) or
// while another watcher on the stream is catching up, it answers nothing,
// and its own progress notifications (WithProgressNotify) come only every
// ten minutes by default. The repeat claims nothing new: every revocation
// up to last has been sent.
func (f *Feed) Watch(ctx context.Context, start int64, res string, send func(*tokenv1.WatchRevocationsResponse) error) error {
	head, err := f.cli.Get(ctx, string(f.prefix), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrWatchLost, err)
	}
	cur := head.Header.Revision
	switch {
	case start < 0:
		return ErrAhead
	case start == 0:
		start = cur + 1
	case start > cur+1:
		return ErrAhead
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := f.cli.Watch(wctx, string(f.prefix), clientv3.WithPrefix(), clientv3.WithRev(start),
		clientv3.WithFilterDelete(), clientv3.WithProgressNotify())
	last := start - 1
	// Everything before start is, by the caller's own listing, delivered.
	if err := send(&tokenv1.WatchRevocationsResponse{Revision: last}); err != nil {
		return err
	}
	tick := time.NewTicker(f.progressEvery)
	defer tick.Stop()
	// sent counts messages, so a tick knows whether the last interval was
	// silent.
	sent, sentAtTick := 1, 0
	send = func(inner func(*tokenv1.WatchRevocationsResponse) error) func(*tokenv1.WatchRevocationsResponse) error {
		return func(m *tokenv1.WatchRevocationsResponse) error {
			sent++
			return inner(m)
		}
	}(send)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if sent == sentAtTick {
				// Silent for a whole interval (at most two intervals between
				// messages, within the contract's 5 seconds).
				if err := send(&tokenv1.WatchRevocationsResponse{Revision: last}); err != nil {
					return err
				}
			}
			sentAtTick = sent
			// Asks etcd to confirm a newer revision; a lost or unanswered
			// request only means the repeat above carries the stream.
			_ = f.cli.RequestProgress(wctx)
		case wresp, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return ErrWatchLost
			}
			if wresp.CompactRevision != 0 || errors.Is(wresp.Err(), rpctypes.ErrCompacted) {
				return fmt.Errorf("%w: at %d", ErrCompacted, wresp.CompactRevision)
			}
			if err := wresp.Err(); err != nil {
				return fmt.Errorf("%w: %w", ErrWatchLost, err)
			}
			if wresp.IsProgressNotify() {
				if wresp.Header.Revision >= last {
					last = wresp.Header.Revision
					if err := send(&tokenv1.WatchRevocationsResponse{Revision: last}); err != nil {
						return err
					}
				}
				continue
			}
			if err := f.sendEvents(wresp.Events, res, &last, send); err != nil {
				return err
			}
		}
	}
}

// sendEvents sends the events one message per revision. A revision with no
// relevant entry is still sent (empty, like a progress notification) so the
// follower's revision keeps up with the writer's.
func (f *Feed) sendEvents(evs []*clientv3.Event, res string, last *int64, send func(*tokenv1.WatchRevocationsResponse) error) error {
	var msg *tokenv1.WatchRevocationsResponse
	flush := func() error {
		if msg == nil {
			return nil
		}
		*last = msg.Revision
		err := send(msg)
		msg = nil
		return err
	}
	for _, ev := range evs {
		if ev.Type != mvccpb.PUT {
			continue
		}
		rev := ev.Kv.ModRevision
		if msg != nil && msg.Revision != rev {
			if err := flush(); err != nil {
				return err
			}
		}
		if msg == nil {
			msg = &tokenv1.WatchRevocationsResponse{Revision: rev}
		}
		r, err := decodeKV(ev.Kv)
		if err != nil {
			return err
		}
		if Relevant(r, res) {
			msg.Revocations = append(msg.Revocations, Proto(r, rev))
		}
	}
	return flush()
}
