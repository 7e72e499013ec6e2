// Package softstmt verifies RFC 7591 §2.3 software statements: JWTs signed
// by a publisher the installation trusts, whose claims are client metadata
// that take precedence over the plain request members.
package softstmt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/services/registration/internal/metadata"
)

// MaxSize bounds a statement (8 KiB).
const MaxSize = 8 << 10

// Errors, matched with errors.Is.
var (
	// ErrInvalid: malformed, expired, or badly signed
	// (invalid_software_statement).
	ErrInvalid = errors.New("invalid software statement")
	// ErrUnapproved: issued by an issuer or signed with a key that is not
	// trusted (unapproved_software_statement).
	ErrUnapproved = errors.New("unapproved software statement")
)

// Issuer is one trusted statement publisher.
type Issuer struct {
	Issuer string
	Keys   *jose.KeySet
}

// ParseTrust reads settings of the form "<issuer>=<path to JWKS file>".
func ParseTrust(entries []string) ([]Issuer, error) {
	var out []Issuer
	for _, e := range entries {
		iss, path, ok := strings.Cut(e, "=")
		if !ok || iss == "" || path == "" {
			return nil, fmt.Errorf("%q: want <issuer>=<jwks file>", e)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("issuer %s: %w", iss, err)
		}
		set, err := jose.ParseJWKS(b)
		if err != nil || set.Len() == 0 {
			return nil, fmt.Errorf("issuer %s: %s holds no usable public key", iss, path)
		}
		out = append(out, Issuer{Issuer: iss, Keys: set})
	}
	return out, nil
}

// Statement is a verified statement.
type Statement struct {
	Issuer string
	KeyID  string
	// Claims are the metadata members the statement sets; Present lists
	// their names (the members that override the request's).
	Claims  metadata.Input
	Present map[string]bool
	Raw     string
}

// Verifier verifies statements against the trusted issuers.
type Verifier struct {
	byIssuer map[string]*jose.Verifier
}

// New returns a verifier for the issuers; now is the clock (nil: time.Now).
func New(issuers []Issuer, now func() time.Time) (*Verifier, error) {
	v := &Verifier{byIssuer: map[string]*jose.Verifier{}}
	for _, is := range issuers {
		jv, err := jose.NewVerifier(is.Keys, jose.VerifierOptions{
			Algorithms:    []string{jose.ES256, jose.ES384, jose.ES512, jose.EdDSA, jose.RS256, jose.PS256},
			Issuer:        is.Issuer,
			AllowNoExpiry: true, // statements are long-lived; one that has exp is checked
			MaxTokenSize:  MaxSize,
			Now:           now,
		})
		if err != nil {
			return nil, err
		}
		v.byIssuer[is.Issuer] = jv
	}
	return v, nil
}

// Verify checks a statement and returns its metadata claims.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Statement, error) {
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	iss, err := unverifiedIssuer(raw)
	if err != nil {
		return nil, err
	}
	var jv *jose.Verifier
	if v != nil {
		jv = v.byIssuer[iss]
	}
	if jv == nil {
		return nil, fmt.Errorf("%w: issuer is not trusted", ErrUnapproved)
	}
	var claims map[string]json.RawMessage
	hdr, err := jv.Verify(ctx, raw, &claims)
	switch {
	case errors.Is(err, jose.ErrUnknownKey):
		return nil, fmt.Errorf("%w: signing key is not trusted", ErrUnapproved)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	payload, _ := json.Marshal(claims)
	reg, err := metadata.ParseRegistrationJSON(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: claims are not client metadata", ErrInvalid)
	}
	in, err := metadata.FromRegistration(reg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	present := map[string]bool{}
	for k := range claims {
		present[k] = true
	}
	return &Statement{Issuer: iss, KeyID: hdr.KeyID, Claims: in, Present: present, Raw: raw}, nil
}

// unverifiedIssuer reads "iss" to pick the verifier; nothing else of the
// payload is trusted before the signature is checked.
func unverifiedIssuer(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("%w: not a compact JWS", ErrInvalid)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("%w: payload encoding", ErrInvalid)
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(b, &c); err != nil || c.Iss == "" {
		return "", fmt.Errorf("%w: no iss claim", ErrInvalid)
	}
	return c.Iss, nil
}

// PinsRedirectURIs reports whether the statement fixes the redirect URIs
// (it has a redirect_uris claim, which then wins over the request's).
func (s *Statement) PinsRedirectURIs() bool { return s.Present["redirect_uris"] }

// Merge returns in with every member the statement sets replaced by the
// statement's value (RFC 7591 §2.3: its claims take precedence).
func (s *Statement) Merge(in metadata.Input) metadata.Input {
	c := s.Claims
	set := func(name string, apply func()) {
		if s.Present[name] {
			apply()
		}
	}
	set("redirect_uris", func() { in.RedirectURIs = c.RedirectURIs })
	set("token_endpoint_auth_method", func() { in.TokenEndpointAuthMethod = c.TokenEndpointAuthMethod })
	set("grant_types", func() { in.GrantTypes = c.GrantTypes })
	set("response_types", func() { in.ResponseTypes = c.ResponseTypes })
	set("application_type", func() { in.ApplicationType = c.ApplicationType })
	set("client_name", func() { in.ClientName = c.ClientName })
	set("client_uri", func() { in.ClientURI = c.ClientURI })
	set("logo_uri", func() { in.LogoURI = c.LogoURI })
	set("scope", func() { in.Scope = c.Scope })
	set("contacts", func() { in.Contacts = c.Contacts })
	set("tos_uri", func() { in.TOSURI = c.TOSURI })
	set("policy_uri", func() { in.PolicyURI = c.PolicyURI })
	set("jwks_uri", func() { in.JWKSURI = c.JWKSURI })
	set("jwks", func() { in.JWKS = c.JWKS })
	set("software_id", func() { in.SoftwareID = c.SoftwareID })
	set("software_version", func() { in.SoftwareVersion = c.SoftwareVersion })
	return in
}
