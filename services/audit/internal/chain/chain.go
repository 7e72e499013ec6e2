// Package chain is the audit chain's cryptography, exactly as the contract
// (mcpid.audit.v1.Event, hash_version 1) documents it for external
// verifiers: the canonical encoding of an event, its SHA-256 hash, the
// salted HMAC digests that stand in for personal data in that hash, and the
// checks a verifier makes on each link.
package chain

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/services/audit/internal/jcs"
)

// HashVersion is the hash scheme this package implements.
const HashVersion = 1

// Sizes of the cryptographic values.
const (
	HashSize = sha256.Size
	SaltSize = 16
)

// Field is one Protected field of Event.
type Field struct {
	// Name is the proto field name ("user_agent").
	Name string
	// Enum names it in ErasePersonalDataRequest.fields.
	Enum auditv1.ProtectedField
	// Get and Set access the field.
	Get func(*auditv1.Event) *auditv1.Protected
	Set func(*auditv1.Event, *auditv1.Protected)
}

// Fields are the protected fields of Event in field-number order.
var Fields = []Field{
	{"source_address", auditv1.ProtectedField_PROTECTED_FIELD_SOURCE_ADDRESS,
		(*auditv1.Event).GetSourceAddress, func(e *auditv1.Event, p *auditv1.Protected) { e.SourceAddress = p }},
	{"user_agent", auditv1.ProtectedField_PROTECTED_FIELD_USER_AGENT,
		(*auditv1.Event).GetUserAgent, func(e *auditv1.Event, p *auditv1.Protected) { e.UserAgent = p }},
	{"tool_arguments", auditv1.ProtectedField_PROTECTED_FIELD_TOOL_ARGUMENTS,
		(*auditv1.Event).GetToolArguments, func(e *auditv1.Event, p *auditv1.Protected) { e.ToolArguments = p }},
	{"user_email", auditv1.ProtectedField_PROTECTED_FIELD_USER_EMAIL,
		(*auditv1.Event).GetUserEmail, func(e *auditv1.Event, p *auditv1.Protected) { e.UserEmail = p }},
	{"user_name", auditv1.ProtectedField_PROTECTED_FIELD_USER_NAME,
		(*auditv1.Event).GetUserName, func(e *auditv1.Event, p *auditv1.Protected) { e.UserName = p }},
	{"login_name", auditv1.ProtectedField_PROTECTED_FIELD_LOGIN_NAME,
		(*auditv1.Event).GetLoginName, func(e *auditv1.Event, p *auditv1.Protected) { e.LoginName = p }},
	{"upstream_subject", auditv1.ProtectedField_PROTECTED_FIELD_UPSTREAM_SUBJECT,
		(*auditv1.Event).GetUpstreamSubject, func(e *auditv1.Event, p *auditv1.Protected) { e.UpstreamSubject = p }},
}

// hashForm returns the event as hash_version 1 sees it: every field defined
// in version 1 except hash and erase_time, each Protected value reduced to
// its digest. It names the version-1 fields one by one, so a field added to
// Event later can never slip into a version-1 hash. The result shares
// sub-messages with ev and must not be modified.
func hashForm(ev *auditv1.Event) *auditv1.Event {
	h := &auditv1.Event{
		Id:            ev.GetId(),
		Sequence:      ev.GetSequence(),
		Time:          ev.GetTime(),
		AppendTime:    ev.GetAppendTime(),
		Type:          ev.GetType(),
		SourceService: ev.GetSourceService(),
		UserId:        ev.GetUserId(),
		ClientId:      ev.GetClientId(),
		Resource:      ev.GetResource(),
		Tool:          ev.GetTool(),
		Scopes:        ev.GetScopes(),
		Decision:      ev.GetDecision(),
		Reason:        ev.GetReason(),
		GrantId:       ev.GetGrantId(),
		TokenId:       ev.GetTokenId(),
		DecisionId:    ev.GetDecisionId(),
		ConnectorId:   ev.GetConnectorId(),
		TraceId:       ev.GetTraceId(),
		SampleWeight:  ev.GetSampleWeight(),
		Details:       ev.GetDetails(),
		HashVersion:   ev.GetHashVersion(),
		PrevHash:      ev.GetPrevHash(),
	}
	if a := ev.GetActor(); a != nil {
		h.Actor = &auditv1.Actor{Kind: a.GetKind(), Id: a.GetId(), Display: a.GetDisplay()}
	}
	for _, f := range Fields {
		if p := f.Get(ev); p != nil {
			f.Set(h, &auditv1.Protected{Digest: p.GetDigest()})
		}
	}
	return h
}

var hashJSON = protojson.MarshalOptions{UseProtoNames: true, UseEnumNumbers: true}

// Canonical returns the canonical encoding of ev (steps 1 to 3 of the
// contract): the hash form written by protojson with proto names and enum
// numbers, canonicalized by RFC 8785.
func Canonical(ev *auditv1.Event) ([]byte, error) {
	j, err := hashJSON.Marshal(hashForm(ev))
	if err != nil {
		return nil, fmt.Errorf("chain: encode event %q: %w", ev.GetId(), err)
	}
	c, err := jcs.Transform(j)
	if err != nil {
		return nil, fmt.Errorf("chain: canonicalize event %q: %w", ev.GetId(), err)
	}
	return c, nil
}

// Hash returns SHA-256 over the canonical encoding of ev: the value its
// `hash` field must hold.
func Hash(ev *auditv1.Event) ([]byte, error) {
	c, err := Canonical(ev)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(c)
	return sum[:], nil
}

// Digest is HMAC-SHA-256(key = salt, message = value).
func Digest(salt []byte, value string) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(value))
	return m.Sum(nil)
}

// Protect draws a fresh salt for every Protected value of ev and sets its
// digest. Values must carry cleartext (the caller validated that).
func Protect(ev *auditv1.Event) {
	for _, f := range Fields {
		p := f.Get(ev)
		if p == nil {
			continue
		}
		salt := make([]byte, SaltSize)
		_, _ = rand.Read(salt) // never fails (crypto/rand crashes the program instead)
		f.Set(ev, &auditv1.Protected{Value: p.Value, Salt: salt, Digest: Digest(salt, p.GetValue())})
	}
}

// Erased reports whether p's cleartext was erased (digest only).
func Erased(p *auditv1.Protected) bool { return p != nil && p.Value == nil }

// CheckDigests checks each remaining cleartext of ev against its digest. It
// returns the name of the first field that does not match (empty when all
// do) and how many values are erased (not a failure).
func CheckDigests(ev *auditv1.Event) (mismatch string, erased int) {
	for _, f := range Fields {
		p := f.Get(ev)
		switch {
		case p == nil:
		case Erased(p):
			erased++
		case !hmac.Equal(Digest(p.GetSalt(), p.GetValue()), p.GetDigest()):
			if mismatch == "" {
				mismatch = f.Name
			}
		}
	}
	return mismatch, erased
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// ContentDigest identifies what a producer sent: SHA-256 over the
// deterministic proto encoding of ev's input fields (output-only fields,
// salts and digests left out; protected values as cleartext). AppendEvents
// compares it to tell a retry (same content: DUPLICATE) from a reused id
// (EVENT_ID_CONFLICT). Call it after source_service is filled in and
// details normalized, before Protect.
func ContentDigest(ev *auditv1.Event) []byte {
	in := hashForm(ev)
	in.Sequence, in.AppendTime, in.HashVersion, in.PrevHash = 0, nil, 0, nil
	for _, f := range Fields {
		if p := f.Get(ev); p != nil {
			f.Set(in, &auditv1.Protected{Value: p.Value})
		}
	}
	b, err := deterministic.Marshal(in)
	if err != nil {
		// Marshalling a message built from validated fields cannot fail;
		// a digest of nothing would still never equal a real one.
		return nil
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// CheckEvent checks one stored event as the n-th link of the chain: its
// hash version, its sequence, its prev_hash against prev (the hash of the
// event before it; empty for sequence 1), its hash recomputed, and its
// remaining cleartexts. It returns the break, or nil, and the number of
// erased values.
func CheckEvent(ev *auditv1.Event, wantSeq uint64, prev []byte) (*auditv1.ChainBreak, int) {
	brk := func(kind auditv1.ChainBreakKind, expected, actual []byte, detail string) *auditv1.ChainBreak {
		return &auditv1.ChainBreak{Kind: kind, Sequence: ev.GetSequence(), EventId: ev.GetId(), Expected: expected, Actual: actual, Detail: detail}
	}
	switch {
	case ev.GetSequence() > wantSeq:
		return &auditv1.ChainBreak{
			Kind: auditv1.ChainBreakKind_CHAIN_BREAK_KIND_SEQUENCE_GAP, Sequence: wantSeq,
			Detail: fmt.Sprintf("sequences %d to %d are missing; the next stored event is %d", wantSeq, ev.GetSequence()-1, ev.GetSequence()),
		}, 0
	case ev.GetSequence() < wantSeq:
		return brk(auditv1.ChainBreakKind_CHAIN_BREAK_KIND_SEQUENCE_DISORDER, nil, nil,
			fmt.Sprintf("sequence %d found where %d was expected", ev.GetSequence(), wantSeq)), 0
	case ev.GetHashVersion() != HashVersion:
		return brk(auditv1.ChainBreakKind_CHAIN_BREAK_KIND_UNSUPPORTED_HASH_VERSION, nil, nil,
			fmt.Sprintf("hash_version %d is not implemented (this verifier implements %d)", ev.GetHashVersion(), HashVersion)), 0
	}
	if !bytes.Equal(ev.GetPrevHash(), prev) {
		return brk(auditv1.ChainBreakKind_CHAIN_BREAK_KIND_PREV_HASH_MISMATCH, prev, ev.GetPrevHash(),
			"prev_hash differs from the hash of the event before it"), 0
	}
	sum, err := Hash(ev)
	if err != nil {
		return brk(auditv1.ChainBreakKind_CHAIN_BREAK_KIND_RECORD_UNREADABLE, nil, nil, "the event cannot be encoded canonically"), 0
	}
	if !bytes.Equal(sum, ev.GetHash()) {
		return brk(auditv1.ChainBreakKind_CHAIN_BREAK_KIND_HASH_MISMATCH, sum, ev.GetHash(),
			"the recomputed hash differs from the stored hash: the event was edited"), 0
	}
	mismatch, erased := CheckDigests(ev)
	if mismatch != "" {
		b := brk(auditv1.ChainBreakKind_CHAIN_BREAK_KIND_DIGEST_MISMATCH, nil, nil,
			"a protected cleartext does not match its salted digest: it was edited")
		b.Field = mismatch
		return b, erased
	}
	return nil, erased
}
