// Package store keeps the policy service's state in etcd: one record per
// resource under /mcpid/policy/resources/, holding the operator policy and
// the published manifest side by side.
//
// Writes are compare-and-swap transactions on the record (through
// lib/etcdstore) that carry their audit event in the same transaction (the
// outbox), so a change and its event exist together or not at all. Reads
// for decisions never come here: Index keeps every record in memory by
// list-then-watch.
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/etcdstore"
)

// Conditions callers tell apart with errors.Is.
var (
	// ErrNotFound: the resource has neither a policy nor a manifest.
	ErrNotFound = errors.New("store: resource not found")
	// ErrPolicyNotFound: an expected revision names an operator policy that
	// does not exist.
	ErrPolicyNotFound = errors.New("store: operator policy not found")
	// ErrPolicyExists: create-only (expected revision 0) but a policy exists.
	// The error is a *RevisionError.
	ErrPolicyExists = errors.New("store: operator policy already exists")
	// ErrRevisionMismatch: the expected revision is not the stored one. The
	// error is a *RevisionError.
	ErrRevisionMismatch = errors.New("store: revision mismatch")
	// ErrConflict: the record kept changing under every attempt.
	ErrConflict = errors.New("store: too many concurrent writes")
	// ErrCompacted: a revision asked for has been compacted. The error is a
	// *RevisionError with the compact revision.
	ErrCompacted = errors.New("store: revision compacted")
	// ErrFutureRevision: a revision asked for is beyond the store's. The
	// error is a *RevisionError with the current revision.
	ErrFutureRevision = errors.New("store: revision not reached")
	// ErrInvalidPageToken: a page token is malformed or for other filters.
	ErrInvalidPageToken = errors.New("store: invalid page token")
)

// RevisionError carries the revision that explains a conflict.
type RevisionError struct {
	Err      error
	Revision int64
}

func (e *RevisionError) Error() string { return fmt.Sprintf("%v (revision %d)", e.Err, e.Revision) }

// Unwrap returns the sentinel.
func (e *RevisionError) Unwrap() error { return e.Err }

// Store is what the service needs from etcd. Every method that reads
// returns the record as committed; every write is one transaction with its
// audit event.
type Store interface {
	// Get returns the record of a canonical resource, read linearizably.
	// ErrNotFound when neither document exists.
	Get(ctx context.Context, resource string) (*Record, error)
	// PutPolicy creates or replaces the operator policy of req.Policy's
	// resource. It calls req.Validate with the manifest stored in the same
	// record (nil if none) and fails with its error; it checks
	// req.ExpectedRevision (ErrPolicyExists, ErrPolicyNotFound,
	// ErrRevisionMismatch); identical content writes nothing
	// (Changed=false). With req.ValidateOnly it stops before writing and
	// returns what would be stored. The record written and its event are
	// one transaction.
	PutPolicy(ctx context.Context, req PutPolicyRequest) (*WriteResult, error)
	// PublishManifest replaces the manifest of req.Manifest's resource,
	// last writer wins; identical content writes nothing (Changed=false).
	// It never reads or changes the policy part.
	PublishManifest(ctx context.Context, req PublishManifestRequest) (*WriteResult, error)
	// Delete removes the record (both documents) if req.ExpectedRevision
	// (when set) equals the policy's revision, 0 meaning "no policy".
	// ErrNotFound, ErrRevisionMismatch.
	Delete(ctx context.Context, req DeleteRequest) (*WriteResult, error)
	// List returns a page of records in resource order; every page of a
	// listing is read at the first page's revision. ErrInvalidPageToken,
	// ErrCompacted (start again).
	List(ctx context.Context, pageSize int, pageToken string) ([]*Record, string, error)
	// ListAt returns up to limit records after the resource `after` ("" from
	// the start) at revision rev (0: now), with the revision read and
	// whether more follow. ErrCompacted, ErrFutureRevision.
	ListAt(ctx context.Context, rev int64, after string, limit int) (recs []*Record, readRev int64, more bool, err error)
	// CurrentRevision returns etcd's current revision.
	CurrentRevision(ctx context.Context) (int64, error)
	// Watch delivers the record changes from startRev on, one call per etcd
	// watch response, until ctx ends or fn fails. A progress notification
	// is a call without changes. ErrCompacted when startRev is compacted.
	Watch(ctx context.Context, startRev int64, fn func(WatchResponse) error) error
}

// PutPolicyRequest is a PutPolicy call.
type PutPolicyRequest struct {
	// Policy is normalized (canonical resource, no output-only fields).
	Policy *policyv1.Policy
	// ExpectedRevision: nil writes unconditionally, 0 creates only, N
	// replaces only revision N.
	ExpectedRevision *int64
	ValidateOnly     bool
	// Validate checks Policy against the manifest stored with it.
	Validate func(manifest *policyv1.Manifest) error
	// By is recorded as updated_by; Now as update_time.
	By  string
	Now time.Time
	// Event returns the audit event of the change (old is nil for a new
	// record).
	Event func(old, updated *Record) (*auditv1.Event, error)
}

// PublishManifestRequest is a PublishManifest call.
type PublishManifestRequest struct {
	// Manifest is normalized and valid.
	Manifest *policyv1.Manifest
	By       string
	Now      time.Time
	Event    func(old, updated *Record) (*auditv1.Event, error)
}

// DeleteRequest is a Delete call.
type DeleteRequest struct {
	Resource         string
	ExpectedRevision *int64
	Event            func(old *Record) (*auditv1.Event, error)
}

// WriteResult is the outcome of a write.
type WriteResult struct {
	// Record is the record after the write (or as it would be, or as it is
	// when nothing changed); for Delete, the record deleted. With
	// ValidateOnly its new part has revision 0 when nothing was stored
	// before, else the current revision.
	Record *Record
	// Changed: something was (or would be) written.
	Changed bool
	// Revision is the etcd revision of the write; 0 when nothing was
	// written.
	Revision int64
}

// WatchResponse is one etcd watch response.
type WatchResponse struct {
	// Revision: every change at or before it has been delivered.
	Revision int64
	Changes  []RecordChange
}

// RecordChange is one record written or deleted.
type RecordChange struct {
	// Resource is the canonical resource URI.
	Resource string
	// Record is the new record; nil when deleted (or undecodable).
	Record *Record
	// Prev is the record before; nil when it did not exist.
	Prev *Record
}

// Etcd is the Store on etcd.
type Etcd struct {
	client *clientv3.Client
	st     *etcdstore.Store
	prefix etcdstore.Prefix
	outbox *auditemit.Outbox
}

var _ Store = (*Etcd)(nil)

// maxAttempts bounds the read-compute-swap loop of a write.
const maxAttempts = 16

// ResourcesPrefix returns the collection of records under the service prefix.
func ResourcesPrefix(service etcdstore.Prefix) etcdstore.Prefix { return service.Sub("resources") }

// NewEtcd returns the store of the policy service under service's prefix
// ("/mcpid/policy/"). outbox receives the events of writes.
func NewEtcd(client *clientv3.Client, service etcdstore.Prefix, outbox *auditemit.Outbox) *Etcd {
	return &Etcd{client: client, st: etcdstore.New(client), prefix: ResourcesPrefix(service), outbox: outbox}
}

// Prefix returns the records' prefix.
func (s *Etcd) Prefix() etcdstore.Prefix { return s.prefix }

func (s *Etcd) key(resource string) string { return s.prefix.Key(resource) }

// Get implements Store.
func (s *Etcd) Get(ctx context.Context, resource string) (*Record, error) {
	kv, err := s.st.Get(ctx, s.key(resource))
	if errors.Is(err, etcdstore.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return DecodeRecord(kv)
}

// errStale: the record changed between our read and our swap.
var errStale = errors.New("store: record changed")

// errUnchanged ends a write that has nothing to write.
var errUnchanged = errors.New("store: unchanged")

// writeFunc computes the next value of a record from its current one (nil
// when absent). It returns errUnchanged to write nothing.
type writeFunc func(cur *Record) (value []byte, del bool, ev *auditv1.Event, err error)

// write runs fn in a read-compute-swap loop. etcdstore.Update compares the
// record's ModRevision; fn needs that revision too (to resolve the stored
// parts' revisions), which UpdateFunc does not see, so the loop reads the
// record itself and has Update refuse a value other than the one read. A
// record's bytes change on every write (its seq), so equal bytes mean the
// same revision.
func (s *Etcd) write(ctx context.Context, resource string, fn writeFunc) (int64, error) {
	key := s.key(resource)
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		if attempt > 2 {
			if err := sleep(ctx, attempt); err != nil {
				return 0, err
			}
		}
		kv, err := s.st.Get(ctx, key)
		var cur *Record
		switch {
		case errors.Is(err, etcdstore.ErrNotFound):
		case err != nil:
			return 0, err
		default:
			if cur, err = DecodeRecord(kv); err != nil {
				return 0, err
			}
		}
		value, del, ev, err := fn(cur)
		if err != nil {
			return 0, err
		}
		var ops []etcdstore.Op
		if ev != nil {
			op, err := s.outbox.Op(ctx, ev)
			if err != nil {
				return 0, fmt.Errorf("store: audit event: %w", err)
			}
			ops = append(ops, op)
		}
		var rev int64
		switch {
		case cur == nil:
			rev, err = s.st.Create(ctx, key, value, ops...)
			if errors.Is(err, etcdstore.ErrAlreadyExists) {
				continue
			}
		case del:
			rev, err = s.st.Delete(ctx, key, kv.ModRevision, ops...)
			if errors.Is(err, etcdstore.ErrConflict) || errors.Is(err, etcdstore.ErrNotFound) {
				continue
			}
		default:
			read := kv.Value
			rev, err = s.st.Update(ctx, key, func(old []byte) ([]byte, []etcdstore.Op, error) {
				if !bytes.Equal(old, read) {
					return nil, nil, errStale
				}
				return value, ops, nil
			})
			if errors.Is(err, errStale) || errors.Is(err, etcdstore.ErrNotFound) {
				continue
			}
		}
		if err != nil {
			return 0, err
		}
		return rev, nil
	}
	return 0, ErrConflict
}

func sleep(ctx context.Context, attempt int) error {
	d := time.Duration(min(1<<attempt, 100)) * time.Millisecond
	t := time.NewTimer(rand.N(d) + time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PutPolicy implements Store.
func (s *Etcd) PutPolicy(ctx context.Context, req PutPolicyRequest) (*WriteResult, error) {
	resource := req.Policy.GetResource()
	var res *WriteResult
	rev, err := s.write(ctx, resource, func(cur *Record) ([]byte, bool, *auditv1.Event, error) {
		res = nil
		var stored *policyv1.Policy
		var man *policyv1.Manifest
		if cur != nil {
			stored, man = cur.Policy, cur.Manifest
		}
		if exp := req.ExpectedRevision; exp != nil {
			switch {
			case *exp == 0 && stored != nil:
				return nil, false, nil, &RevisionError{Err: ErrPolicyExists, Revision: stored.GetRevision()}
			case *exp > 0 && stored == nil:
				return nil, false, nil, ErrPolicyNotFound
			case *exp > 0 && stored.GetRevision() != *exp:
				return nil, false, nil, &RevisionError{Err: ErrRevisionMismatch, Revision: stored.GetRevision()}
			}
		}
		if err := req.Validate(man); err != nil {
			return nil, false, nil, err
		}
		if stored != nil && SamePolicy(stored, req.Policy) {
			res = &WriteResult{Record: cur}
			return nil, false, nil, errUnchanged
		}
		next := &Record{Resource: resource, Manifest: man, ModRevision: 0}
		np := cloneOutput(req.Policy, stored.GetRevision(), req.Now, req.By)
		next.Policy = np
		res = &WriteResult{Record: next, Changed: true}
		if req.ValidateOnly {
			return nil, false, nil, errUnchanged
		}
		value, err := encode(cur, resource, &policyPart{doc: req.Policy, time: req.Now, by: req.By}, nil)
		if err != nil {
			return nil, false, nil, err
		}
		ev, err := req.Event(cur, next)
		if err != nil {
			return nil, false, nil, err
		}
		return value, false, ev, nil
	})
	if errors.Is(err, errUnchanged) {
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	res.Revision = rev
	res.Record.ModRevision = rev
	res.Record.Policy.Revision = rev
	return res, nil
}

// cloneOutput returns doc with output-only fields set as they would be
// stored (revision rev until the write's revision is known).
func cloneOutput(doc *policyv1.Policy, rev int64, now time.Time, by string) *policyv1.Policy {
	c := clonePolicy(doc)
	c.Revision = rev
	c.UpdateTime = timestamp(now)
	c.UpdatedBy = by
	return c
}

// PublishManifest implements Store.
func (s *Etcd) PublishManifest(ctx context.Context, req PublishManifestRequest) (*WriteResult, error) {
	resource := req.Manifest.GetResource()
	var res *WriteResult
	rev, err := s.write(ctx, resource, func(cur *Record) ([]byte, bool, *auditv1.Event, error) {
		var stored *policyv1.Manifest
		var pol *policyv1.Policy
		if cur != nil {
			stored, pol = cur.Manifest, cur.Policy
		}
		if stored != nil && SameManifest(stored, req.Manifest) {
			res = &WriteResult{Record: cur}
			return nil, false, nil, errUnchanged
		}
		m := cloneManifest(req.Manifest)
		m.PublishTime = timestamp(req.Now)
		m.PublishedBy = req.By
		next := &Record{Resource: resource, Policy: pol, Manifest: m}
		res = &WriteResult{Record: next, Changed: true}
		value, err := encode(cur, resource, nil, &manifestPart{doc: req.Manifest, time: req.Now, by: req.By})
		if err != nil {
			return nil, false, nil, err
		}
		ev, err := req.Event(cur, next)
		if err != nil {
			return nil, false, nil, err
		}
		return value, false, ev, nil
	})
	if errors.Is(err, errUnchanged) {
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	res.Revision = rev
	res.Record.ModRevision = rev
	res.Record.Manifest.Revision = rev
	return res, nil
}

// Delete implements Store.
func (s *Etcd) Delete(ctx context.Context, req DeleteRequest) (*WriteResult, error) {
	var res *WriteResult
	rev, err := s.write(ctx, req.Resource, func(cur *Record) ([]byte, bool, *auditv1.Event, error) {
		if cur == nil {
			return nil, false, nil, ErrNotFound
		}
		if exp := req.ExpectedRevision; exp != nil && cur.Policy.GetRevision() != *exp {
			if cur.Policy == nil {
				return nil, false, nil, &RevisionError{Err: ErrRevisionMismatch, Revision: 0}
			}
			return nil, false, nil, &RevisionError{Err: ErrRevisionMismatch, Revision: cur.Policy.GetRevision()}
		}
		ev, err := req.Event(cur)
		if err != nil {
			return nil, false, nil, err
		}
		res = &WriteResult{Record: cur, Changed: true}
		return nil, true, ev, nil
	})
	if err != nil {
		return nil, err
	}
	res.Revision = rev
	return res, nil
}
