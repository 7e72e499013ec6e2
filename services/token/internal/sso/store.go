package sso

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/token/internal/kek"
)

// Collections below /mcpid/token/ that this package owns.
const (
	colConnectors = "connectors"
	// colStates holds pending upstream sign-ins by the hash of their state
	// (lease: they end with the authorization request).
	colStates = "sso-states"
	// colIdentities links (connector, upstream subject) to a user id.
	colIdentities = "users-by-identity"
)

// Store keeps connector records, pending upstream sign-ins and identity
// links in etcd.
type Store struct {
	cli    *clientv3.Client
	db     *etcdstore.Store
	prefix etcdstore.Prefix
}

// NewStore returns the store under /mcpid/<service>/.
func NewStore(cli *clientv3.Client, service string) (*Store, error) {
	p, err := etcdstore.NewPrefix(service)
	if err != nil {
		return nil, err
	}
	return &Store{cli: cli, db: etcdstore.New(cli), prefix: p}, nil
}

// ConnectorsPrefix is the key range of connector records (list-then-watch).
func (s *Store) ConnectorsPrefix() etcdstore.Prefix { return s.prefix.Sub(colConnectors) }

func decodeRecord(b []byte) (*Record, error) {
	r := new(Record)
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("sso: decode connector: %w", err)
	}
	return r, nil
}

// CreateConnector stores r; etcdstore.ErrAlreadyExists if the id is taken.
func (s *Store) CreateConnector(ctx context.Context, r *Record, extra ...clientv3.Op) (int64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	return s.db.Create(ctx, s.prefix.Key(colConnectors, r.ID), b, raw(extra)...)
}

// GetConnector returns a record, or etcdstore.ErrNotFound.
func (s *Store) GetConnector(ctx context.Context, id string) (*Record, error) {
	kv, err := s.db.Get(ctx, s.prefix.Key(colConnectors, id))
	if err != nil {
		return nil, err
	}
	return decodeRecord(kv.Value)
}

// ListConnectors returns one page in id order.
func (s *Store) ListConnectors(ctx context.Context, pageSize int, pageToken string) ([]*Record, string, error) {
	kvs, next, err := s.db.List(ctx, s.ConnectorsPrefix(), pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	out := make([]*Record, 0, len(kvs))
	for _, kv := range kvs {
		r, err := decodeRecord(kv.Value)
		if err != nil {
			return nil, "", err
		}
		out = append(out, r)
	}
	return out, next, nil
}

// UpdateConnector applies fn by compare-and-swap (retried; fn may run
// several times). etcdstore.ErrNotFound if absent.
func (s *Store) UpdateConnector(ctx context.Context, id string, fn func(r *Record) ([]clientv3.Op, error)) (*Record, int64, error) {
	var out *Record
	rev, err := s.db.Update(ctx, s.prefix.Key(colConnectors, id), func(old []byte) ([]byte, []etcdstore.Op, error) {
		r, err := decodeRecord(old)
		if err != nil {
			return nil, nil, err
		}
		extra, err := fn(r)
		if err != nil {
			return nil, nil, err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return nil, nil, err
		}
		out = r
		return b, raw(extra), nil
	})
	return out, rev, err
}

// DeleteConnector deletes a record; etcdstore.ErrNotFound if absent.
func (s *Store) DeleteConnector(ctx context.Context, id string, extra ...clientv3.Op) (int64, error) {
	return s.db.Delete(ctx, s.prefix.Key(colConnectors, id), 0, raw(extra)...)
}

func raw(ops []clientv3.Op) []etcdstore.Op {
	out := make([]etcdstore.Op, 0, len(ops))
	for _, o := range ops {
		out = append(out, etcdstore.RawOp(o))
	}
	return out
}

// State is a pending upstream sign-in, stored under the hash of the
// `state` sent upstream. The request id, PKCE verifier and nonce are sealed
// with the KEK: whoever reads etcd cannot continue the flow or redeem the
// upstream code with them.
type State struct {
	ConnectorID string     `json:"connector_id"`
	BrowserHash string     `json:"browser_hash"`
	Sealed      kek.Sealed `json:"sealed"`
	Expires     time.Time  `json:"expires"`
}

// stateSecrets is the sealed part of a State.
type stateSecrets struct {
	RequestID string `json:"request_id"`
	Verifier  string `json:"code_verifier"`
	Nonce     string `json:"nonce"`
}

// PutState stores st until ttl passes (lease).
func (s *Store) PutState(ctx context.Context, stateHash string, st *State, ttl time.Duration) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, _, err = s.db.CreateWithTTL(ctx, s.prefix.Key(colStates, stateHash), b, ttl)
	return err
}

// TakeState reads and deletes a pending sign-in in one step, so a state is
// used once: a second callback with it finds nothing (etcdstore.ErrNotFound,
// also for an expired one).
func (s *Store) TakeState(ctx context.Context, stateHash string, now time.Time) (*State, error) {
	key := s.prefix.Key(colStates, stateHash)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
		Then(clientv3.OpDelete(key, clientv3.WithPrevKV())).Commit()
	if err != nil {
		return nil, fmt.Errorf("sso: take state: %w", err)
	}
	if !resp.Succeeded {
		return nil, etcdstore.ErrNotFound
	}
	del := resp.Responses[0].GetResponseDeleteRange()
	if del == nil || len(del.PrevKvs) != 1 {
		return nil, etcdstore.ErrNotFound
	}
	st := new(State)
	if err := json.Unmarshal(del.PrevKvs[0].Value, st); err != nil {
		return nil, fmt.Errorf("sso: decode state: %w", err)
	}
	if !now.Before(st.Expires) {
		return nil, etcdstore.ErrNotFound
	}
	return st, nil
}

// Link is an identity link: which user an upstream account is.
type Link struct {
	UserID string `json:"user_id"`
}

func (s *Store) linkKey(connectorID, subject string) string {
	return s.prefix.Key(colIdentities, connectorID, subject)
}

// GetLink returns the user linked to (connector, subject) and the link's
// revision, or etcdstore.ErrNotFound.
func (s *Store) GetLink(ctx context.Context, connectorID, subject string) (string, int64, error) {
	kv, err := s.db.Get(ctx, s.linkKey(connectorID, subject))
	if err != nil {
		return "", 0, err
	}
	var l Link
	if err := json.Unmarshal(kv.Value, &l); err != nil {
		return "", 0, fmt.Errorf("sso: decode link: %w", err)
	}
	return l.UserID, kv.ModRevision, nil
}

// ClaimLink points (connector, subject) to userID: created when rev is 0,
// else replaced only while still at rev (a link to a deleted user).
// etcdstore.ErrAlreadyExists / ErrConflict when another sign-in won.
func (s *Store) ClaimLink(ctx context.Context, connectorID, subject, userID string, rev int64) error {
	b, err := json.Marshal(Link{UserID: userID})
	if err != nil {
		return err
	}
	key := s.linkKey(connectorID, subject)
	if rev == 0 {
		_, err = s.db.Create(ctx, key, b)
		return err
	}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("sso: claim link: %w", err)
	}
	if !resp.Succeeded {
		return etcdstore.ErrConflict
	}
	return nil
}

// LinkedUsers returns the ids of the users linked to connectorID's
// identities, one page (etcdstore.List paging).
func (s *Store) LinkedUsers(ctx context.Context, connectorID string, pageSize int, pageToken string) ([]string, string, error) {
	kvs, next, err := s.db.List(ctx, s.prefix.Sub(colIdentities, connectorID), pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		var l Link
		if err := json.Unmarshal(kv.Value, &l); err != nil {
			return nil, "", fmt.Errorf("sso: decode link: %w", err)
		}
		out = append(out, l.UserID)
	}
	return out, next, nil
}

// isAbsent reports a not-found outcome.
func isAbsent(err error) bool { return errors.Is(err, etcdstore.ErrNotFound) }
