package etcdstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Page sizes for List: a size <= 0 means DefaultPageSize, and larger sizes
// are clamped to MaxPageSize so that no request reads an unbounded range.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

const (
	tokenVersion = 1
	tokenHashLen = 8
	maxPageToken = 4096 // characters; longer tokens are not ours
)

// List returns up to pageSize keys under p in key order, and a token for the
// next page ("" after the last page). Every page of one listing is read at
// the revision of the first page, so the pages together are one consistent
// snapshot: writes made while paging are not seen. If that revision has been
// compacted meanwhile the answer is ErrPageTokenExpired (start again). A token
// is bound to p: with another prefix, or altered, the answer is
// ErrInvalidPageToken.
//
// Tokens are opaque to clients but not signed: a forged token can only move
// the starting key within p, or choose an older revision of p that etcd still
// retains. Do not hand a listing to a client whose right to p's history is in
// doubt.
func (s *Store) List(ctx context.Context, p Prefix, pageSize int, pageToken string) ([]*mvccpb.KeyValue, string, error) {
	var (
		after string
		rev   int64
	)
	if pageToken != "" {
		var err error
		if after, rev, err = decodePageToken(p, pageToken); err != nil {
			return nil, "", err
		}
	}
	pg, err := listPage(ctx, s.c, p, after, rev, clampPageSize(pageSize))
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return nil, "", fmt.Errorf("%w (revision %d compacted): %w", ErrPageTokenExpired, rev, err)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return nil, "", fmt.Errorf("%w: revision %d not reached", ErrInvalidPageToken, rev)
	case err != nil:
		return nil, "", err
	}
	next := ""
	if pg.more && len(pg.kvs) > 0 {
		next = encodePageToken(p, pg.rev, string(pg.kvs[len(pg.kvs)-1].Key))
	}
	return pg.kvs, next, nil
}

func clampPageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	default:
		return n
	}
}

type page struct {
	kvs  []*mvccpb.KeyValue
	more bool
	rev  int64
}

// listPage reads up to limit keys under p after the key p+after (from the
// start when after is ""), at rev (the current revision when 0).
func listPage(ctx context.Context, kv clientv3.KV, p Prefix, after string, rev int64, limit int) (page, error) {
	from := string(p)
	if after != "" {
		from = string(p) + after + "\x00" // the least key greater than p+after
	}
	opts := []clientv3.OpOption{
		clientv3.WithRange(clientv3.GetPrefixRangeEnd(string(p))),
		clientv3.WithLimit(int64(limit)),
	}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := kv.Get(ctx, from, opts...)
	if err != nil {
		return page{}, fmt.Errorf("etcdstore: list %q: %w", p, err)
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	return page{kvs: resp.Kvs, more: resp.More, rev: rev}, nil
}

// A page token is base64url(version | first 8 bytes of sha256(prefix) |
// uvarint revision | last key without the prefix).
func encodePageToken(p Prefix, rev int64, lastKey string) string {
	h := sha256.Sum256([]byte(p))
	b := make([]byte, 0, 1+tokenHashLen+binary.MaxVarintLen64+len(lastKey)-len(p))
	b = append(b, tokenVersion)
	b = append(b, h[:tokenHashLen]...)
	b = binary.AppendUvarint(b, uint64(rev))
	b = append(b, lastKey[len(p):]...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodePageToken(p Prefix, token string) (after string, rev int64, err error) {
	if len(token) > maxPageToken {
		return "", 0, fmt.Errorf("%w: too long", ErrInvalidPageToken)
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 1+tokenHashLen || b[0] != tokenVersion {
		return "", 0, fmt.Errorf("%w: malformed", ErrInvalidPageToken)
	}
	h := sha256.Sum256([]byte(p))
	if !bytes.Equal(b[1:1+tokenHashLen], h[:tokenHashLen]) {
		return "", 0, fmt.Errorf("%w: issued for another prefix", ErrInvalidPageToken)
	}
	b = b[1+tokenHashLen:]
	r, n := binary.Uvarint(b)
	if n <= 0 || r == 0 || r > 1<<62 || n == len(b) {
		return "", 0, fmt.Errorf("%w: malformed", ErrInvalidPageToken)
	}
	return string(b[n:]), int64(r), nil
}
