package jose

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
)

// Defaults for VerifierOptions.
const (
	DefaultClockSkew    = 60 * time.Second
	DefaultMaxTokenSize = 16 << 10
)

// defaultAlgorithms is the allowlist used when VerifierOptions.Algorithms is
// empty. Unexported so that no package can widen every default verifier.
var defaultAlgorithms = []string{ES256, EdDSA}

// verifiable lists every algorithm a caller may put in an allowlist. HMAC and
// "none" are absent on purpose: with keys from a JWKS, an HMAC "secret" would
// be a public key anyone can read (the classic algorithm-confusion attack).
var verifiable = map[string]bool{
	ES256: true, ES384: true, ES512: true, EdDSA: true,
	RS256: true, RS384: true, RS512: true, PS256: true, PS384: true, PS512: true,
}

// refusedHeaders are header parameters that let a token bring or point to its
// own key, or change how it is processed. Keys come only from the KeySource.
var refusedHeaders = []string{"crit", "b64", "jku", "x5u", "jwk", "x5c"}

// VerifierOptions configures a Verifier. The zero value verifies ES256 and
// EdDSA tokens with a 60 s clock skew, requires "exp", and checks neither
// "typ", "iss" nor "aud": callers should set every check that applies.
type VerifierOptions struct {
	// Algorithms is the "alg" allowlist; default ES256 and EdDSA. Add RS256
	// only for keys that need it. "none" and HS256/384/512 are refused here
	// and in every token.
	Algorithms []string
	// Type, if set, is the required "typ" header, e.g. "at+jwt". The token's
	// typ is compared case-insensitively and may carry the "application/"
	// prefix (RFC 7515 §4.1.9, RFC 8725 §3.11).
	Type string
	// Issuer, if set, must equal the "iss" claim exactly.
	Issuer string
	// Audience, if set, must be (one of) the "aud" claim, compared exactly.
	Audience string
	// ClockSkew is the leeway for exp, nbf and iat; 0 means
	// DefaultClockSkew, a negative value means none.
	ClockSkew time.Duration
	// AllowNoExpiry accepts tokens without "exp" (software statements may
	// have none). Tokens that have one are always checked.
	AllowNoExpiry bool
	// MaxTokenSize is the largest token accepted, in bytes; 0 means
	// DefaultMaxTokenSize.
	MaxTokenSize int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Verifier verifies compact JWS tokens against a KeySource. It is immutable
// and safe for concurrent use.
type Verifier struct {
	keys    KeySource
	opts    VerifierOptions
	allowed map[string]bool
}

// Header is the verified token's protected header, as far as callers need it.
type Header struct {
	Algorithm string
	KeyID     string
	Type      string
}

// NewVerifier returns a Verifier taking keys from keys. It fails if the
// allowlist names "none", an HMAC algorithm or an algorithm this package does
// not implement, so a bad configuration stops start-up instead of weakening
// verification.
func NewVerifier(keys KeySource, opts VerifierOptions) (*Verifier, error) {
	if keys == nil {
		return nil, errors.New("jose: NewVerifier needs a KeySource")
	}
	algs := opts.Algorithms
	if len(algs) == 0 {
		algs = defaultAlgorithms
	}
	allowed := make(map[string]bool, len(algs))
	for _, a := range algs {
		if !verifiable[a] {
			return nil, fmt.Errorf("%w: %q cannot be allowed; only ES256/384/512, EdDSA, RS256/384/512 and PS256/384/512 can", ErrAlgNotAllowed, a)
		}
		allowed[a] = true
	}
	if opts.ClockSkew == 0 {
		opts.ClockSkew = DefaultClockSkew
	} else if opts.ClockSkew < 0 {
		opts.ClockSkew = 0
	}
	if opts.MaxTokenSize <= 0 {
		opts.MaxTokenSize = DefaultMaxTokenSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Algorithms = append([]string(nil), algs...)
	return &Verifier{keys: keys, opts: opts, allowed: allowed}, nil
}

// WithAudience returns a copy of v that requires aud as the audience. The
// policy service uses it to check each token against the resource asked about.
func (v *Verifier) WithAudience(aud string) *Verifier {
	c := *v
	c.opts.Audience = aud
	return &c
}

// Verify checks token and, if claims is non-nil, unmarshals its payload into
// claims (a pointer to a struct, typically embedding RegisteredClaims, or to
// a map). In order it checks: size; compact form; header (alg in the
// allowlist and never none/HMAC, no refused parameters, typ); the key named
// by kid and that it fits alg; the signature; then exp, nbf, iat, iss and aud.
// Errors wrap the package's sentinel errors.
func (v *Verifier) Verify(ctx context.Context, token string, claims any) (*Header, error) {
	if len(token) > v.opts.MaxTokenSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrTooLarge, len(token), v.opts.MaxTokenSize)
	}
	rawHeader, _, ok := strings.Cut(token, ".")
	if !ok || strings.Count(token, ".") != 2 {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	hdr, err := v.checkHeader(rawHeader)
	if err != nil {
		return nil, err
	}

	key, err := v.keys.LookupKey(ctx, hdr.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != "" && key.Algorithm != hdr.Algorithm {
		return nil, fmt.Errorf("%w: token alg %s, key %q is for %s", ErrAlgNotAllowed, hdr.Algorithm, key.KeyID, key.Algorithm)
	}
	if !keyFits(hdr.Algorithm, key.Key) {
		return nil, fmt.Errorf("%w: key %q (%T) cannot verify %s", ErrAlgNotAllowed, key.KeyID, key.Key, hdr.Algorithm)
	}

	jws, err := gojose.ParseSignedCompact(token, []gojose.SignatureAlgorithm{gojose.SignatureAlgorithm(hdr.Algorithm)})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	payload, err := jws.Verify(key.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: kid %q: %w", ErrInvalidSignature, hdr.KeyID, err)
	}

	if !isJSONObject(payload) {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	var rc RegisteredClaims
	if err := json.Unmarshal(payload, &rc); err != nil {
		return nil, fmt.Errorf("%w: registered claims: %w", ErrMalformed, err)
	}
	if err := v.checkClaims(&rc); err != nil {
		return nil, err
	}
	if claims != nil {
		if err := json.Unmarshal(payload, claims); err != nil {
			return nil, fmt.Errorf("%w: claims: %w", ErrMalformed, err)
		}
	}
	return hdr, nil
}

// checkHeader decodes and vets the protected header before any key is looked
// up, so a token cannot make us fetch keys or run a verifier it may not use.
func (v *Verifier) checkHeader(raw string) (*Header, error) {
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: header encoding: %w", ErrMalformed, err)
	}
	params, err := decodeObject(b)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	var h Header
	if err := stringParam(params, "alg", &h.Algorithm); err != nil {
		return nil, err
	}
	switch {
	case h.Algorithm == "":
		return nil, fmt.Errorf("%w: header has no alg", ErrMalformed)
	case strings.EqualFold(h.Algorithm, "none"):
		return nil, fmt.Errorf("%w: unsigned token (alg %q)", ErrAlgNotAllowed, h.Algorithm)
	case len(h.Algorithm) >= 2 && strings.EqualFold(h.Algorithm[:2], "HS"):
		return nil, fmt.Errorf("%w: HMAC (alg %q) is never accepted", ErrAlgNotAllowed, h.Algorithm)
	case !v.allowed[h.Algorithm]:
		return nil, fmt.Errorf("%w: alg %q not in allowlist %v", ErrAlgNotAllowed, h.Algorithm, v.opts.Algorithms)
	}
	for _, name := range refusedHeaders {
		if _, ok := params[name]; ok {
			return nil, fmt.Errorf("%w: %q", ErrUnsupportedHeader, name)
		}
	}
	if err := stringParam(params, "kid", &h.KeyID); err != nil {
		return nil, err
	}
	if err := stringParam(params, "typ", &h.Type); err != nil {
		return nil, err
	}
	if v.opts.Type != "" && !typeMatches(h.Type, v.opts.Type) {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrWrongType, h.Type, v.opts.Type)
	}
	return &h, nil
}

// checkClaims applies the time, issuer and audience rules.
func (v *Verifier) checkClaims(rc *RegisteredClaims) error {
	now := v.opts.Now()
	skew := v.opts.ClockSkew
	switch {
	case rc.Expiry != nil:
		// RFC 7519 §4.1.4: the current time must be before exp.
		if !now.Before(rc.Expiry.Time().Add(skew)) {
			return fmt.Errorf("%w: exp %s, now %s", ErrExpired, rc.Expiry.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	case !v.opts.AllowNoExpiry:
		return fmt.Errorf("%w: token has no exp", ErrExpired)
	}
	if rc.NotBefore != nil && now.Add(skew).Before(rc.NotBefore.Time()) {
		return fmt.Errorf("%w: nbf %s, now %s", ErrNotYetValid, rc.NotBefore.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if rc.IssuedAt != nil && now.Add(skew).Before(rc.IssuedAt.Time()) {
		return fmt.Errorf("%w: iat %s is in the future, now %s", ErrNotYetValid, rc.IssuedAt.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if v.opts.Issuer != "" && rc.Issuer != v.opts.Issuer {
		return fmt.Errorf("%w: iss %q, want %q", ErrIssuerMismatch, rc.Issuer, v.opts.Issuer)
	}
	if v.opts.Audience != "" && !rc.Audience.Contains(v.opts.Audience) {
		return fmt.Errorf("%w: aud %q does not contain %q", ErrAudienceMismatch, []string(rc.Audience), v.opts.Audience)
	}
	return nil
}

// typeMatches compares a "typ" value with the expected one the way RFC 7515
// §4.1.9 asks: media types are case-insensitive and "application/" may be
// omitted.
func typeMatches(got, want string) bool {
	return got != "" && strings.EqualFold(trimApplication(got), trimApplication(want))
}

func trimApplication(t string) string {
	const prefix = "application/"
	if len(t) > len(prefix) && strings.EqualFold(t[:len(prefix)], prefix) {
		return t[len(prefix):]
	}
	return t
}

// decodeObject decodes a JSON object into its members, refusing duplicate
// member names: RFC 7515 §4 lets a parser either reject them or take the last,
// and go-jose and this package must not disagree about which "alg" or "kid"
// a header holds.
func decodeObject(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	params := make(map[string]json.RawMessage, 4)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, ok := tok.(string)
		if !ok {
			return nil, errors.New("not a JSON object")
		}
		if _, dup := params[name]; dup {
			return nil, fmt.Errorf("duplicate member %q", name)
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, err
		}
		params[name] = val
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after JSON object")
	}
	return params, nil
}

// stringParam reads an optional string header parameter into dst.
func stringParam(params map[string]json.RawMessage, name string, dst *string) error {
	raw, ok := params[name]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%w: header %q must be a string", ErrMalformed, name)
	}
	return nil
}
