package etcdstore

import (
	"errors"
	"strconv"
)

// Conditions callers tell apart with errors.Is. Errors about one key come as
// a *KeyError wrapping the sentinel, so errors.As also reveals which key: for
// ErrAlreadyExists, the record itself or one of its unique index keys.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("etcdstore: not found")
	// ErrAlreadyExists: a key that had to be absent (a record being created
	// or a unique index key) exists.
	ErrAlreadyExists = errors.New("etcdstore: already exists")
	// ErrConflict: the key changed under a compare-and-swap — after all
	// retries for Update and DeleteFunc, at once for Delete with a revision.
	ErrConflict = errors.New("etcdstore: concurrent modification")
	// ErrInvalidPageToken: the page token is malformed, was issued for
	// another prefix, or names a revision etcd has not reached.
	ErrInvalidPageToken = errors.New("etcdstore: invalid page token")
	// ErrPageTokenExpired: the revision the listing was reading at has been
	// compacted; the caller has to start the listing again.
	ErrPageTokenExpired = errors.New("etcdstore: page token expired")
)

// KeyError reports a condition (one of the sentinels) about a key.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string {
	return e.Err.Error() + ": key " + strconv.Quote(e.Key)
}

// Unwrap returns the sentinel.
func (e *KeyError) Unwrap() error { return e.Err }

func keyErr(key string, err error) error { return &KeyError{Key: key, Err: err} }
