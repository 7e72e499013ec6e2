package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
)

// Record is one resource's stored documents. Both layers live in one etcd
// key, so that every write sees (and compares against) both at one
// revision, a delete removes both atomically, and each watch event carries
// the whole resource.
type Record struct {
	// Resource is the canonical resource URI.
	Resource string
	// Policy is the operator policy with its output-only fields (revision,
	// update_time, updated_by); nil when there is none.
	Policy *policyv1.Policy
	// Manifest is the published manifest with its output-only fields; nil
	// when there is none.
	Manifest *policyv1.Manifest
	// ModRevision is the etcd ModRevision of the record's key.
	ModRevision int64

	seq int64
}

// recordVersion is the storage format version.
const recordVersion = 1

// recordJSON is the stored form. Documents are kept in the proto JSON
// mapping so that etcdctl shows them readably; a part's revision of 0 means
// "the record's ModRevision" (the part was changed by the record's last
// write, whose revision cannot be known before it commits).
type recordJSON struct {
	V        int       `json:"v"`
	Seq      int64     `json:"seq"`
	Resource string    `json:"resource"`
	Policy   *partJSON `json:"policy,omitempty"`
	Manifest *partJSON `json:"manifest,omitempty"`
}

type partJSON struct {
	Doc  json.RawMessage `json:"doc"`
	Rev  int64           `json:"rev,omitempty"`
	Time time.Time       `json:"time"`
	By   string          `json:"by"`
}

var errCorrupt = errors.New("corrupt policy record")

// decodeOptions tolerate fields a newer release may have added.
var decodeOptions = protojson.UnmarshalOptions{DiscardUnknown: true}

// DecodeRecord parses a stored record. kv's ModRevision resolves the
// revisions of the parts its last write changed.
func DecodeRecord(kv *mvccpb.KeyValue) (*Record, error) {
	var rj recordJSON
	if err := json.Unmarshal(kv.Value, &rj); err != nil {
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	if rj.V != recordVersion {
		return nil, fmt.Errorf("%w: format version %d", errCorrupt, rj.V)
	}
	if rj.Policy == nil && rj.Manifest == nil {
		return nil, fmt.Errorf("%w: neither document", errCorrupt)
	}
	if (rj.Policy != nil && rj.Policy.Rev < 0) || (rj.Manifest != nil && rj.Manifest.Rev < 0) {
		return nil, fmt.Errorf("%w: negative revision", errCorrupt)
	}
	r := &Record{Resource: rj.Resource, ModRevision: kv.ModRevision, seq: rj.Seq}
	resolve := func(rev int64) int64 {
		if rev == 0 {
			return kv.ModRevision
		}
		return rev
	}
	if p := rj.Policy; p != nil {
		pol := &policyv1.Policy{}
		if err := decodeOptions.Unmarshal(p.Doc, pol); err != nil {
			return nil, fmt.Errorf("%w: policy: %w", errCorrupt, err)
		}
		if pol.GetResource() != rj.Resource {
			return nil, fmt.Errorf("%w: policy names resource %q", errCorrupt, pol.GetResource())
		}
		pol.Revision = resolve(p.Rev)
		pol.UpdateTime = timestamppb.New(p.Time)
		pol.UpdatedBy = p.By
		r.Policy = pol
	}
	if m := rj.Manifest; m != nil {
		man := &policyv1.Manifest{}
		if err := decodeOptions.Unmarshal(m.Doc, man); err != nil {
			return nil, fmt.Errorf("%w: manifest: %w", errCorrupt, err)
		}
		if man.GetResource() != rj.Resource {
			return nil, fmt.Errorf("%w: manifest names resource %q", errCorrupt, man.GetResource())
		}
		man.Revision = resolve(m.Rev)
		man.PublishTime = timestamppb.New(m.Time)
		man.PublishedBy = m.By
		r.Manifest = man
	}
	return r, nil
}

// encode writes the record that follows r (r may be nil: a new record) with
// the given parts replaced. A replaced part gets revision 0 (this write's);
// a kept part gets its resolved revision.
func encode(r *Record, resource string, pol *policyPart, man *manifestPart) ([]byte, error) {
	rj := recordJSON{V: recordVersion, Resource: resource}
	if r != nil {
		rj.Seq = r.seq + 1 // every write changes the bytes: see casUpdate
	}
	var err error
	switch {
	case pol != nil:
		if rj.Policy, err = newPart(pol.doc, 0, pol.time, pol.by); err != nil {
			return nil, err
		}
	case r != nil && r.Policy != nil:
		if rj.Policy, err = newPart(r.Policy, r.Policy.GetRevision(), r.Policy.GetUpdateTime().AsTime(), r.Policy.GetUpdatedBy()); err != nil {
			return nil, err
		}
	}
	switch {
	case man != nil:
		if rj.Manifest, err = newPart(man.doc, 0, man.time, man.by); err != nil {
			return nil, err
		}
	case r != nil && r.Manifest != nil:
		if rj.Manifest, err = newPart(r.Manifest, r.Manifest.GetRevision(), r.Manifest.GetPublishTime().AsTime(), r.Manifest.GetPublishedBy()); err != nil {
			return nil, err
		}
	}
	return json.Marshal(rj)
}

type policyPart struct {
	doc  *policyv1.Policy
	time time.Time
	by   string
}

type manifestPart struct {
	doc  *policyv1.Manifest
	time time.Time
	by   string
}

// newPart stores doc without its output-only fields.
func newPart(doc proto.Message, rev int64, t time.Time, by string) (*partJSON, error) {
	c := proto.Clone(doc)
	switch d := c.(type) {
	case *policyv1.Policy:
		d.Revision, d.UpdateTime, d.UpdatedBy = 0, nil, ""
	case *policyv1.Manifest:
		d.Revision, d.PublishTime, d.PublishedBy = 0, nil, ""
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("store: encode document: %w", err)
	}
	return &partJSON{Doc: b, Rev: rev, Time: t.UTC(), By: by}, nil
}

// SamePolicy reports whether two policies have the same content (output-only
// fields ignored).
func SamePolicy(a, b *policyv1.Policy) bool {
	if a == nil || b == nil {
		return a == b
	}
	ca, cb := proto.CloneOf(a), proto.CloneOf(b)
	ca.Revision, ca.UpdateTime, ca.UpdatedBy = 0, nil, ""
	cb.Revision, cb.UpdateTime, cb.UpdatedBy = 0, nil, ""
	return proto.Equal(ca, cb)
}

// SameManifest is SamePolicy for manifests.
func SameManifest(a, b *policyv1.Manifest) bool {
	if a == nil || b == nil {
		return a == b
	}
	ca, cb := proto.CloneOf(a), proto.CloneOf(b)
	ca.Revision, ca.PublishTime, ca.PublishedBy = 0, nil, ""
	cb.Revision, cb.PublishTime, cb.PublishedBy = 0, nil, ""
	return proto.Equal(ca, cb)
}
