package store

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/mcpid/mcpid/services/token/internal/kek"
)

// The records below are the storage format (JSON in etcd), kept apart from
// the API messages so either can change without the other. Secrets are never
// stored in clear: codes, refresh tokens and session ids only as SHA-256
// hashes (the etcd key or a field), passwords as argon2id hashes, private
// keys sealed with the KEK.

// User is a built-in directory or federated user.
type User struct {
	ID           string     `json:"id"`
	Username     string     `json:"username,omitempty"`
	Email        string     `json:"email,omitempty"`
	DisplayName  string     `json:"display_name,omitempty"`
	Roles        []string   `json:"roles,omitempty"`
	Disabled     bool       `json:"disabled,omitempty"`
	PasswordHash string     `json:"password_hash,omitempty"`
	Identities   []Identity `json:"identities,omitempty"`
	Groups       []string   `json:"groups,omitempty"`
	// FailedLogins counts consecutive failed password logins; LockedUntil is
	// set when it reaches the lockout threshold.
	FailedLogins int       `json:"failed_logins,omitempty"`
	LockedUntil  time.Time `json:"locked_until,omitzero"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
	LastLogin    time.Time `json:"last_login,omitzero"`
}

// Identity links a user to an upstream account (identity connectors).
type Identity struct {
	ConnectorID string    `json:"connector_id"`
	Subject     string    `json:"subject"`
	Email       string    `json:"email,omitempty"`
	LastLogin   time.Time `json:"last_login,omitzero"`
	// Roles are the operator roles the connector's role mappings gave at
	// this identity's last sign-in; the next sign-in replaces them. They
	// are kept apart from User.Roles (what operators assign), so neither
	// ever overwrites the other.
	Roles []string `json:"roles,omitempty"`
	// Groups are the upstream groups (names before the connector's prefix)
	// asserted at the last sign-in: the input of the role mappings, kept so
	// that a change of the connector's mappings can recompute Roles without
	// a sign-in. A record from before they were kept has none: its Roles
	// no longer count (nothing to check them against) until the next
	// sign-in, and are cleared at the next mapping change.
	Groups []string `json:"groups,omitempty"`
}

// EffectiveRoles are the user's operator roles as stored: those operators
// assigned and those its linked identities' connectors gave at their last
// sign-in, sorted, without repeats.
func (u *User) EffectiveRoles() []string {
	return u.RolesNow(func(id Identity) []string { return id.Roles })
}

// RolesNow are the operator roles that count now: those operators assigned
// and, for each linked identity, what current returns (what its connector
// gives now: none while the connector is disabled or deleted), sorted,
// without repeats. Token minting and the admin-audience checks read these.
func (u *User) RolesNow(current func(Identity) []string) []string {
	out := slices.Clone(u.Roles)
	for _, id := range u.Identities {
		out = append(out, current(id)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Session is a signed-in browser. The key is the hash of the cookie value.
type Session struct {
	UserID      string    `json:"user_id"`
	AuthTime    time.Time `json:"auth_time"`
	ConnectorID string    `json:"connector_id,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires"`
}

// AuthRequest is a validated authorization request waiting for sign-in and
// consent. The browser continues it by its id (the key is the id's hash);
// every step checks that the same browser (BrowserHash, the hash of the
// flow cookie) presents it, and the form posts carry CSRF.
type AuthRequest struct {
	ClientID      string   `json:"client_id"`
	RedirectURI   string   `json:"redirect_uri"`
	State         string   `json:"state,omitempty"`
	CodeChallenge string   `json:"code_challenge"`
	Resource      string   `json:"resource"`
	Scopes        []string `json:"scopes,omitempty"`
	Prompt        string   `json:"prompt,omitempty"`
	BrowserHash   string   `json:"browser_hash"`
	// CSRF is the token the current step's form must post back; it changes
	// at sign-in.
	CSRF string `json:"csrf"`
	// Set at sign-in.
	UserID      string    `json:"user_id,omitempty"`
	AuthTime    time.Time `json:"auth_time,omitzero"`
	ConnectorID string    `json:"connector_id,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires"`
}

// Code is an issued authorization code. The key is the code's hash. GrantID
// is assigned at issuance so that a replay can revoke what the code
// produced.
type Code struct {
	ClientID      string    `json:"client_id"`
	RedirectURI   string    `json:"redirect_uri"`
	CodeChallenge string    `json:"code_challenge"`
	Resource      string    `json:"resource"`
	Scopes        []string  `json:"scopes,omitempty"`
	UserID        string    `json:"user_id"`
	AuthTime      time.Time `json:"auth_time"`
	ConnectorID   string    `json:"connector_id,omitempty"`
	GrantID       string    `json:"grant_id"`
	Created       time.Time `json:"created"`
	Expires       time.Time `json:"expires"`
}

// UsedCode remembers a redeemed code (by hash) for replay detection.
type UsedCode struct {
	GrantID  string    `json:"grant_id"`
	ClientID string    `json:"client_id"`
	Used     time.Time `json:"used"`
}

// Grant types as stored.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantClientCredentials = "client_credentials"
)

// Grant is one authorization and its refresh token family.
type Grant struct {
	ID               string    `json:"id"`
	Type             string    `json:"type"`
	UserID           string    `json:"user_id,omitempty"`
	ClientID         string    `json:"client_id"`
	Resource         string    `json:"resource"`
	Scopes           []string  `json:"scopes,omitempty"`
	ClientAuthMethod string    `json:"client_auth_method,omitempty"`
	ConnectorID      string    `json:"connector_id,omitempty"`
	AuthTime         time.Time `json:"auth_time,omitzero"`
	Created          time.Time `json:"created"`
	LastRefresh      time.Time `json:"last_refresh,omitzero"`
	LastUse          time.Time `json:"last_use,omitzero"`
	// Expires is the absolute end of the grant; zero = never
	// (client_credentials). The record's lease ends it in etcd.
	Expires time.Time     `json:"expires,omitzero"`
	Refresh *RefreshState `json:"refresh,omitempty"`
}

// RefreshState is the refresh token family of a grant: the hash of the live
// token and of recently rotated ones (newest first), so that presenting a
// rotated token is recognised as reuse.
type RefreshState struct {
	Hash      string    `json:"hash"`
	Rotated   []string  `json:"rotated,omitempty"`
	RotatedAt time.Time `json:"rotated_at,omitzero"`
}

// MaxRotatedHashes bounds RefreshState.Rotated. A token rotated longer ago
// than that many rotations is refused without revoking the grant (it cannot
// be told from a guess).
const MaxRotatedHashes = 32

// Consent is a remembered approval of (user, client, resource).
type Consent struct {
	UserID   string   `json:"user_id"`
	ClientID string   `json:"client_id"`
	Resource string   `json:"resource"`
	Scopes   []string `json:"scopes,omitempty"`
	// Epoch is the client's consent epoch (registration) when given; a
	// consent of another epoch does not count.
	Epoch   int64     `json:"epoch"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Signing key states as stored.
const (
	KeyPending  = "pending"
	KeyActive   = "active"
	KeyRetiring = "retiring"
	KeyRetired  = "retired"
)

// SigningKey is an access token signing key: its public JWK in clear (so
// every replica can publish it) and its private JWK sealed with the KEK.
type SigningKey struct {
	Kid      string          `json:"kid"`
	Alg      string          `json:"alg"`
	State    string          `json:"state"`
	Public   json.RawMessage `json:"public_jwk"`
	Private  kek.Sealed      `json:"private"`
	Created  time.Time       `json:"created"`
	Activate time.Time       `json:"activate,omitzero"`
	Retire   time.Time       `json:"retire,omitzero"`
	Remove   time.Time       `json:"remove,omitzero"`
}

// Revocation kinds as stored (and in key paths).
const (
	RevokeGrant    = "grant"
	RevokeToken    = "token"
	RevokeUser     = "user"
	RevokeClient   = "client"
	RevokeResource = "resource"
)

// Revocation is one entry of the revocation set.
type Revocation struct {
	Kind         string    `json:"kind"`
	ID           string    `json:"id"`
	Resource     string    `json:"resource,omitempty"`
	IssuedBefore time.Time `json:"issued_before,omitzero"`
	Expires      time.Time `json:"expires"`
}
