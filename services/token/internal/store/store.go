// Package store keeps the token service's state in etcd under /mcpid/token/:
// users, sessions, pending authorization requests, authorization codes,
// grants with their refresh token families, consents, signing keys and the
// revocation set.
//
// Every method that makes a state change takes the audit events that go with
// it as extra operations (auditemit.Outbox.Op) and commits them in the same
// transaction. Short-lived records (sessions, requests, codes, grants,
// revocations) expire by etcd lease; each record also carries its expiry so
// that a reader never trusts one whose lease has not fired yet.
package store

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mcpid/mcpid/lib/etcdstore"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrNotFound: the record does not exist (or has expired).
	ErrNotFound = etcdstore.ErrNotFound
	// ErrUsernameTaken: another user has the username.
	ErrUsernameTaken = errors.New("store: username taken")
	// ErrConflict: a record the operation depends on changed or disappeared
	// concurrently (a code redeemed twice at once, a request consented
	// twice); nothing was written.
	ErrConflict = etcdstore.ErrConflict
	// ErrAlreadyExists: the record exists.
	ErrAlreadyExists = etcdstore.ErrAlreadyExists
)

// Op is an extra operation committed with a change: an audit outbox event
// (see the events package, which builds them from auditemit.Outbox).
type Op = clientv3.Op

// Versioned is a record with the etcd revision it was read at, for
// compare-and-swap.
type Versioned[T any] struct {
	Value *T
	// ModRevision is the record's etcd ModRevision.
	ModRevision int64
	// CreateRevision is the etcd revision that created the record: where
	// it sits in etcd's one global order of writes, which a revocation
	// racing its use is compared against (clock-free).
	CreateRevision int64
}

// Store is the token service's storage. Implementations are safe for
// concurrent use. Errors other than the sentinels mean etcd could not be
// reached or a record could not be decoded; see IsUnavailable.
type Store interface {
	// CreateUser stores a new user, with its username index (unique) when it
	// has a username. ErrUsernameTaken if the username is in use,
	// ErrAlreadyExists if the id is.
	CreateUser(ctx context.Context, u *User, extra ...Op) error
	// GetUser returns the user with id, or ErrNotFound.
	GetUser(ctx context.Context, id string) (*User, error)
	// GetUserByUsername returns the user holding username, or ErrNotFound.
	GetUserByUsername(ctx context.Context, username string) (*User, error)
	// UpdateUser applies fn to the current user with compare-and-swap,
	// retrying on conflict (fn may run several times and must not have side
	// effects); the ops fn returns are committed with the change. fn's error
	// is returned as is and nothing is written. ErrNotFound if absent.
	UpdateUser(ctx context.Context, id string, fn func(u *User) ([]Op, error)) (*User, error)
	// DeleteUser deletes the user, its username index, its sessions are left
	// to expire (they no longer resolve to a user). ErrNotFound if absent.
	DeleteUser(ctx context.Context, id string, extra ...Op) (*User, error)
	// ListUsers lists users in id order, one page; the token is opaque.
	// etcdstore.ErrInvalidPageToken / ErrPageTokenExpired for bad tokens.
	ListUsers(ctx context.Context, pageSize int, pageToken string) ([]*User, string, error)

	// GetSession returns the live session with this id hash, or ErrNotFound
	// (absent or past its expiry).
	GetSession(ctx context.Context, idHash string) (*Session, error)

	// PutAuthRequest stores a new pending authorization request under its id
	// hash until req.Expires (lease).
	PutAuthRequest(ctx context.Context, idHash string, req *AuthRequest) error
	// GetAuthRequest returns the pending request, or ErrNotFound (absent,
	// already completed, or past its expiry).
	GetAuthRequest(ctx context.Context, idHash string) (Versioned[AuthRequest], error)

	// CompleteLogin signs a user in for a pending request, atomically: the
	// new session is stored (lease until s.Expires), the previous session of
	// the browser (oldSessionHash, may be empty) is deleted, the request is
	// replaced by req (it must still be at reqRev, else ErrConflict), and the
	// user updated by userFn (compare-and-swap, retried). A deleted request
	// is ErrNotFound.
	CompleteLogin(ctx context.Context, c LoginCommit) error

	// IssueCode ends a pending request with an authorization code,
	// atomically: the request (if reqHash is set) is deleted and must still
	// be at reqRev (else ErrConflict: consented twice), the code is stored
	// under its hash with a lease until code.Expires, and the consent, when
	// set, is stored with its client index.
	IssueCode(ctx context.Context, c CodeCommit) error
	// DeleteAuthRequest deletes a pending request that must still be at rev
	// (a denial), with its events. ErrConflict / ErrNotFound otherwise.
	DeleteAuthRequest(ctx context.Context, idHash string, rev int64, extra ...Op) error

	// GetCode returns an unredeemed, unexpired code by hash, or ErrNotFound.
	GetCode(ctx context.Context, codeHash string) (Versioned[Code], error)
	// GetUsedCode returns the replay marker of a redeemed code, or
	// ErrNotFound.
	GetUsedCode(ctx context.Context, codeHash string) (*UsedCode, error)
	// RedeemCode consumes a code and creates its grant in one transaction:
	// the code (still at codeRev, else ErrConflict) is deleted, a replay
	// marker stored until usedUntil, the grant stored with its user, client
	// and resource index keys (lease until grant.Expires when set).
	RedeemCode(ctx context.Context, codeHash string, codeRev int64, usedUntil time.Time, g *Grant, extra ...Op) error

	// GetGrant returns a live grant, or ErrNotFound (absent or expired).
	GetGrant(ctx context.Context, id string) (Versioned[Grant], error)
	// UpdateGrant replaces the grant with fn(current) by compare-and-swap on
	// rev: if the grant changed since, ErrConflict and nothing is written
	// (the caller re-reads and decides again: refresh rotation must see
	// a concurrent rotation). The grant keeps its lease.
	UpdateGrant(ctx context.Context, g *Grant, rev int64, extra ...Op) error
	// EnsureClientCredentialsGrant records a client_credentials grant
	// (no lease) with its index keys if absent, or replaces its scopes when
	// they differ. It returns whether it wrote anything.
	EnsureClientCredentialsGrant(ctx context.Context, g *Grant) (bool, error)
	// RevokeGrant deletes the grant (if still present) with its index keys,
	// and stores the revocation entry (lease until rev.Expires), atomically
	// with extra. It reports whether the grant was present, and the etcd
	// revision of the write.
	RevokeGrant(ctx context.Context, grantID string, rev *Revocation, extra ...Op) (bool, int64, error)
	// ListGrantIDs returns the ids in one grant index (ByUser, ByClient,
	// ByResource).
	ListGrantIDs(ctx context.Context, by, id string) ([]string, error)
	// ListGrants lists live grants matching the filter, one page, in index
	// (creation) order; pages may be short when secondary filters drop
	// grants. etcdstore page token errors for bad tokens.
	ListGrants(ctx context.Context, f GrantFilter, pageSize int, pageToken string) ([]*Grant, string, error)
	// DeleteGrant deletes a grant and its index keys without a revocation
	// entry (a watermark covers its tokens), with extra; it reports whether
	// the grant was present (extra is committed either way).
	DeleteGrant(ctx context.Context, id string, extra ...Op) (bool, error)

	// CutoffRevision returns the newest etcd ModRevision among the live
	// entries that end what a (user, client, resource) triple was issued
	// before them: the USER, CLIENT and RESOURCE watermarks and the code
	// cut-offs of the triple, its user and its client (0: none). It is a
	// linearizable read, so a write committed before it is compared with
	// every revocation written before that commit.
	CutoffRevision(ctx context.Context, userID, clientID, resource string) (int64, error)
	// PutCodeCutoff marks, until expires, that the authorization codes of
	// (userID, clientID, resource) issued so far may not be redeemed; an
	// empty field matches every value (userID only: all of the user's
	// codes; clientID only: all of the client's).
	PutCodeCutoff(ctx context.Context, userID, clientID, resource string, expires time.Time) error
	// TouchGrant sets a grant's LastUse to now (compare-and-swap, no
	// retry) unless it is already within every of now; false when nothing
	// was written (fresh enough, gone, or changed concurrently: another
	// writer already moved it).
	TouchGrant(ctx context.Context, id string, now time.Time, every time.Duration) (bool, error)
	// DeleteCCGrants deletes the grant records ids (with their index keys)
	// that are client_credentials grants of clientID for resource; absent
	// ones are skipped.
	DeleteCCGrants(ctx context.Context, clientID, resource string, ids []string) error
	// PutRevocation stores a revocation entry (lease until r.Expires) with
	// extra. A newer entry of the same kind and id replaces the older.
	PutRevocation(ctx context.Context, r *Revocation, extra ...Op) (int64, error)
	// RevocationsPrefix is the key range of the revocation set (for the
	// list-then-watch cache).
	RevocationsPrefix() etcdstore.Prefix

	// GetConsent returns the remembered consent, or ErrNotFound.
	GetConsent(ctx context.Context, userID, clientID, resource string) (*Consent, error)
	// ListConsents lists consents matching the filter, one page.
	ListConsents(ctx context.Context, f ConsentFilter, pageSize int, pageToken string) ([]*Consent, string, error)
	// DeleteConsent deletes one consent with its index key and extra,
	// reporting whether it was present (nothing is written otherwise).
	DeleteConsent(ctx context.Context, userID, clientID, resource string, extra ...Op) (bool, error)
	// DeleteUserConsents deletes every consent of the user with their index
	// keys, returning how many.
	DeleteUserConsents(ctx context.Context, userID string) (int, error)

	// SigningKeysPrefix is the key range of signing keys (list-then-watch).
	SigningKeysPrefix() etcdstore.Prefix
	// CreateActiveSigningKey stores k as the active key of its algorithm if
	// no key is active for it: ErrAlreadyExists when another replica won.
	CreateActiveSigningKey(ctx context.Context, k *SigningKey, extra ...Op) error
	// ReplaceActiveSigningKey makes k the active key of its algorithm in
	// place of the key oldKid (which is marked retired), only while oldKid
	// is still the active one (else ErrConflict).
	ReplaceActiveSigningKey(ctx context.Context, oldKid string, k *SigningKey, extra ...Op) error
	// UpdateSigningKeys writes key records and optionally moves the active
	// pointer of alg to newActive, only while it names expectActive ("" =
	// absent), else ErrConflict.
	UpdateSigningKeys(ctx context.Context, alg, expectActive, newActive string, puts []*SigningKey, extra ...Op) error
	// ElectionPrefix is the key prefix of the named leader election (under
	// the service's prefix, outside every cached range).
	ElectionPrefix(name string) string
	// ListSigningKeys returns every stored signing key.
	ListSigningKeys(ctx context.Context) ([]*SigningKey, error)

	// AppendEvents commits events that belong to no stored change (a
	// failed login for an unknown account).
	AppendEvents(ctx context.Context, extra ...Op) error
}

// LoginCommit is what CompleteLogin writes.
type LoginCommit struct {
	SessionHash    string
	Session        *Session
	OldSessionHash string
	ReqHash        string
	ReqRev         int64
	Req            *AuthRequest
	UserID         string
	// UserFn updates the user (last login, failure counter); it may run
	// several times.
	UserFn func(u *User) error
	Extra  []Op
}

// CodeCommit is what IssueCode writes.
type CodeCommit struct {
	ReqHash  string
	ReqRev   int64
	CodeHash string
	Code     *Code
	Consent  *Consent
	Extra    []Op
}
