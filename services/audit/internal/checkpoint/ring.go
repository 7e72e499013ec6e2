package checkpoint

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/services/audit/internal/store"
)

// Ring holds the active signing key and every key that verifies
// checkpoints. It is immutable and safe for concurrent use.
type Ring struct {
	issuer   string
	active   *jose.SigningKey
	keys     []PublicKey // active first
	verifier *jose.Verifier
}

// NewRing builds a ring from the active key and retired verification keys
// (a retired key equal to the active one is dropped).
func NewRing(issuer string, active *jose.SigningKey, retired []PublicKey) (*Ring, error) {
	if active == nil {
		return nil, errors.New("checkpoint: an active signing key is required")
	}
	ap := active.PublicKey()
	act, err := newPublicKey(ap.KeyID, ap.Key, true)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: active key: %w", err)
	}
	keys := []PublicKey{act}
	seen := map[string]bool{act.KeyID: true}
	for _, k := range retired {
		if seen[k.KeyID] {
			continue
		}
		seen[k.KeyID] = true
		keys = append(keys, k)
	}
	set := struct {
		Keys []map[string]any `json:"keys"`
	}{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.JWK)
	}
	doc, err := json.Marshal(set)
	if err != nil {
		return nil, err
	}
	ks, err := jose.ParseJWKS(doc)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: verification keys: %w", err)
	}
	v, err := jose.NewVerifier(ks, jose.VerifierOptions{Type: Type, AllowNoExpiry: true, Algorithms: []string{jose.ES256, jose.EdDSA}})
	if err != nil {
		return nil, err
	}
	return &Ring{issuer: issuer, active: active, keys: keys, verifier: v}, nil
}

// Issuer is the `iss` of new checkpoints.
func (r *Ring) Issuer() string { return r.issuer }

// ActiveKeyID is the kid of the signing key.
func (r *Ring) ActiveKeyID() string { return r.active.KeyID() }

// Keys returns every verification key, the active one first.
func (r *Ring) Keys() []PublicKey { return append([]PublicKey(nil), r.keys...) }

// Claims are a checkpoint's JWT claims.
type Claims struct {
	jose.RegisteredClaims
	Sequence    uint64 `json:"sequence"`
	HeadHash    string `json:"head_hash"`
	HeadEventID string `json:"head_event_id"`
}

// Sign signs "the event at head.Sequence has hash head.Hash" at now
// (truncated to whole seconds, the `iat`).
func (r *Ring) Sign(head store.Head, now time.Time) (store.CheckpointRecord, error) {
	if head.Sequence == 0 {
		return store.CheckpointRecord{}, errors.New("checkpoint: nothing to sign on an empty chain")
	}
	at := now.UTC().Truncate(time.Second)
	c := Claims{
		RegisteredClaims: jose.RegisteredClaims{Issuer: r.issuer, IssuedAt: jose.NewNumericDate(at)},
		Sequence:         head.Sequence,
		HeadHash:         base64.RawURLEncoding.EncodeToString(head.Hash),
		HeadEventID:      head.EventID,
	}
	jws, err := jose.Sign(r.active, c, Type)
	if err != nil {
		return store.CheckpointRecord{}, err
	}
	return store.CheckpointRecord{
		Sequence: head.Sequence, HeadHash: head.Hash, HeadEventID: head.EventID, SignTime: at,
		Issuer: r.issuer, KeyID: r.active.KeyID(), Algorithm: r.active.Algorithm(), JWS: jws,
	}, nil
}

// Errors of Parse and Verify.
var (
	// ErrMalformed: not a compact JWS with the checkpoint header and claims.
	ErrMalformed = errors.New("checkpoint: malformed")
	// ErrUnknownKey: the kid is not a configured checkpoint key.
	ErrUnknownKey = errors.New("checkpoint: unknown key")
	// ErrInvalid: the signature, type, algorithm or time claims do not verify.
	ErrInvalid = errors.New("checkpoint: invalid signature")
)

// Parsed is a checkpoint read from its JWS, not yet verified.
type Parsed struct {
	KeyID     string
	Algorithm string
	Claims    Claims
	HeadHash  []byte
}

// Parse reads a checkpoint JWS without verifying it (ErrMalformed).
func Parse(jws string) (Parsed, error) {
	parts := strings.Split(jws, ".")
	if len(jws) > 4096 || len(parts) != 3 {
		return Parsed{}, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return Parsed{}, fmt.Errorf("%w: header encoding", ErrMalformed)
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr.Alg == "" || hdr.Kid == "" {
		return Parsed{}, fmt.Errorf("%w: header must hold alg and kid", ErrMalformed)
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Parsed{}, fmt.Errorf("%w: payload encoding", ErrMalformed)
	}
	var c Claims
	if err := json.Unmarshal(pb, &c); err != nil {
		return Parsed{}, fmt.Errorf("%w: claims: %w", ErrMalformed, err)
	}
	hh, err := base64.RawURLEncoding.DecodeString(c.HeadHash)
	if err != nil || len(hh) != 32 || c.Sequence == 0 || c.HeadEventID == "" || c.IssuedAt == nil {
		return Parsed{}, fmt.Errorf("%w: claims sequence, head_hash, head_event_id and iat are required", ErrMalformed)
	}
	return Parsed{KeyID: hdr.Kid, Algorithm: hdr.Alg, Claims: c, HeadHash: hh}, nil
}

// Verify parses and verifies a checkpoint JWS against the ring's keys.
func (r *Ring) Verify(ctx context.Context, jws string) (Parsed, error) {
	p, err := Parse(jws)
	if err != nil {
		return Parsed{}, err
	}
	if _, err := r.verifier.Verify(ctx, jws, nil); err != nil {
		if errors.Is(err, jose.ErrUnknownKey) {
			return p, fmt.Errorf("%w: %q", ErrUnknownKey, p.KeyID)
		}
		return p, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return p, nil
}
