// Package store keeps the registration service's state in etcd under
// /mcpid/registration/: clients, initial access tokens, used assertion ids,
// duplicate-registration slots, expiry markers and pending grant
// revocations.
//
// Every write that must agree is one transaction: a client with its expiry
// marker, its duplicate slot, the initial access token use it consumes and
// the caller's outbox events. Records are JSON storage structs, separate from
// the API messages. Expiry uses etcd leases: each client that expires has a
// marker key on a lease; the lease running out deletes the marker, and the
// expiry worker turns that deletion into the client's deletion and its
// `client.expired` event (see Store.ExpiryPrefix).
package store

import (
	"context"
	"errors"
	"time"

	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/registration/internal/secret"
)

// Errors, matched with errors.Is; they come wrapped with details.
var (
	ErrNotFound      = etcdstore.ErrNotFound
	ErrAlreadyExists = etcdstore.ErrAlreadyExists
	ErrConflict      = etcdstore.ErrConflict
	// ErrIATChanged: the initial access token a registration consumes
	// changed (or vanished) since it was read; read it again.
	ErrIATChanged = errors.New("store: initial access token changed")
	// ErrSlotTaken: the duplicate-registration slot was taken concurrently;
	// pick another.
	ErrSlotTaken = errors.New("store: duplicate slot taken")
	// ErrDuplicateLimit: every duplicate-registration slot is taken.
	ErrDuplicateLimit = errors.New("store: duplicate registrations limit reached")
	// ErrInvalidPageToken: the page token is malformed or expired.
	ErrInvalidPageToken = errors.New("store: invalid page token")
)

// CreateOptions are what a client creation commits along with the client.
type CreateOptions struct {
	// IAT, when set, is the initial access token the registration used, as
	// read (Revision) and with its use recorded (UseCount, LastUsedTime):
	// it is written back only if unchanged since it was read, else the
	// whole creation fails with ErrIATChanged.
	IAT *IAT
	// DuplicateSlot, when set, is a slot key from DuplicateSlot, taken for
	// DuplicateWindow on a lease of its own; if it was taken meanwhile the
	// creation fails with ErrSlotTaken.
	DuplicateSlot   string
	DuplicateWindow time.Duration
	// Extra are further operations of the same transaction (outbox events).
	Extra []etcdstore.Op
}

// Store is the registration service's storage. Implementations must be safe
// for concurrent use. Errors other than the documented ones are storage
// failures (etcd unreachable, ...).
type Store interface {
	// CreateClient stores c if no client has its id (ErrAlreadyExists
	// otherwise), with everything in opts, in one transaction. When
	// c.ExpireTime is set it also creates the expiry marker on a new lease
	// that ends then, and sets c.LeaseID. c.ConsentEpoch is ignored: the
	// epoch becomes the revision of this write. It returns that revision
	// and sets c.Revision to it.
	CreateClient(ctx context.Context, c *Client, opts CreateOptions) (int64, error)

	// GetClient returns the client with this id, ErrNotFound if none.
	GetClient(ctx context.Context, id string) (*Client, error)

	// UpdateClient applies fn to the current client and writes the result
	// with the operations fn returns, if the record is unchanged since it
	// was read; otherwise it reads again and calls fn again (bounded, then
	// ErrConflict). fn must not keep c. ErrNotFound if there is no such
	// client; fn's error is returned as it is, with nothing written. When fn
	// changes ExpireTime the expiry marker moves to a new lease ending then
	// (or is removed when it becomes zero). When fn sets ConsentEpoch to 0
	// the epoch becomes the revision of this write. It returns the client
	// as written.
	UpdateClient(ctx context.Context, id string, fn func(c *Client) ([]etcdstore.Op, error)) (*Client, error)

	// DeleteClient deletes the client and its expiry marker together with
	// the operations fn derives from it, retried like UpdateClient. It
	// returns the client as it was.
	DeleteClient(ctx context.Context, id string, fn func(c *Client) ([]etcdstore.Op, error)) (*Client, error)

	// ListClients returns up to pageSize clients in client_id key order
	// and the token of the next page ("" after the last).
	// ErrInvalidPageToken for a bad or expired token.
	ListClients(ctx context.Context, pageSize int, pageToken string) ([]*Client, string, error)

	// CountClients returns the number of stored clients.
	CountClients(ctx context.Context) (int64, error)

	// RenewClient records a use of c at now: for a client with IdleExpiry
	// it renews the expiry lease (ErrNotFound if the lease is gone: the
	// client is expiring) and sets ExpireTime to expire; it sets
	// LastUsedTime. The record is written only if unchanged since c was
	// read; losing that race is not an error (someone else just wrote it).
	RenewClient(ctx context.Context, c *Client, now, expire time.Time) error

	// ExpiryPrefix is the prefix of the expiry markers: one key per client
	// with an expiry, named by its id, on the client's lease (Client.LeaseID).
	// Watchers see a marker's deletion when its lease ran out (or the
	// client was deleted, which deletes the marker too).
	ExpiryPrefix() etcdstore.Prefix

	// ExpiryMarkerClientID returns the client id a marker key names.
	ExpiryMarkerClientID(key string) (string, error)

	// LeaseAlive reports whether an expiry lease still exists.
	LeaseAlive(ctx context.Context, lease int64) (bool, error)

	// CreateIAT stores an initial access token (ErrAlreadyExists if its id
	// or hash is taken) on a lease ending at t.ExpireTime, with extra in the
	// same transaction.
	CreateIAT(ctx context.Context, t *IAT, extra ...etcdstore.Op) error

	// GetIATByHash returns the initial access token whose value has this
	// digest, ErrNotFound if none (or expired and deleted).
	GetIATByHash(ctx context.Context, hash secret.Digest) (*IAT, error)

	// GetIAT returns the token with this id, ErrNotFound if none.
	GetIAT(ctx context.Context, id string) (*IAT, error)

	// UpdateIAT applies fn to the current token with compare-and-swap and
	// retry, keeping its lease, with fn's operations in the same
	// transaction. ErrNotFound if none; fn's error as it is.
	UpdateIAT(ctx context.Context, id string, fn func(t *IAT) ([]etcdstore.Op, error)) (*IAT, error)

	// ListIATs returns up to pageSize tokens, newest first, and the next
	// page's token. ErrInvalidPageToken for a bad or expired token.
	ListIATs(ctx context.Context, pageSize int, pageToken string) ([]*IAT, string, error)

	// RememberJTI records that client used assertion id jti, until until.
	// ErrAlreadyExists if it was recorded before and has not expired.
	RememberJTI(ctx context.Context, clientID, jti string, until time.Time) error

	// DuplicateSlot returns a free slot key among limit slots for
	// registrations with this fingerprint, or ErrDuplicateLimit (wrapped)
	// with how long until the first slot frees.
	DuplicateSlot(ctx context.Context, fingerprint string, limit int) (string, time.Duration, error)

	// RevocationOp returns the operation that records a pending revocation
	// of the client's grants and consents, to commit with the change that
	// calls for it.
	RevocationOp(clientID, reason string, now time.Time) (etcdstore.Op, error)

	// RevocationPrefix is where pending revocations live (for watching).
	RevocationPrefix() etcdstore.Prefix

	// ListRevocations returns up to limit pending revocations, oldest first.
	ListRevocations(ctx context.Context, limit int) ([]*Revocation, error)

	// DeleteRevocation removes a delivered revocation.
	DeleteRevocation(ctx context.Context, key string) error
}
