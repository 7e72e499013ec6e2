package store

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

// List implements Store.
func (s *Etcd) List(ctx context.Context, pageSize int, pageToken string) ([]*Record, string, error) {
	kvs, next, err := s.st.List(ctx, s.prefix, pageSize, pageToken)
	switch {
	case errors.Is(err, etcdstore.ErrInvalidPageToken):
		return nil, "", fmt.Errorf("%w: %w", ErrInvalidPageToken, err)
	case errors.Is(err, etcdstore.ErrPageTokenExpired):
		return nil, "", &RevisionError{Err: ErrCompacted}
	case err != nil:
		return nil, "", err
	}
	return s.decodeAll(kvs), next, nil
}

// decodeAll decodes records, leaving out any that do not decode (the cache
// does the same, and logs them).
func (s *Etcd) decodeAll(kvs []*mvccpb.KeyValue) []*Record {
	out := make([]*Record, 0, len(kvs))
	for _, kv := range kvs {
		if r, err := DecodeRecord(kv); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// ListAt implements Store.
func (s *Etcd) ListAt(ctx context.Context, rev int64, after string, limit int) ([]*Record, int64, bool, error) {
	from := string(s.prefix)
	if after != "" {
		from = s.key(after) + "\x00" // the least key after it
	}
	opts := []clientv3.OpOption{
		clientv3.WithRange(clientv3.GetPrefixRangeEnd(string(s.prefix))),
		clientv3.WithLimit(int64(limit)),
	}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.client.Get(ctx, from, opts...)
	if err != nil {
		return nil, 0, false, s.revisionError(ctx, err)
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	return s.decodeAll(resp.Kvs), rev, resp.More, nil
}

// revisionError maps etcd's compaction and future-revision errors.
func (s *Etcd) revisionError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return &RevisionError{Err: ErrCompacted, Revision: s.compactRevision(ctx)}
	case errors.Is(err, rpctypes.ErrFutureRev):
		cur, _ := s.CurrentRevision(ctx)
		return &RevisionError{Err: ErrFutureRevision, Revision: cur}
	}
	return err
}

// compactRevision finds the oldest revision still readable, 0 if unknown:
// etcd reports it only on watches, so open one at revision 1.
func (s *Etcd) compactRevision(ctx context.Context) int64 {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range s.client.Watch(wctx, string(s.prefix), clientv3.WithPrefix(), clientv3.WithRev(1)) {
		return wr.CompactRevision
	}
	return 0
}

// CurrentRevision implements Store.
func (s *Etcd) CurrentRevision(ctx context.Context) (int64, error) {
	resp, err := s.client.Get(ctx, string(s.prefix), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// Watch implements Store.
func (s *Etcd) Watch(ctx context.Context, startRev int64, fn func(WatchResponse) error) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.client.Watch(wctx, string(s.prefix), clientv3.WithPrefix(), clientv3.WithRev(startRev),
		clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-wch:
			if !ok {
				if err := ctx.Err(); err != nil {
					return err
				}
				return errors.New("store: watch closed")
			}
			if wr.CompactRevision != 0 {
				return &RevisionError{Err: ErrCompacted, Revision: wr.CompactRevision}
			}
			if err := wr.Err(); err != nil {
				return err
			}
			resp := WatchResponse{Revision: wr.Header.Revision}
			for _, ev := range wr.Events {
				resource, err := s.resourceOf(string(ev.Kv.Key))
				if err != nil {
					continue
				}
				ch := RecordChange{Resource: resource}
				if ev.Type == mvccpb.PUT {
					ch.Record, _ = DecodeRecord(ev.Kv)
				}
				if ev.PrevKv != nil {
					ch.Prev, _ = DecodeRecord(ev.PrevKv)
				}
				resp.Changes = append(resp.Changes, ch)
			}
			if len(wr.Events) > 0 {
				// The header of an event response may be ahead of its
				// events; only the last event's revision is delivered.
				resp.Revision = wr.Events[len(wr.Events)-1].Kv.ModRevision
			}
			if err := fn(resp); err != nil {
				return err
			}
		}
	}
}

// RequestProgress asks etcd for a progress notification on the watches of
// ctx (the context passed to Watch).
func (s *Etcd) RequestProgress(ctx context.Context) error {
	return s.client.RequestProgress(clientv3.WithRequireLeader(ctx))
}

func (s *Etcd) resourceOf(key string) (string, error) {
	parts, err := s.prefix.Parts(key)
	if err != nil {
		return "", err
	}
	if len(parts) != 1 {
		return "", fmt.Errorf("store: unexpected key %q", key)
	}
	return parts[0], nil
}
