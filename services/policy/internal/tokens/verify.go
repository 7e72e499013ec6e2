// Package tokens verifies the access tokens Check is asked about, and the
// bearer tokens callers authenticate with, locally: lib/jose against a key
// source held in memory (RemoteKeys for the token service's JWKS), the
// revocation set, and a bounded cache of verified tokens keyed by their
// hash, so a token is verified once and then only re-checked for time,
// audience and revocation.
package tokens

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/jose"
)

// AccessTokenType is the JWT "typ" of RFC 9068 access tokens.
const AccessTokenType = jose.AccessTokenType

// Defaults.
const (
	DefaultClockSkew   = 30 * time.Second
	DefaultCacheSize   = 10_000
	DefaultMaxCacheAge = 5 * time.Minute
)

// Token is a verified access token.
type Token struct {
	Issuer   string
	Subject  string
	ClientID string
	JTI      string
	GrantID  string
	Audience []string
	// Scopes is the `scope` claim split on spaces, sorted, without repeats.
	Scopes []string
	// Groups is the `groups` claim.
	Groups []string
	// IssuedAt is `iat`; Expiry is `exp`; NotBefore is `nbf` (zero if
	// absent).
	IssuedAt, Expiry, NotBefore time.Time
	// Claims are every claim, for conditions (JSON numbers are doubles).
	Claims *structpb.Struct
}

// Failure is why a token is not acceptable.
type Failure struct {
	Reason policyv1.DecisionReason
	// Step is the evaluation step that failed.
	Step policyv1.EvaluationStepKind
	// Detail is for operators and logs; it never contains the token.
	Detail string
	// Token holds the claims when the signature verified but a claim check
	// failed (Explain evaluates the rest with them); nil otherwise.
	Token *Token
}

// Revocations is the token service's revocation set as this replica knows
// it. Implementations answer from memory and are safe for concurrent use.
type Revocations interface {
	// Ready reports whether the set is current: synced, and not silent for
	// longer than the configured bound. Checks are NOT_READY otherwise.
	Ready() bool
	// Revoked reports whether t is revoked (by grant, token, user, client
	// or resource).
	Revoked(t *Token) bool
}

// NoRevocations is the revocation source until the token service's feed is
// wired in: always ready, nothing revoked.
type NoRevocations struct{}

// Ready implements Revocations.
func (NoRevocations) Ready() bool { return true }

// Revoked implements Revocations.
func (NoRevocations) Revoked(*Token) bool { return false }

// Config configures a Verifier.
type Config struct {
	// Keys provides the verification keys; it must answer from memory.
	Keys jose.KeySource
	// Issuer is the required `iss`.
	Issuer string
	// ClockSkew is the leeway for exp, nbf and iat; 0 means
	// DefaultClockSkew.
	ClockSkew time.Duration
	// CacheSize bounds the verified-token cache; 0 means DefaultCacheSize,
	// negative disables it.
	CacheSize int
	// MaxCacheAge bounds how long a verified token is trusted without
	// verifying its signature again (so a key withdrawn from the JWKS stops
	// working within it); 0 means DefaultMaxCacheAge.
	MaxCacheAge time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Verifier verifies access tokens for a resource. Safe for concurrent use.
type Verifier struct {
	jv     *jose.Verifier
	cfg    Config
	cache  *cache[*Token]
	issuer string
}

// NewVerifier returns a Verifier.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.MaxCacheAge <= 0 {
		cfg.MaxCacheAge = DefaultMaxCacheAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Issuer == "" {
		return nil, errors.New("tokens: an issuer is required")
	}
	jv, err := jose.NewVerifier(cfg.Keys, jose.AccessTokenOptions(cfg.Issuer, cfg.ClockSkew, cfg.Now))
	if err != nil {
		return nil, err
	}
	v := &Verifier{jv: jv, cfg: cfg, issuer: cfg.Issuer}
	if cfg.CacheSize > 0 {
		v.cache = newCache[*Token](cfg.CacheSize)
	}
	return v, nil
}

// Skew returns the clock skew allowed.
func (v *Verifier) Skew() time.Duration { return v.cfg.ClockSkew }

// Verify checks raw for the canonical resource at the current time: a
// cached verification when there is one (time and audience checked again),
// else signature, typ, iss, required claims, exp/nbf/iat and aud. It never
// touches the network. Revocation is the caller's step.
func (v *Verifier) Verify(ctx context.Context, raw, resource string) (*Token, *Failure) {
	now := v.cfg.Now()
	var h [32]byte
	if v.cache != nil {
		h = hashToken(raw)
		if t, ok := v.cache.get(h, now); ok {
			if f := v.checkCached(t, resource, now); f != nil {
				return nil, f
			}
			return t, nil
		}
	}
	t, f := v.verify(ctx, v.jv, raw, resource)
	if f != nil {
		return nil, f
	}
	if v.cache != nil {
		v.cache.put(h, t, minTime(t.Expiry.Add(v.cfg.ClockSkew), now.Add(v.cfg.MaxCacheAge)), now)
	}
	return t, nil
}

// VerifyAt is Verify at another instant, without the cache, returning the
// claims with a claim failure (Explain).
func (v *Verifier) VerifyAt(ctx context.Context, raw, resource string, at time.Time) (*Token, *Failure) {
	jv, err := jose.NewVerifier(v.cfg.Keys, jose.AccessTokenOptions(v.cfg.Issuer, v.cfg.ClockSkew, func() time.Time { return at }))
	if err != nil {
		return nil, &Failure{Reason: policyv1.DecisionReason_DECISION_REASON_NOT_READY, Step: policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_SIGNATURE, Detail: err.Error()}
	}
	return v.verify(ctx, jv, raw, resource)
}

func (v *Verifier) checkCached(t *Token, resource string, now time.Time) *Failure {
	if !now.Before(t.Expiry.Add(v.cfg.ClockSkew)) {
		return &Failure{
			Reason: policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED,
			Step:   policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_CLAIMS,
			Detail: fmt.Sprintf("exp %s has passed", t.Expiry.UTC().Format(time.RFC3339)),
		}
	}
	return checkAudience(t, resource)
}

func checkAudience(t *Token, resource string) *Failure {
	if len(t.Audience) != 1 || t.Audience[0] != resource {
		return &Failure{
			Reason: policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH,
			Step:   policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_AUDIENCE,
			Detail: fmt.Sprintf("aud %q is not exactly %s", t.Audience, resource),
			Token:  t,
		}
	}
	return nil
}

func (v *Verifier) verify(ctx context.Context, jv *jose.Verifier, raw, resource string) (*Token, *Failure) {
	if raw == "" {
		return nil, invalid(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_SIGNATURE, "no access token")
	}
	var claims map[string]any
	_, err := jv.WithAudience(resource).Verify(ctx, raw, &claims)
	if err != nil {
		return nil, v.failure(raw, resource, err)
	}
	t, detail := parseClaims(claims)
	if t == nil {
		return nil, invalid(policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_CLAIMS, detail)
	}
	if f := checkAudience(t, resource); f != nil {
		return nil, f
	}
	return t, nil
}

func invalid(step policyv1.EvaluationStepKind, detail string) *Failure {
	return &Failure{Reason: policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID, Step: step, Detail: detail}
}

// failure maps a jose error to the failed step. For errors raised after the
// signature verified (time, issuer, audience), the claims are decoded for
// Explain.
func (v *Verifier) failure(raw, resource string, err error) *Failure {
	sig := policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_SIGNATURE
	claimsStep := policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_CLAIMS
	switch {
	case errors.Is(err, jose.ErrKeySetUnavailable):
		return &Failure{Reason: policyv1.DecisionReason_DECISION_REASON_NOT_READY, Step: sig, Detail: err.Error()}
	case errors.Is(err, jose.ErrWrongType):
		return invalid(claimsStep, err.Error())
	case errors.Is(err, jose.ErrExpired), errors.Is(err, jose.ErrNotYetValid),
		errors.Is(err, jose.ErrIssuerMismatch), errors.Is(err, jose.ErrAudienceMismatch):
		// The signature verified: these are checked after it.
		claims, _ := unverifiedPayload(raw)
		t, _ := parseClaims(claims)
		f := &Failure{Step: claimsStep, Detail: err.Error(), Token: t}
		switch {
		case errors.Is(err, jose.ErrExpired):
			f.Reason = policyv1.DecisionReason_DECISION_REASON_TOKEN_EXPIRED
			if _, has := claims["exp"]; !has {
				f.Reason, f.Detail = policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID, "required claim exp is missing"
			}
		case errors.Is(err, jose.ErrNotYetValid):
			f.Reason = policyv1.DecisionReason_DECISION_REASON_TOKEN_NOT_YET_VALID
		case errors.Is(err, jose.ErrIssuerMismatch):
			f.Reason = policyv1.DecisionReason_DECISION_REASON_TOKEN_INVALID
		default:
			f.Reason = policyv1.DecisionReason_DECISION_REASON_AUDIENCE_MISMATCH
			f.Step = policyv1.EvaluationStepKind_EVALUATION_STEP_KIND_TOKEN_AUDIENCE
			if t != nil {
				f.Detail = fmt.Sprintf("aud %q is not exactly %s", t.Audience, resource)
			}
		}
		return f
	default:
		// Malformed, too large, alg none/HMAC/not allowed, refused headers,
		// unknown kid, bad signature.
		return invalid(sig, err.Error())
	}
}

// unverifiedPayload decodes the payload of a compact JWS whose signature was
// already verified.
func unverifiedPayload(raw string) (map[string]any, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// parseClaims extracts the claims decisions use and checks the ones RFC
// 9068 requires (iss, exp and aud are checked by jose). It returns nil and
// why when a claim is missing or of the wrong type.
func parseClaims(m map[string]any) (*Token, string) {
	if m == nil {
		return nil, "no claims"
	}
	t := &Token{}
	var ok bool
	for _, c := range []struct {
		name string
		dst  *string
		req  bool
	}{
		{"iss", &t.Issuer, true},
		{"sub", &t.Subject, true},
		{"client_id", &t.ClientID, true},
		{"jti", &t.JTI, true},
		{"grant_id", &t.GrantID, false},
	} {
		v, has := m[c.name]
		if !has {
			if c.req {
				return nil, "required claim " + c.name + " is missing"
			}
			continue
		}
		if *c.dst, ok = v.(string); !ok || (c.req && *c.dst == "") {
			return nil, "claim " + c.name + " must be a non-empty string"
		}
	}
	switch aud := m["aud"].(type) {
	case string:
		t.Audience = []string{aud}
	case []any:
		for _, a := range aud {
			s, ok := a.(string)
			if !ok {
				return nil, "claim aud must hold strings"
			}
			t.Audience = append(t.Audience, s)
		}
	default:
		return nil, "required claim aud is missing"
	}
	var err error
	if t.IssuedAt, err = numericDate(m, "iat", true); err != nil {
		return nil, err.Error()
	}
	if t.Expiry, err = numericDate(m, "exp", true); err != nil {
		return nil, err.Error()
	}
	if t.NotBefore, err = numericDate(m, "nbf", false); err != nil {
		return nil, err.Error()
	}
	if v, has := m["scope"]; has {
		s, ok := v.(string)
		if !ok {
			return nil, "claim scope must be a string"
		}
		t.Scopes = splitScopes(s)
	}
	if v, has := m["groups"]; has {
		list, ok := v.([]any)
		if !ok {
			return nil, "claim groups must be a list of strings"
		}
		for _, g := range list {
			s, ok := g.(string)
			if !ok {
				return nil, "claim groups must be a list of strings"
			}
			t.Groups = append(t.Groups, s)
		}
	}
	claims, err := structpb.NewStruct(m)
	if err != nil {
		return nil, "claims cannot be represented: " + err.Error()
	}
	t.Claims = claims
	return t, ""
}

func numericDate(m map[string]any, name string, required bool) (time.Time, error) {
	v, has := m[name]
	if !has {
		if required {
			return time.Time{}, fmt.Errorf("required claim %s is missing", name)
		}
		return time.Time{}, nil
	}
	f, ok := v.(float64)
	if !ok || f < 0 || f > 253402300799 {
		return time.Time{}, fmt.Errorf("claim %s must be a NumericDate", name)
	}
	return time.Unix(int64(f), 0), nil
}

func splitScopes(s string) []string {
	out := strings.Fields(s)
	sort.Strings(out)
	// Remove repeats in place.
	w := 0
	for i, x := range out {
		if i == 0 || x != out[w-1] {
			out[w] = x
			w++
		}
	}
	return out[:w]
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// CacheLen returns the number of cached verified tokens (tests, metrics).
func (v *Verifier) CacheLen() int {
	if v.cache == nil {
		return 0
	}
	return v.cache.len()
}
