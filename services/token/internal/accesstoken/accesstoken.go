// Package accesstoken mints and verifies the RFC 9068 JWT access tokens of
// the token service. Minting is pure computation (sign with the active key):
// issuing a token writes nothing anywhere.
package accesstoken

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mcpid/mcpid/lib/jose"
)

// Type is the JWS "typ" of access tokens (RFC 9068 section 2.1).
const Type = "at+jwt"

// Claims are the claims of an access token (RFC 9068 section 2.2 plus the
// mcpid extensions grant_id, groups, roles, resource, client_verified and
// client_application_type).
type Claims struct {
	jose.RegisteredClaims
	ClientID string `json:"client_id"`
	// Scope is space-delimited and never contains offline_access; omitted
	// when no scope was granted.
	Scope    string   `json:"scope,omitempty"`
	GrantID  string   `json:"grant_id,omitempty"`
	AuthTime int64    `json:"auth_time,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	// Roles are the user's operator roles, only in urn:mcpid:admin tokens.
	Roles []string `json:"roles,omitempty"`
	// Resource binds an urn:mcpid:policy token to the MCP server's resource.
	Resource string `json:"resource,omitempty"`
	// ClientVerified is the client's verification status at issuance (true
	// only for VERIFIED); the policy service reads it for client.verified
	// and require_verified_client. Always present, so a reader never has
	// to guess what an absent claim means. The registration service revokes
	// the client's grants (a CLIENT watermark) whenever the client loses
	// VERIFIED, so a stale true dies with its token.
	ClientVerified bool `json:"client_verified"`
	// ClientApplicationType is the client's application_type ("web" or
	// "native"); omitted when unknown.
	ClientApplicationType string `json:"client_application_type,omitempty"`
}

// Signer returns the key that signs; keyring.Ring satisfies it.
type Signer interface {
	Signer() (*jose.SigningKey, error)
}

// Minter signs access tokens.
type Minter struct {
	issuer string
	keys   Signer
	now    func() time.Time
}

// NewMinter returns a minter for issuer.
func NewMinter(issuer string, keys Signer, now func() time.Time) *Minter {
	if now == nil {
		now = time.Now
	}
	return &Minter{issuer: issuer, keys: keys, now: now}
}

// Spec is what a token is about.
type Spec struct {
	Subject  string
	Audience string
	ClientID string
	Scopes   []string
	GrantID  string
	AuthTime time.Time
	Groups   []string
	Roles    []string
	Resource string
	TTL      time.Duration
	// ClientVerified and ClientApplicationType describe the client as the
	// registration service reported it at issuance.
	ClientVerified        bool
	ClientApplicationType string
}

// Minted is a signed token with its identifying claims.
type Minted struct {
	Token   string
	JTI     string
	Issued  time.Time
	Expires time.Time
}

// Mint signs a new access token.
func (m *Minter) Mint(s Spec) (Minted, error) {
	key, err := m.keys.Signer()
	if err != nil {
		return Minted{}, err
	}
	jti, err := NewJTI()
	if err != nil {
		return Minted{}, err
	}
	now := m.now().Truncate(time.Second)
	exp := now.Add(s.TTL)
	c := Claims{
		RegisteredClaims: jose.RegisteredClaims{
			Issuer: m.issuer, Subject: s.Subject, Audience: jose.Audience{s.Audience},
			IssuedAt: jose.NewNumericDate(now), NotBefore: jose.NewNumericDate(now), Expiry: jose.NewNumericDate(exp),
			ID: jti,
		},
		ClientID: s.ClientID,
		Scope:    strings.Join(s.Scopes, " "),
		GrantID:  s.GrantID,
		Groups:   s.Groups,
		Roles:    s.Roles,
		Resource: s.Resource,

		ClientVerified:        s.ClientVerified,
		ClientApplicationType: s.ClientApplicationType,
	}
	if !s.AuthTime.IsZero() {
		c.AuthTime = s.AuthTime.Unix()
	}
	tok, err := jose.Sign(key, c, Type)
	if err != nil {
		return Minted{}, err
	}
	return Minted{Token: tok, JTI: jti, Issued: now, Expires: exp}, nil
}

// NewJTI returns a random token id (128 bits, base64url).
func NewJTI() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("accesstoken: jti: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Verifier checks tokens this service issued: signature with a published
// key (never "none" or HMAC), typ at+jwt, issuer, time. Revocation and
// audience are the caller's business.
type Verifier struct {
	jv *jose.Verifier
}

// NewVerifier returns a verifier over keys.
func NewVerifier(issuer string, keys jose.KeySource, now func() time.Time) (*Verifier, error) {
	jv, err := jose.NewVerifier(keys, jose.VerifierOptions{
		Algorithms: []string{jose.ES256, jose.EdDSA},
		Type:       Type,
		Issuer:     issuer,
		ClockSkew:  -1, // our own clock: no skew
		Now:        now,
	})
	if err != nil {
		return nil, err
	}
	return &Verifier{jv: jv}, nil
}

// Verify checks token and returns its claims.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	var c Claims
	if _, err := v.jv.Verify(ctx, token, &c); err != nil {
		return nil, err
	}
	if len(c.Audience) != 1 || c.ID == "" || c.ClientID == "" || c.IssuedAt == nil || c.Expiry == nil {
		return nil, errors.New("accesstoken: token lacks a required claim")
	}
	return &c, nil
}

// LooksLikeJWT reports whether s has the shape of a compact JWS.
func LooksLikeJWT(s string) bool { return strings.Count(s, ".") == 2 }
