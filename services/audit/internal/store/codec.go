package store

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
)

// Batch and ledger values are written with protowire by hand rather than
// with a generated message: storage formats stay separate from the API, and
// the index can read the few fields it needs from a batch (ids, sequences,
// hashes) without decoding whole events.
//
// batch  = 1: format (varint) | 2: first sequence (varint) | 3: entry (bytes)*
// entry  = 1: event (bytes, auditv1.Event deterministic) | 2: content digest (bytes)
// ledger = 1: format (varint) | 2: ledger entry (bytes)*
// lentry = 1: id | 2: sequence | 3: hash | 4: content digest | 5: append time (unix nanos)

const formatV1 = 1

// ErrCorrupt means a stored value cannot be decoded: someone wrote to etcd
// what audit did not.
var ErrCorrupt = errors.New("store: corrupt record")

// Entry is one chained event as stored.
type Entry struct {
	// Event is the chained event (output fields set).
	Event *auditv1.Event
	// Digest is the content digest of what the producer sent
	// (chain.ContentDigest), kept to tell retries from reused ids.
	Digest []byte
}

// Batch is the content of one batch key: events with contiguous sequences.
type Batch struct {
	First   uint64
	Entries []Entry
}

// Last returns the sequence of the batch's last event.
func (b *Batch) Last() uint64 { return b.First + uint64(len(b.Entries)) - 1 }

var deterministic = proto.MarshalOptions{Deterministic: true}

// EncodeBatch encodes b.
func EncodeBatch(b *Batch) ([]byte, error) {
	out := protowire.AppendTag(nil, 1, protowire.VarintType)
	out = protowire.AppendVarint(out, formatV1)
	out = protowire.AppendTag(out, 2, protowire.VarintType)
	out = protowire.AppendVarint(out, b.First)
	for _, e := range b.Entries {
		ev, err := deterministic.Marshal(e.Event)
		if err != nil {
			return nil, fmt.Errorf("store: encode event %q: %w", e.Event.GetId(), err)
		}
		entry := protowire.AppendTag(nil, 1, protowire.BytesType)
		entry = protowire.AppendBytes(entry, ev)
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendBytes(entry, e.Digest)
		out = protowire.AppendTag(out, 3, protowire.BytesType)
		out = protowire.AppendBytes(out, entry)
	}
	return out, nil
}

// DecodeBatch decodes a batch value in full.
func DecodeBatch(v []byte) (*Batch, error) {
	b := &Batch{}
	err := scanBatch(v, &b.First, func(ev, digest []byte) error {
		e := &auditv1.Event{}
		if err := proto.Unmarshal(ev, e); err != nil {
			return fmt.Errorf("%w: event: %w", ErrCorrupt, err)
		}
		b.Entries = append(b.Entries, Entry{Event: e, Digest: digest})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// IDRecord is what the index keeps per chained event id.
type IDRecord struct {
	ID         string
	Sequence   uint64
	Hash       []byte
	Digest     []byte
	AppendTime time.Time
}

// BatchSummary is what the index reads from a batch without decoding its
// events fully.
type BatchSummary struct {
	First, Last uint64
	AppendTime  time.Time
	Bytes       int
	IDs         []IDRecord
}

// SummarizeBatch reads ids, sequences, hashes and the append time.
func SummarizeBatch(v []byte) (*BatchSummary, error) {
	s := &BatchSummary{Bytes: len(v)}
	err := scanBatch(v, &s.First, func(ev, digest []byte) error {
		r, err := peekEvent(ev)
		if err != nil {
			return err
		}
		r.Digest = bytes.Clone(digest)
		if s.AppendTime.IsZero() {
			s.AppendTime = r.AppendTime
		}
		s.IDs = append(s.IDs, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(s.IDs) == 0 {
		return nil, fmt.Errorf("%w: empty batch", ErrCorrupt)
	}
	s.Last = s.First + uint64(len(s.IDs)) - 1
	return s, nil
}

func scanBatch(v []byte, first *uint64, entry func(ev, digest []byte) error) error {
	format := uint64(0)
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return fmt.Errorf("%w: batch tag", ErrCorrupt)
		}
		v = v[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			format, n = protowire.ConsumeVarint(v)
		case num == 2 && typ == protowire.VarintType:
			*first, n = protowire.ConsumeVarint(v)
		case num == 3 && typ == protowire.BytesType:
			var e []byte
			e, n = protowire.ConsumeBytes(v)
			if n >= 0 {
				ev, digest, err := splitEntry(e)
				if err != nil {
					return err
				}
				if err := entry(ev, digest); err != nil {
					return err
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, v)
		}
		if n < 0 {
			return fmt.Errorf("%w: batch field %d", ErrCorrupt, num)
		}
		v = v[n:]
	}
	if format != formatV1 {
		return fmt.Errorf("%w: batch format %d", ErrCorrupt, format)
	}
	return nil
}

func splitEntry(e []byte) (ev, digest []byte, err error) {
	for len(e) > 0 {
		num, typ, n := protowire.ConsumeTag(e)
		if n < 0 {
			return nil, nil, fmt.Errorf("%w: entry tag", ErrCorrupt)
		}
		e = e[n:]
		var b []byte
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			b, n = protowire.ConsumeBytes(e)
			if num == 1 {
				ev = b
			} else {
				digest = b
			}
		} else {
			n = protowire.ConsumeFieldValue(num, typ, e)
		}
		if n < 0 {
			return nil, nil, fmt.Errorf("%w: entry field %d", ErrCorrupt, num)
		}
		e = e[n:]
	}
	return ev, digest, nil
}

// Field numbers of auditv1.Event read by peekEvent.
const (
	eventID         = 1
	eventSequence   = 2
	eventAppendTime = 4
	eventHash       = 31
)

// peekEvent reads id, sequence, append_time and hash from an encoded event.
func peekEvent(ev []byte) (IDRecord, error) {
	var r IDRecord
	for len(ev) > 0 {
		num, typ, n := protowire.ConsumeTag(ev)
		if n < 0 {
			return r, fmt.Errorf("%w: event tag", ErrCorrupt)
		}
		ev = ev[n:]
		switch {
		case num == eventID && typ == protowire.BytesType:
			var b []byte
			b, n = protowire.ConsumeBytes(ev)
			r.ID = string(b)
		case num == eventSequence && typ == protowire.VarintType:
			r.Sequence, n = protowire.ConsumeVarint(ev)
		case num == eventHash && typ == protowire.BytesType:
			var b []byte
			b, n = protowire.ConsumeBytes(ev)
			r.Hash = bytes.Clone(b) // not the batch value's memory: the index keeps it
		case num == eventAppendTime && typ == protowire.BytesType:
			var b []byte
			b, n = protowire.ConsumeBytes(ev)
			if n >= 0 {
				r.AppendTime = peekTimestamp(b)
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, ev)
		}
		if n < 0 {
			return r, fmt.Errorf("%w: event field %d", ErrCorrupt, num)
		}
		ev = ev[n:]
	}
	return r, nil
}

func peekTimestamp(b []byte) time.Time {
	var secs, nanos uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return time.Time{}
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			secs, n = protowire.ConsumeVarint(b)
		case num == 2 && typ == protowire.VarintType:
			nanos, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return time.Time{}
		}
		b = b[n:]
	}
	return time.Unix(int64(secs), int64(int32(nanos))).UTC()
}

// EncodeLedger encodes the id records of archived events.
func EncodeLedger(recs []IDRecord) []byte {
	out := protowire.AppendTag(nil, 1, protowire.VarintType)
	out = protowire.AppendVarint(out, formatV1)
	for _, r := range recs {
		e := protowire.AppendTag(nil, 1, protowire.BytesType)
		e = protowire.AppendString(e, r.ID)
		e = protowire.AppendTag(e, 2, protowire.VarintType)
		e = protowire.AppendVarint(e, r.Sequence)
		e = protowire.AppendTag(e, 3, protowire.BytesType)
		e = protowire.AppendBytes(e, r.Hash)
		e = protowire.AppendTag(e, 4, protowire.BytesType)
		e = protowire.AppendBytes(e, r.Digest)
		e = protowire.AppendTag(e, 5, protowire.VarintType)
		e = protowire.AppendVarint(e, uint64(r.AppendTime.UnixNano()))
		out = protowire.AppendTag(out, 2, protowire.BytesType)
		out = protowire.AppendBytes(out, e)
	}
	return out
}

// DecodeLedger decodes a ledger value.
func DecodeLedger(v []byte) ([]IDRecord, error) {
	var recs []IDRecord
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return nil, fmt.Errorf("%w: ledger tag", ErrCorrupt)
		}
		v = v[n:]
		if num == 2 && typ == protowire.BytesType {
			var e []byte
			e, n = protowire.ConsumeBytes(v)
			if n >= 0 {
				r, err := decodeLedgerEntry(e)
				if err != nil {
					return nil, err
				}
				recs = append(recs, r)
			}
		} else {
			n = protowire.ConsumeFieldValue(num, typ, v)
		}
		if n < 0 {
			return nil, fmt.Errorf("%w: ledger field %d", ErrCorrupt, num)
		}
		v = v[n:]
	}
	return recs, nil
}

func decodeLedgerEntry(e []byte) (IDRecord, error) {
	var r IDRecord
	for len(e) > 0 {
		num, typ, n := protowire.ConsumeTag(e)
		if n < 0 {
			return r, fmt.Errorf("%w: ledger entry tag", ErrCorrupt)
		}
		e = e[n:]
		var b []byte
		var u uint64
		switch {
		case typ == protowire.BytesType && num >= 1 && num <= 4 && num != 2:
			b, n = protowire.ConsumeBytes(e)
		case typ == protowire.VarintType && (num == 2 || num == 5):
			u, n = protowire.ConsumeVarint(e)
		default:
			n = protowire.ConsumeFieldValue(num, typ, e)
		}
		if n < 0 {
			return r, fmt.Errorf("%w: ledger entry field %d", ErrCorrupt, num)
		}
		switch num {
		case 1:
			r.ID = string(b)
		case 2:
			r.Sequence = u
		case 3:
			r.Hash = b
		case 4:
			r.Digest = b
		case 5:
			r.AppendTime = time.Unix(0, int64(u)).UTC()
		}
		e = e[n:]
	}
	return r, nil
}
