package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/mcpid/mcpid/services/registration/internal/metadata"
	"github.com/mcpid/mcpid/services/registration/internal/secret"
)

// Sources of a client (ClientSource in the contract), as stored.
const (
	SourceDCR           = "dcr"
	SourceCIMD          = "cimd"
	SourceOperator      = "operator"
	SourcePreRegistered = "pre_registered"
)

// Verification statuses and methods, as stored.
const (
	StatusVerified   = "verified"
	StatusUnverified = "unverified"
	StatusSuspended  = "suspended"

	MethodOperator          = "operator"
	MethodSoftwareStatement = "software_statement"
	MethodTrustedCIMDDomain = "trusted_cimd_domain"
	MethodConfiguration     = "configuration"
)

// Client is the stored record of one client. It is the storage form, kept
// apart from the API messages; it holds digests of secrets, never secrets.
type Client struct {
	ClientID     string            `json:"client_id"`
	Source       string            `json:"source"`
	Metadata     metadata.Metadata `json:"metadata"`
	Verification Verification      `json:"verification"`
	// AllowedResources is the client_credentials allow-list.
	AllowedResources []AllowedResource `json:"allowed_resources,omitempty"`
	ResourceServer   string            `json:"resource_server,omitempty"`
	// ReservedAudiences are the urn:mcpid:* audiences besides the one
	// ResourceServer implies (only the built-in mcpid CLI client has one).
	ReservedAudiences []string `json:"reserved_audiences,omitempty"`
	// ClientCredentialsPermitted records that the client may hold the
	// client_credentials grant (operator client, or DCR with an initial
	// access token or software statement that allowed it).
	ClientCredentialsPermitted bool `json:"client_credentials_permitted,omitempty"`

	Secret                *Secret            `json:"secret,omitempty"`
	RegistrationTokenHash secret.Digest      `json:"registration_token_hash,omitempty"`
	SoftwareStatement     *SoftwareStatement `json:"software_statement,omitempty"`
	CIMD                  *CIMDDocument      `json:"cimd,omitempty"`

	RegistrationSourceAddress string `json:"registration_source_address,omitempty"`
	InitialAccessTokenID      string `json:"initial_access_token_id,omitempty"`
	// ConsentEpoch is the etcd revision of the write that created the
	// client or last changed its redirect URIs. A write that does either
	// stores 0, meaning "the revision of this write"; reads resolve it.
	ConsentEpoch int64     `json:"consent_epoch,omitempty"`
	CreatedBy    string    `json:"created_by"`
	CreateTime   time.Time `json:"create_time"`
	UpdateTime   time.Time `json:"update_time"`
	// ExpireTime is when the client expires; zero means never. IdleExpiry
	// says it moves forward with use (DCR and CIMD clients).
	ExpireTime   time.Time `json:"expire_time,omitzero"`
	IdleExpiry   bool      `json:"idle_expiry,omitempty"`
	LastUsedTime time.Time `json:"last_used_time,omitzero"`
	// LeaseID is the etcd lease of the client's expiry marker; 0 without
	// expiry. Maintained by the store.
	LeaseID int64 `json:"lease_id,omitempty"`

	// Version counts the writes of the record; the store uses it to tell
	// whether the record changed since it was read.
	Version int64 `json:"version"`
	// Revision is the etcd ModRevision the record was read at (the etag).
	// Not stored.
	Revision int64 `json:"-"`
}

// Verification is the client's verification status with who, when, why.
type Verification struct {
	Status     string    `json:"status"`
	Method     string    `json:"method,omitempty"`
	UpdatedBy  string    `json:"updated_by"`
	UpdateTime time.Time `json:"update_time"`
	Reason     string    `json:"reason,omitempty"`
}

// AllowedResource is one client_credentials allow-list entry.
type AllowedResource struct {
	Resource string   `json:"resource"`
	Scopes   []string `json:"scopes,omitempty"`
}

// Secret holds the digests of the client secret and, during a rotation
// grace period, of the previous one.
type Secret struct {
	Hash               secret.Digest `json:"hash,omitempty"`
	CreateTime         time.Time     `json:"create_time"`
	ExpireTime         time.Time     `json:"expire_time,omitzero"`
	PreviousHash       secret.Digest `json:"previous_hash,omitempty"`
	PreviousExpireTime time.Time     `json:"previous_expire_time,omitzero"`
}

// SoftwareStatement is the software statement the client registered with.
type SoftwareStatement struct {
	Issuer           string `json:"issuer"`
	KeyID            string `json:"key_id"`
	PinsRedirectURIs bool   `json:"pins_redirect_uris"`
	Statement        string `json:"statement"`
}

// CIMDDocument is the fetch state of a CIMD client's document.
type CIMDDocument struct {
	FetchTime      time.Time `json:"fetch_time"`
	StaleTime      time.Time `json:"stale_time"`
	DocumentSHA256 string    `json:"document_sha256"`
}

// Clone returns a deep copy.
func (c *Client) Clone() *Client {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("store: client record does not encode: %v", err)) // plain data: cannot happen
	}
	out := &Client{}
	if err := json.Unmarshal(b, out); err != nil {
		panic(fmt.Sprintf("store: client record does not decode: %v", err))
	}
	out.Revision = c.Revision
	return out
}

// Expired reports whether the client's expiry has passed at now.
func (c *Client) Expired(now time.Time) bool {
	return !c.ExpireTime.IsZero() && !now.Before(c.ExpireTime)
}

// IAT is a stored initial access token (never its value).
type IAT struct {
	ID           string            `json:"id"`
	Note         string            `json:"note,omitempty"`
	MaxUses      int32             `json:"max_uses"`
	UseCount     int32             `json:"use_count"`
	Resources    []AllowedResource `json:"client_credentials_resources,omitempty"`
	CreatedBy    string            `json:"created_by"`
	CreateTime   time.Time         `json:"create_time"`
	ExpireTime   time.Time         `json:"expire_time"`
	LastUsedTime time.Time         `json:"last_used_time,omitzero"`
	RevokeTime   time.Time         `json:"revoke_time,omitzero"`
	RevokedBy    string            `json:"revoked_by,omitempty"`
	Hash         secret.Digest     `json:"hash"`

	// Revision is the etcd ModRevision the record was read at. Not stored.
	Revision int64 `json:"-"`
}

// Revocation is a pending request to the token service to revoke a
// client's grants and consents.
type Revocation struct {
	ClientID string    `json:"client_id"`
	Reason   string    `json:"reason"`
	Time     time.Time `json:"time"`
	// Key is the record's etcd key. Not stored.
	Key string `json:"-"`
}
