package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

// Collections below /mcpid/token/.
const (
	colUsers            = "users"
	colUsersByName      = "users-by-name"
	colSessions         = "sessions"
	colAuthReqs         = "authreqs"
	colCodes            = "codes"
	colCodesUsed        = "codes-used"
	colGrants           = "grants"
	colGrantsByUser     = "grants-by-user"
	colGrantsByClient   = "grants-by-client"
	colGrantsByResource = "grants-by-resource"
	colConsents         = "consents"
	colConsentsByClient = "consents-by-client"
	colSigningKeys      = "signing-keys"
	colActiveKey        = "signing-key-active"
	colRevocations      = "revocations"
	colCodeCutoffs      = "code-cutoffs"
)

// maxLoginAttempts bounds CompleteLogin's retries on a concurrently changed
// user record.
const maxLoginAttempts = 8

// Etcd is the etcd implementation of Store.
type Etcd struct {
	cli    *clientv3.Client
	db     *etcdstore.Store
	prefix etcdstore.Prefix
	now    func() time.Time
}

var _ Store = (*Etcd)(nil)

// New returns the store under /mcpid/<service>/.
func New(cli *clientv3.Client, service string, now func() time.Time) (*Etcd, error) {
	p, err := etcdstore.NewPrefix(service)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Etcd{cli: cli, db: etcdstore.New(cli), prefix: p, now: now}, nil
}

// IsUnavailable reports whether err means etcd could not answer (as opposed
// to a decided outcome such as ErrNotFound).
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	for _, s := range []error{ErrNotFound, ErrUsernameTaken, ErrConflict, ErrAlreadyExists,
		etcdstore.ErrInvalidPageToken, etcdstore.ErrPageTokenExpired} {
		if errors.Is(err, s) {
			return false
		}
	}
	var decode *DecodeError
	return !errors.As(err, &decode)
}

// DecodeError is a stored record that cannot be decoded: a bug or tampering,
// not an outage.
type DecodeError struct {
	Key string
	Err error
}

func (e *DecodeError) Error() string { return fmt.Sprintf("store: decode %q: %v", e.Key, e.Err) }

func (e *DecodeError) Unwrap() error { return e.Err }

func decode[T any](kv *mvccpb.KeyValue) (*T, error) {
	v := new(T)
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return nil, &DecodeError{Key: string(kv.Key), Err: err}
	}
	return v, nil
}

func encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only plain structs are encoded here; failing to marshal one is a
		// programming error caught by tests.
		panic(fmt.Sprintf("store: encode %T: %v", v, err))
	}
	return string(b)
}

func (s *Etcd) key(parts ...string) string { return s.prefix.Key(parts...) }

// ttlUntil is the lease TTL that keeps a record until t (at least 1 s).
func (s *Etcd) ttlUntil(t time.Time) int64 {
	d := t.Sub(s.now())
	secs := int64((d + time.Second - 1) / time.Second)
	return max(secs, 1)
}

func (s *Etcd) grant(ctx context.Context, until time.Time) (clientv3.LeaseID, error) {
	resp, err := s.cli.Grant(ctx, s.ttlUntil(until))
	if err != nil {
		return clientv3.NoLease, fmt.Errorf("store: grant lease: %w", err)
	}
	return resp.ID, nil
}

func (s *Etcd) dropLease(ctx context.Context, id clientv3.LeaseID) {
	if id == clientv3.NoLease {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _ = s.cli.Revoke(rctx, id)
}

func putOp(key string, v any, lease clientv3.LeaseID) clientv3.Op {
	if lease != clientv3.NoLease {
		return clientv3.OpPut(key, encode(v), clientv3.WithLease(lease))
	}
	return clientv3.OpPut(key, encode(v))
}

// extraOps returns the caller's extra ops (outbox events) for a raw
// transaction; they carry no lease (events outlive records).
func extraOps(extra []Op) []clientv3.Op { return extra }

// rawOps wraps extra ops for the etcdstore helpers.
func rawOps(extra []Op) []etcdstore.Op {
	out := make([]etcdstore.Op, 0, len(extra))
	for _, o := range extra {
		out = append(out, etcdstore.RawOp(o))
	}
	return out
}

// --- users ---

func (s *Etcd) CreateUser(ctx context.Context, u *User, extra ...Op) error {
	ops := rawOps(extra)
	if u.Username != "" {
		ops = append([]etcdstore.Op{etcdstore.PutIfAbsentOp(s.key(colUsersByName, u.Username), []byte(u.ID))}, ops...)
	}
	_, err := s.db.Create(ctx, s.key(colUsers, u.ID), []byte(encode(u)), ops...)
	var ke *etcdstore.KeyError
	if errors.As(err, &ke) && errors.Is(err, etcdstore.ErrAlreadyExists) && ke.Key != s.key(colUsers, u.ID) {
		return ErrUsernameTaken
	}
	return err
}

func (s *Etcd) GetUser(ctx context.Context, id string) (*User, error) {
	kv, err := s.db.Get(ctx, s.key(colUsers, id))
	if err != nil {
		return nil, err
	}
	return decode[User](kv)
}

func (s *Etcd) GetUserByUsername(ctx context.Context, username string) (*User, error) {
	kv, err := s.db.Get(ctx, s.key(colUsersByName, username))
	if err != nil {
		return nil, err
	}
	u, err := s.GetUser(ctx, string(kv.Value))
	if err != nil {
		return nil, err
	}
	if u.Username != username {
		// A stale index entry (user renamed or deleted and recreated).
		return nil, ErrNotFound
	}
	return u, nil
}

func (s *Etcd) UpdateUser(ctx context.Context, id string, fn func(u *User) ([]Op, error)) (*User, error) {
	var out *User
	_, err := s.db.Update(ctx, s.key(colUsers, id), func(old []byte) ([]byte, []etcdstore.Op, error) {
		u := new(User)
		if err := json.Unmarshal(old, u); err != nil {
			return nil, nil, &DecodeError{Key: s.key(colUsers, id), Err: err}
		}
		extra, err := fn(u)
		if err != nil {
			return nil, nil, err
		}
		out = u
		return []byte(encode(u)), rawOps(extra), nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Etcd) DeleteUser(ctx context.Context, id string, extra ...Op) (*User, error) {
	var out *User
	_, err := s.db.DeleteFunc(ctx, s.key(colUsers, id), func(old []byte) ([]etcdstore.Op, error) {
		u := new(User)
		if err := json.Unmarshal(old, u); err != nil {
			return nil, &DecodeError{Key: s.key(colUsers, id), Err: err}
		}
		out = u
		ops := rawOps(extra)
		if u.Username != "" {
			ops = append(ops, etcdstore.DeleteOp(s.key(colUsersByName, u.Username)))
		}
		return ops, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Etcd) ListUsers(ctx context.Context, pageSize int, pageToken string) ([]*User, string, error) {
	kvs, next, err := s.db.List(ctx, s.prefix.Sub(colUsers), pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	out := make([]*User, 0, len(kvs))
	for _, kv := range kvs {
		u, err := decode[User](kv)
		if err != nil {
			return nil, "", err
		}
		out = append(out, u)
	}
	return out, next, nil
}

// --- sessions and authorization requests ---

func (s *Etcd) GetSession(ctx context.Context, idHash string) (*Session, error) {
	kv, err := s.db.Get(ctx, s.key(colSessions, idHash))
	if err != nil {
		return nil, err
	}
	sess, err := decode[Session](kv)
	if err != nil {
		return nil, err
	}
	if !s.now().Before(sess.Expires) {
		return nil, ErrNotFound
	}
	return sess, nil
}

func (s *Etcd) PutAuthRequest(ctx context.Context, idHash string, req *AuthRequest) error {
	lease, err := s.grant(ctx, req.Expires)
	if err != nil {
		return err
	}
	key := s.key(colAuthReqs, idHash)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(putOp(key, req, lease)).Commit()
	if err != nil {
		s.dropLease(ctx, lease)
		return fmt.Errorf("store: put authorization request: %w", err)
	}
	if !resp.Succeeded {
		s.dropLease(ctx, lease)
		return ErrAlreadyExists
	}
	return nil
}

func (s *Etcd) GetAuthRequest(ctx context.Context, idHash string) (Versioned[AuthRequest], error) {
	kv, err := s.db.Get(ctx, s.key(colAuthReqs, idHash))
	if err != nil {
		return Versioned[AuthRequest]{}, err
	}
	r, err := decode[AuthRequest](kv)
	if err != nil {
		return Versioned[AuthRequest]{}, err
	}
	if !s.now().Before(r.Expires) {
		return Versioned[AuthRequest]{}, ErrNotFound
	}
	return Versioned[AuthRequest]{Value: r, ModRevision: kv.ModRevision}, nil
}

func (s *Etcd) CompleteLogin(ctx context.Context, c LoginCommit) error {
	lease, err := s.grant(ctx, c.Session.Expires)
	if err != nil {
		return err
	}
	userKey := s.key(colUsers, c.UserID)
	reqKey := s.key(colAuthReqs, c.ReqHash)
	for attempt := 1; ; attempt++ {
		kv, err := s.db.Get(ctx, userKey)
		if err != nil {
			s.dropLease(ctx, lease)
			return err
		}
		u, err := decode[User](kv)
		if err != nil {
			s.dropLease(ctx, lease)
			return err
		}
		if err := c.UserFn(u); err != nil {
			s.dropLease(ctx, lease)
			return err
		}
		ops := []clientv3.Op{
			putOp(s.key(colSessions, c.SessionHash), c.Session, lease),
			clientv3.OpPut(reqKey, encode(c.Req), clientv3.WithIgnoreLease()),
			clientv3.OpPut(userKey, encode(u)),
		}
		if c.OldSessionHash != "" && c.OldSessionHash != c.SessionHash {
			ops = append(ops, clientv3.OpDelete(s.key(colSessions, c.OldSessionHash)))
		}
		ops = append(ops, extraOps(c.Extra)...)
		resp, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(reqKey), "=", c.ReqRev),
			clientv3.Compare(clientv3.ModRevision(userKey), "=", kv.ModRevision),
		).Then(ops...).Else(clientv3.OpGet(reqKey, clientv3.WithCountOnly())).Commit()
		if err != nil {
			s.dropLease(ctx, lease)
			return fmt.Errorf("store: complete login: %w", err)
		}
		if resp.Succeeded {
			return nil
		}
		if resp.Responses[0].GetResponseRange().GetCount() == 0 {
			s.dropLease(ctx, lease)
			return ErrNotFound
		}
		// The request changed (another tab signed in) or the user did;
		// retry only the latter.
		reqKV, err := s.db.Get(ctx, reqKey)
		if err != nil || reqKV.ModRevision != c.ReqRev || attempt >= maxLoginAttempts {
			s.dropLease(ctx, lease)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			return ErrConflict
		}
	}
}

func (s *Etcd) IssueCode(ctx context.Context, c CodeCommit) error {
	lease, err := s.grant(ctx, c.Code.Expires)
	if err != nil {
		return err
	}
	var cmps []clientv3.Cmp
	ops := []clientv3.Op{putOp(s.key(colCodes, c.CodeHash), c.Code, lease)}
	if c.ReqHash != "" {
		reqKey := s.key(colAuthReqs, c.ReqHash)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(reqKey), "=", c.ReqRev))
		ops = append(ops, clientv3.OpDelete(reqKey))
	}
	if c.Consent != nil {
		k := c.Consent
		ops = append(ops,
			clientv3.OpPut(s.key(colConsents, k.UserID, k.ClientID, k.Resource), encode(k)),
			clientv3.OpPut(s.key(colConsentsByClient, k.ClientID, k.UserID, k.Resource), ""),
		)
	}
	ops = append(ops, extraOps(c.Extra)...)
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		s.dropLease(ctx, lease)
		return fmt.Errorf("store: issue code: %w", err)
	}
	if !resp.Succeeded {
		s.dropLease(ctx, lease)
		return ErrConflict
	}
	return nil
}

func (s *Etcd) DeleteAuthRequest(ctx context.Context, idHash string, rev int64, extra ...Op) error {
	_, err := s.db.Delete(ctx, s.key(colAuthReqs, idHash), rev, rawOps(extra)...)
	return err
}

// --- codes and grants ---

func (s *Etcd) GetCode(ctx context.Context, codeHash string) (Versioned[Code], error) {
	kv, err := s.db.Get(ctx, s.key(colCodes, codeHash))
	if err != nil {
		return Versioned[Code]{}, err
	}
	c, err := decode[Code](kv)
	if err != nil {
		return Versioned[Code]{}, err
	}
	if !s.now().Before(c.Expires) {
		return Versioned[Code]{}, ErrNotFound
	}
	return Versioned[Code]{Value: c, ModRevision: kv.ModRevision, CreateRevision: kv.CreateRevision}, nil
}

func (s *Etcd) GetUsedCode(ctx context.Context, codeHash string) (*UsedCode, error) {
	kv, err := s.db.Get(ctx, s.key(colCodesUsed, codeHash))
	if err != nil {
		return nil, err
	}
	return decode[UsedCode](kv)
}

func (s *Etcd) grantIndexOps(g *Grant, lease clientv3.LeaseID) []clientv3.Op {
	put := func(k string) clientv3.Op {
		if lease != clientv3.NoLease {
			return clientv3.OpPut(k, "", clientv3.WithLease(lease))
		}
		return clientv3.OpPut(k, "")
	}
	ops := []clientv3.Op{
		put(s.key(colGrantsByClient, g.ClientID, g.ID)),
		put(s.key(colGrantsByResource, g.Resource, g.ID)),
	}
	if g.UserID != "" {
		ops = append(ops, put(s.key(colGrantsByUser, g.UserID, g.ID)))
	}
	return ops
}

func (s *Etcd) grantIndexDeletes(g *Grant) []clientv3.Op {
	ops := []clientv3.Op{
		clientv3.OpDelete(s.key(colGrantsByClient, g.ClientID, g.ID)),
		clientv3.OpDelete(s.key(colGrantsByResource, g.Resource, g.ID)),
	}
	if g.UserID != "" {
		ops = append(ops, clientv3.OpDelete(s.key(colGrantsByUser, g.UserID, g.ID)))
	}
	return ops
}

func (s *Etcd) RedeemCode(ctx context.Context, codeHash string, codeRev int64, usedUntil time.Time, g *Grant, extra ...Op) error {
	usedLease, err := s.grant(ctx, usedUntil)
	if err != nil {
		return err
	}
	grantLease := clientv3.NoLease
	if !g.Expires.IsZero() {
		if grantLease, err = s.grant(ctx, g.Expires); err != nil {
			s.dropLease(ctx, usedLease)
			return err
		}
	}
	codeKey := s.key(colCodes, codeHash)
	grantKey := s.key(colGrants, g.ID)
	ops := []clientv3.Op{
		clientv3.OpDelete(codeKey),
		putOp(s.key(colCodesUsed, codeHash), &UsedCode{GrantID: g.ID, ClientID: g.ClientID, Used: s.now()}, usedLease),
		putOp(grantKey, g, grantLease),
	}
	ops = append(ops, s.grantIndexOps(g, grantLease)...)
	ops = append(ops, extraOps(extra)...)
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(codeKey), "=", codeRev),
		clientv3.Compare(clientv3.CreateRevision(grantKey), "=", 0),
	).Then(ops...).Commit()
	if err == nil && resp.Succeeded {
		return nil
	}
	s.dropLease(ctx, usedLease)
	s.dropLease(ctx, grantLease)
	if err != nil {
		return fmt.Errorf("store: redeem code: %w", err)
	}
	return ErrConflict
}

func (s *Etcd) GetGrant(ctx context.Context, id string) (Versioned[Grant], error) {
	kv, err := s.db.Get(ctx, s.key(colGrants, id))
	if err != nil {
		return Versioned[Grant]{}, err
	}
	g, err := decode[Grant](kv)
	if err != nil {
		return Versioned[Grant]{}, err
	}
	if !g.Expires.IsZero() && !s.now().Before(g.Expires) {
		return Versioned[Grant]{}, ErrNotFound
	}
	return Versioned[Grant]{Value: g, ModRevision: kv.ModRevision, CreateRevision: kv.CreateRevision}, nil
}

func (s *Etcd) UpdateGrant(ctx context.Context, g *Grant, rev int64, extra ...Op) error {
	key := s.key(colGrants, g.ID)
	ops := append([]clientv3.Op{clientv3.OpPut(key, encode(g), clientv3.WithIgnoreLease())}, extraOps(extra)...)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("store: update grant: %w", err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

func (s *Etcd) EnsureClientCredentialsGrant(ctx context.Context, g *Grant) (bool, error) {
	key := s.key(colGrants, g.ID)
	for attempt := 1; attempt <= maxLoginAttempts; attempt++ {
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(append([]clientv3.Op{putOp(key, g, clientv3.NoLease)}, s.grantIndexOps(g, clientv3.NoLease)...)...).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return false, fmt.Errorf("store: record grant: %w", err)
		}
		if resp.Succeeded {
			return true, nil
		}
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			continue // deleted in between: create again
		}
		cur, err := decode[Grant](kvs[0])
		if err != nil {
			return false, err
		}
		if equalStrings(cur.Scopes, g.Scopes) {
			return false, nil
		}
		cur.Scopes = g.Scopes
		if err := s.UpdateGrant(ctx, cur, kvs[0].ModRevision); err != nil {
			if errors.Is(err, ErrConflict) {
				continue
			}
			return false, err
		}
		return true, nil
	}
	return false, ErrConflict
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (s *Etcd) revocationKey(r *Revocation) string { return s.key(colRevocations, r.Kind, r.ID) }

func (s *Etcd) RevokeGrant(ctx context.Context, grantID string, rev *Revocation, extra ...Op) (bool, int64, error) {
	lease, err := s.grant(ctx, rev.Expires)
	if err != nil {
		return false, 0, err
	}
	key := s.key(colGrants, grantID)
	for attempt := 1; attempt <= maxLoginAttempts; attempt++ {
		kv, err := s.db.Get(ctx, key)
		found := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			s.dropLease(ctx, lease)
			return false, 0, err
		}
		ops := []clientv3.Op{putOp(s.revocationKey(rev), rev, lease)}
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if found {
			g, err := decode[Grant](kv)
			if err != nil {
				s.dropLease(ctx, lease)
				return false, 0, err
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
			ops = append(ops, clientv3.OpDelete(key))
			ops = append(ops, s.grantIndexDeletes(g)...)
		}
		ops = append(ops, extraOps(extra)...)
		resp, err := s.cli.Txn(ctx).If(cmp).Then(ops...).Commit()
		if err != nil {
			s.dropLease(ctx, lease)
			return false, 0, fmt.Errorf("store: revoke grant: %w", err)
		}
		if resp.Succeeded {
			return found, resp.Header.Revision, nil
		}
	}
	s.dropLease(ctx, lease)
	return false, 0, ErrConflict
}

func (s *Etcd) PutRevocation(ctx context.Context, r *Revocation, extra ...Op) (int64, error) {
	lease, err := s.grant(ctx, r.Expires)
	if err != nil {
		return 0, err
	}
	ops := append([]clientv3.Op{putOp(s.revocationKey(r), r, lease)}, extraOps(extra)...)
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		s.dropLease(ctx, lease)
		return 0, fmt.Errorf("store: put revocation: %w", err)
	}
	return resp.Header.Revision, nil
}

func (s *Etcd) RevocationsPrefix() etcdstore.Prefix { return s.prefix.Sub(colRevocations) }

// --- consents ---

func (s *Etcd) GetConsent(ctx context.Context, userID, clientID, resource string) (*Consent, error) {
	kv, err := s.db.Get(ctx, s.key(colConsents, userID, clientID, resource))
	if err != nil {
		return nil, err
	}
	return decode[Consent](kv)
}

func (s *Etcd) DeleteUserConsents(ctx context.Context, userID string) (int, error) {
	p := s.prefix.Sub(colConsents, userID)
	n := 0
	for {
		kvs, _, err := s.db.List(ctx, p, etcdstore.MaxPageSize, "")
		if err != nil {
			return n, err
		}
		if len(kvs) == 0 {
			return n, nil
		}
		for _, kv := range kvs {
			c, err := decode[Consent](kv)
			if err != nil {
				return n, err
			}
			if _, err := s.cli.Txn(ctx).Then(
				clientv3.OpDelete(string(kv.Key)),
				clientv3.OpDelete(s.key(colConsentsByClient, c.ClientID, c.UserID, c.Resource)),
			).Commit(); err != nil {
				return n, fmt.Errorf("store: delete consent: %w", err)
			}
			n++
		}
	}
}

// --- signing keys ---

func (s *Etcd) SigningKeysPrefix() etcdstore.Prefix { return s.prefix.Sub(colSigningKeys) }

func (s *Etcd) CreateActiveSigningKey(ctx context.Context, k *SigningKey, extra ...Op) error {
	pointer := etcdstore.PutIfAbsentOp(s.key(colActiveKey, k.Alg), []byte(k.Kid))
	_, err := s.db.Create(ctx, s.key(colSigningKeys, k.Kid), []byte(encode(k)), append([]etcdstore.Op{pointer}, rawOps(extra)...)...)
	if errors.Is(err, etcdstore.ErrAlreadyExists) {
		return ErrAlreadyExists
	}
	return err
}

func (s *Etcd) ReplaceActiveSigningKey(ctx context.Context, oldKid string, k *SigningKey, extra ...Op) error {
	pointerKey := s.key(colActiveKey, k.Alg)
	oldKey := s.key(colSigningKeys, oldKid)
	kv, err := s.db.Get(ctx, oldKey)
	if err != nil {
		return err
	}
	old, err := decode[SigningKey](kv)
	if err != nil {
		return err
	}
	old.State = KeyRetired
	old.Retire = s.now()
	old.Remove = old.Retire
	ops := []clientv3.Op{
		clientv3.OpPut(oldKey, encode(old)),
		clientv3.OpPut(s.key(colSigningKeys, k.Kid), encode(k)),
		clientv3.OpPut(pointerKey, k.Kid),
	}
	ops = append(ops, extraOps(extra)...)
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Value(pointerKey), "=", oldKid),
		clientv3.Compare(clientv3.ModRevision(oldKey), "=", kv.ModRevision),
	).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("store: replace signing key: %w", err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

func (s *Etcd) ListSigningKeys(ctx context.Context) ([]*SigningKey, error) {
	kvs, _, err := s.db.List(ctx, s.SigningKeysPrefix(), etcdstore.MaxPageSize, "")
	if err != nil {
		return nil, err
	}
	out := make([]*SigningKey, 0, len(kvs))
	for _, kv := range kvs {
		k, err := decode[SigningKey](kv)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// ActiveKid returns the kid the active pointer of alg names, or ErrNotFound.
func (s *Etcd) ActiveKid(ctx context.Context, alg string) (string, error) {
	kv, err := s.db.Get(ctx, s.key(colActiveKey, alg))
	if err != nil {
		return "", err
	}
	return string(kv.Value), nil
}

func (s *Etcd) AppendEvents(ctx context.Context, extra ...Op) error {
	if len(extra) == 0 {
		return nil
	}
	if _, err := s.cli.Txn(ctx).Then(extraOps(extra)...).Commit(); err != nil {
		return fmt.Errorf("store: append events: %w", err)
	}
	return nil
}

// IsCompacted reports whether err is etcd's "revision compacted".
func IsCompacted(err error) bool { return errors.Is(err, rpctypes.ErrCompacted) }
