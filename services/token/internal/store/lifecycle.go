package store

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

// Grant index names for ListGrantIDs and GrantFilter.
const (
	ByUser     = "user"
	ByClient   = "client"
	ByResource = "resource"
)

// GrantFilter selects grants. At most one of UserID, ClientID, Resource is
// served from an index; the other fields filter its results.
type GrantFilter struct {
	UserID, ClientID, Resource string
	// Type is GrantAuthorizationCode, GrantClientCredentials or "" (any).
	Type string
}

func (f GrantFilter) match(g *Grant) bool {
	return (f.UserID == "" || g.UserID == f.UserID) && (f.ClientID == "" || g.ClientID == f.ClientID) &&
		(f.Resource == "" || g.Resource == f.Resource) && (f.Type == "" || g.Type == f.Type)
}

// ConsentFilter selects consents (all fields optional).
type ConsentFilter struct {
	UserID, ClientID, Resource string
}

func (f ConsentFilter) match(c *Consent) bool {
	return (f.UserID == "" || c.UserID == f.UserID) && (f.ClientID == "" || c.ClientID == f.ClientID) &&
		(f.Resource == "" || c.Resource == f.Resource)
}

func (s *Etcd) grantIndex(by, id string) (etcdstore.Prefix, error) {
	switch by {
	case ByUser:
		return s.prefix.Sub(colGrantsByUser, id), nil
	case ByClient:
		return s.prefix.Sub(colGrantsByClient, id), nil
	case ByResource:
		return s.prefix.Sub(colGrantsByResource, id), nil
	}
	return "", fmt.Errorf("store: unknown grant index %q", by)
}

// ListGrants lists live grants matching f, one page (pages may hold fewer
// than pageSize grants when secondary filters drop some).
func (s *Etcd) ListGrants(ctx context.Context, f GrantFilter, pageSize int, pageToken string) ([]*Grant, string, error) {
	var idx etcdstore.Prefix
	switch {
	case f.UserID != "":
		idx = s.prefix.Sub(colGrantsByUser, f.UserID)
	case f.ClientID != "":
		idx = s.prefix.Sub(colGrantsByClient, f.ClientID)
	case f.Resource != "":
		idx = s.prefix.Sub(colGrantsByResource, f.Resource)
	}
	if idx == "" {
		kvs, next, err := s.db.List(ctx, s.prefix.Sub(colGrants), pageSize, pageToken)
		if err != nil {
			return nil, "", err
		}
		var out []*Grant
		for _, kv := range kvs {
			g, err := decode[Grant](kv)
			if err != nil {
				return nil, "", err
			}
			if s.live(g) && f.match(g) {
				out = append(out, g)
			}
		}
		return out, next, nil
	}
	kvs, next, err := s.db.List(ctx, idx, pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	var out []*Grant
	for _, kv := range kvs {
		parts, err := idx.Parts(string(kv.Key))
		if err != nil || len(parts) != 1 {
			continue
		}
		vg, err := s.GetGrant(ctx, parts[0])
		if errors.Is(err, ErrNotFound) {
			continue // index entry of a grant deleted in between
		}
		if err != nil {
			return nil, "", err
		}
		if f.match(vg.Value) {
			out = append(out, vg.Value)
		}
	}
	return out, next, nil
}

func (s *Etcd) live(g *Grant) bool { return g.Expires.IsZero() || s.now().Before(g.Expires) }

// ListGrantIDs returns the ids of every grant in an index (ByUser, ByClient,
// ByResource).
func (s *Etcd) ListGrantIDs(ctx context.Context, by, id string) ([]string, error) {
	p, err := s.grantIndex(by, id)
	if err != nil {
		return nil, err
	}
	var ids []string
	token := ""
	for {
		kvs, next, err := s.db.List(ctx, p, etcdstore.MaxPageSize, token)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			parts, err := p.Parts(string(kv.Key))
			if err != nil || len(parts) != 1 {
				continue
			}
			ids = append(ids, parts[0])
		}
		if next == "" {
			return ids, nil
		}
		token = next
	}
}

// DeleteGrant deletes the grant and its index keys (no revocation entry: the
// caller covers its tokens with a watermark), with extra. It reports whether
// the grant was present.
func (s *Etcd) DeleteGrant(ctx context.Context, id string, extra ...Op) (bool, error) {
	key := s.key(colGrants, id)
	for attempt := 1; attempt <= maxLoginAttempts; attempt++ {
		kv, err := s.db.Get(ctx, key)
		if errors.Is(err, ErrNotFound) {
			return false, s.AppendEvents(ctx, extra...)
		}
		if err != nil {
			return false, err
		}
		g, err := decode[Grant](kv)
		if err != nil {
			return false, err
		}
		ops := append([]clientv3.Op{clientv3.OpDelete(key)}, s.grantIndexDeletes(g)...)
		ops = append(ops, extraOps(extra)...)
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).Then(ops...).Commit()
		if err != nil {
			return false, fmt.Errorf("store: delete grant: %w", err)
		}
		if resp.Succeeded {
			return true, nil
		}
	}
	return false, ErrConflict
}

// ListConsents lists consents matching f, one page: by user from the primary
// records, by client from the client index, else every consent.
func (s *Etcd) ListConsents(ctx context.Context, f ConsentFilter, pageSize int, pageToken string) ([]*Consent, string, error) {
	if f.UserID == "" && f.ClientID != "" {
		idx := s.prefix.Sub(colConsentsByClient, f.ClientID)
		kvs, next, err := s.db.List(ctx, idx, pageSize, pageToken)
		if err != nil {
			return nil, "", err
		}
		var out []*Consent
		for _, kv := range kvs {
			parts, err := idx.Parts(string(kv.Key))
			if err != nil || len(parts) != 2 {
				continue
			}
			c, err := s.GetConsent(ctx, parts[0], f.ClientID, parts[1])
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, "", err
			}
			if f.match(c) {
				out = append(out, c)
			}
		}
		return out, next, nil
	}
	p := s.prefix.Sub(colConsents)
	if f.UserID != "" {
		p = s.prefix.Sub(colConsents, f.UserID)
	}
	kvs, next, err := s.db.List(ctx, p, pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	var out []*Consent
	for _, kv := range kvs {
		c, err := decode[Consent](kv)
		if err != nil {
			return nil, "", err
		}
		if f.match(c) {
			out = append(out, c)
		}
	}
	return out, next, nil
}

// DeleteConsent deletes one consent and its index key, with extra; it
// reports whether it was present.
func (s *Etcd) DeleteConsent(ctx context.Context, userID, clientID, resource string, extra ...Op) (bool, error) {
	key := s.key(colConsents, userID, clientID, resource)
	ops := append([]clientv3.Op{clientv3.OpDelete(key), clientv3.OpDelete(s.key(colConsentsByClient, clientID, userID, resource))}, extraOps(extra)...)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("store: delete consent: %w", err)
	}
	return resp.Succeeded, nil
}

// ActiveKeyPointer is the kid the active pointer of alg names, "" if none.
func (s *Etcd) ActiveKeyPointer(ctx context.Context, alg string) (string, error) {
	kid, err := s.ActiveKid(ctx, alg)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	return kid, err
}

// UpdateSigningKeys writes the key records in puts and, when newActive is
// set, points the active pointer of alg at it — only while the pointer still
// names expectActive ("" = absent), else ErrConflict. Rotation steps are each
// one such transaction, so two replicas cannot both move the lifecycle on.
func (s *Etcd) UpdateSigningKeys(ctx context.Context, alg, expectActive, newActive string, puts []*SigningKey, extra ...Op) error {
	pointer := s.key(colActiveKey, alg)
	cmp := clientv3.Compare(clientv3.Value(pointer), "=", expectActive)
	if expectActive == "" {
		cmp = clientv3.Compare(clientv3.CreateRevision(pointer), "=", 0)
	}
	var ops []clientv3.Op
	for _, k := range puts {
		ops = append(ops, clientv3.OpPut(s.key(colSigningKeys, k.Kid), encode(k)))
	}
	if newActive != "" {
		ops = append(ops, clientv3.OpPut(pointer, newActive))
	}
	ops = append(ops, extraOps(extra)...)
	resp, err := s.cli.Txn(ctx).If(cmp).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("store: update signing keys: %w", err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// ElectionPrefix implements Store.
func (s *Etcd) ElectionPrefix(name string) string { return s.key("elections", name) + "/" }
