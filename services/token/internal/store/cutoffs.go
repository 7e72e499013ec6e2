package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Revocations that must also stop what is mid-issuance (an authorization
// code not yet redeemed, a refresh racing the revocation) are compared with
// the record they act on by etcd revision, not by clock: the revoker writes
// its entry first and then deletes grants; the redeemer or refresher
// commits first and then reads the entries. Whichever comes second sees the
// other's write.

// codeCutoffKey is the key of the code cut-off for a (user, client,
// resource) pattern; hashed because resources are URIs.
func (s *Etcd) codeCutoffKey(userID, clientID, resource string) string {
	sum := sha256.Sum256([]byte(userID + "\x00" + clientID + "\x00" + resource))
	return s.key(colCodeCutoffs, hex.EncodeToString(sum[:]))
}

func (s *Etcd) PutCodeCutoff(ctx context.Context, userID, clientID, resource string, expires time.Time) error {
	lease, err := s.grant(ctx, expires)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, s.codeCutoffKey(userID, clientID, resource), encode(expires), clientv3.WithLease(lease)); err != nil {
		s.dropLease(ctx, lease)
		return fmt.Errorf("store: put code cut-off: %w", err)
	}
	return nil
}

func (s *Etcd) CutoffRevision(ctx context.Context, userID, clientID, resource string) (int64, error) {
	var keys []string
	if userID != "" {
		keys = append(keys, s.revocationKey(&Revocation{Kind: RevokeUser, ID: userID}),
			s.codeCutoffKey(userID, clientID, resource), s.codeCutoffKey(userID, "", ""))
	}
	keys = append(keys, s.revocationKey(&Revocation{Kind: RevokeClient, ID: clientID}),
		s.revocationKey(&Revocation{Kind: RevokeResource, ID: resource}), s.codeCutoffKey("", clientID, ""))
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpGet(k, clientv3.WithKeysOnly())
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("store: read cut-offs: %w", err)
	}
	var newest int64
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().GetKvs() {
			newest = max(newest, kv.ModRevision)
		}
	}
	return newest, nil
}

func (s *Etcd) TouchGrant(ctx context.Context, id string, now time.Time, every time.Duration) (bool, error) {
	vg, err := s.GetGrant(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	g := vg.Value
	if now.Sub(g.LastUse) < every {
		return false, nil
	}
	g.LastUse = now
	err = s.UpdateGrant(ctx, g, vg.ModRevision)
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *Etcd) DeleteCCGrants(ctx context.Context, clientID, resource string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	var ops []clientv3.Op
	for _, id := range ids {
		key := s.key(colGrants, id)
		ops = append(ops, clientv3.OpDelete(key))
		ops = append(ops, s.grantIndexDeletes(&Grant{ID: id, ClientID: clientID, Resource: resource})...)
	}
	if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("store: delete stale client_credentials grants: %w", err)
	}
	return nil
}
