// Package sso federates sign-in to upstream OpenID Connect providers: the
// connector records in etcd (client secrets sealed with the KEK), the OIDC
// connector (discovery and keys through the SSRF-safe fetcher, authorization
// code + PKCE + nonce upstream, RFC 9207 iss check, ID token verification
// with github.com/coreos/go-oidc), the registry every replica keeps by
// list-then-watch, the operator API behind the *Connector RPCs, and seeding
// connectors from a file.
package sso

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/services/token/internal/kek"
)

// Record is a connector as stored under /mcpid/token/connectors/<id>: the
// storage format, apart from the API message.
type Record struct {
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	Enabled     bool   `json:"enabled"`
	Issuer      string `json:"issuer"`
	ClientID    string `json:"client_id"`
	// Secret is the upstream client secret sealed with the KEK (purpose
	// secretPurpose, bound to the connector id); SecretFile is read at each
	// use instead when set, only where SecretFiles allows.
	Secret            *kek.Sealed   `json:"client_secret,omitempty"`
	SecretFile        string        `json:"client_secret_file,omitempty"`
	Scopes            []string      `json:"scopes,omitempty"`
	Claims            ClaimMappings `json:"claims"`
	SkipEmailVerified bool          `json:"insecure_skip_email_verified,omitempty"`
	AllowedDomains    []string      `json:"allowed_email_domains,omitempty"`
	AllowedGroups     []string      `json:"allowed_groups,omitempty"`
	HomeRealmDomains  []string      `json:"home_realm_domains,omitempty"`
	GroupsPrefix      string        `json:"groups_prefix,omitempty"`
	RoleMappings      []RoleMapping `json:"role_mappings,omitempty"`
	Created           time.Time     `json:"created"`
	Updated           time.Time     `json:"updated"`
}

// ClaimMappings names the upstream claims read (empty: the standard claim).
type ClaimMappings struct {
	Subject string `json:"subject,omitempty"`
	Email   string `json:"email,omitempty"`
	Name    string `json:"name,omitempty"`
	Groups  string `json:"groups,omitempty"`
}

// RoleMapping gives an operator role to an upstream group's members.
type RoleMapping struct {
	Group string `json:"group"`
	Role  string `json:"role"`
}

// RolesFor returns the operator roles r's mappings give to members of the
// upstream groups (names before the prefix), sorted, without repeats.
func (r *Record) RolesFor(upstreamGroups []string) []string {
	var out []string
	for _, rm := range r.RoleMappings {
		if slices.Contains(upstreamGroups, rm.Group) {
			out = append(out, rm.Role)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// secretPurpose binds sealed client secrets (KEK additional data).
const secretPurpose = "connector-client-secret"

// DefaultScopes are requested when a connector names none.
var DefaultScopes = []string{"openid", "email", "profile"}

func (r *Record) scopes() []string {
	if len(r.Scopes) == 0 {
		return DefaultScopes
	}
	return r.Scopes
}

func claimOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

var (
	idRe     = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	domainRe = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	claimRe  = regexp.MustCompile(`^[A-Za-z0-9_:./-]{1,128}$`)
)

func invalidField(field, format string, args ...any) error {
	return apierr.New(codes.InvalidArgument, tokenv1.ErrorReason_ERROR_REASON_INVALID_FIELD.String(), format, args...).
		WithMetadata("field", field)
}

// IssuerPolicy decides which issuer URLs are acceptable: https always, http
// only when the fetcher allows it (tests, development).
type IssuerPolicy struct{ AllowHTTP bool }

// validate checks everything but the secret and discovery.
func (p IssuerPolicy) validate(r *Record) error {
	if !idRe.MatchString(r.ID) {
		return invalidField("connector.connector_id", "connector_id must be 1 to 32 characters of lowercase letters, digits and '-', starting with a letter")
	}
	if n := utf8.RuneCountInString(r.DisplayName); n < 1 || n > 64 || strings.ContainsFunc(r.DisplayName, isControl) {
		return invalidField("connector.display_name", "display_name must be 1 to 64 characters without control characters")
	}
	u, err := url.Parse(r.Issuer)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
		(u.Scheme != "https" && (u.Scheme != "http" || !p.AllowHTTP)) {
		return invalidField("connector.oidc.issuer_url", "issuer_url must be an https URL without query or fragment")
	}
	if r.ClientID == "" || len(r.ClientID) > 512 || strings.ContainsFunc(r.ClientID, isControl) {
		return invalidField("connector.oidc.client_id", "client_id is required (at most 512 characters)")
	}
	if len(r.Scopes) > 0 && !slices.Contains(r.Scopes, "openid") {
		return invalidField("connector.oidc.scopes", "scopes must include openid")
	}
	for _, s := range r.Scopes {
		if s == "" || len(s) > 128 || strings.ContainsAny(s, " \"\\") || strings.ContainsFunc(s, isControl) {
			return invalidField("connector.oidc.scopes", "scope %q is not a valid scope token", s)
		}
	}
	for name, c := range map[string]string{"subject": r.Claims.Subject, "email": r.Claims.Email, "name": r.Claims.Name, "groups": r.Claims.Groups} {
		if c != "" && !claimRe.MatchString(c) {
			return invalidField("connector.oidc.claim_mappings."+name, "claim name %q is not valid", c)
		}
	}
	for field, ds := range map[string][]string{"allowed_email_domains": r.AllowedDomains, "home_realm_domains": r.HomeRealmDomains} {
		for _, d := range ds {
			if !domainRe.MatchString(d) {
				return invalidField("connector."+field, "%q is not a lowercase DNS name", d)
			}
		}
	}
	for _, g := range r.AllowedGroups {
		if g == "" || len(g) > 256 {
			return invalidField("connector.allowed_groups", "groups must be 1 to 256 characters")
		}
	}
	if len(r.GroupsPrefix) > 32 || strings.ContainsFunc(r.GroupsPrefix, isControl) {
		return invalidField("connector.groups_prefix", "groups_prefix must be at most 32 characters")
	}
	for _, m := range r.RoleMappings {
		if m.Group == "" || (m.Role != "admin" && m.Role != "auditor") {
			return invalidField("connector.role_mappings", "each role mapping needs a group and the role admin or auditor")
		}
	}
	if r.Secret != nil && r.SecretFile != "" {
		return invalidField("connector.oidc.client_secret_source", "client_secret and client_secret_file are exclusive")
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// normalize lowercases and deduplicates the domain lists.
func normalize(r *Record) {
	low := func(ss []string) []string {
		out := make([]string, 0, len(ss))
		for _, s := range ss {
			out = append(out, strings.ToLower(strings.TrimSpace(s)))
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	r.AllowedDomains = low(r.AllowedDomains)
	r.HomeRealmDomains = low(r.HomeRealmDomains)
	r.Issuer = strings.TrimSpace(r.Issuer)
}

// fromProto reads the settable fields of c (the secret is handled apart).
func fromProto(c *tokenv1.Connector) (*Record, error) {
	o := c.GetOidc()
	if o == nil {
		return nil, invalidField("connector.config", "a connector needs its protocol settings (oidc)")
	}
	r := &Record{
		ID: c.GetConnectorId(), DisplayName: c.GetDisplayName(), Enabled: c.GetEnabled(),
		Issuer: o.GetIssuerUrl(), ClientID: o.GetClientId(), Scopes: slices.Clone(o.GetScopes()),
		SecretFile: o.GetClientSecretFile(), SkipEmailVerified: o.GetInsecureSkipEmailVerified(),
		AllowedDomains: slices.Clone(c.GetAllowedEmailDomains()), AllowedGroups: slices.Clone(c.GetAllowedGroups()),
		HomeRealmDomains: slices.Clone(c.GetHomeRealmDomains()), GroupsPrefix: c.GetGroupsPrefix(),
	}
	if m := o.GetClaimMappings(); m != nil {
		r.Claims = ClaimMappings{Subject: m.GetSubject(), Email: m.GetEmail(), Name: m.GetName(), Groups: m.GetGroups()}
	}
	for _, m := range c.GetRoleMappings() {
		role := ""
		switch m.GetRole() {
		case tokenv1.OperatorRole_OPERATOR_ROLE_ADMIN:
			role = "admin"
		case tokenv1.OperatorRole_OPERATOR_ROLE_AUDITOR:
			role = "auditor"
		default:
			return nil, invalidField("connector.role_mappings", "role mapping for group %q has no role", m.GetGroup())
		}
		r.RoleMappings = append(r.RoleMappings, RoleMapping{Group: m.GetGroup(), Role: role})
	}
	return r, nil
}

// Proto returns the API message of r, without any secret.
func (r *Record) Proto(issuer string) *tokenv1.Connector {
	o := &tokenv1.OidcConnectorConfig{
		IssuerUrl: r.Issuer, ClientId: r.ClientID, HasClientSecret: r.Secret != nil,
		Scopes: slices.Clone(r.Scopes), InsecureSkipEmailVerified: r.SkipEmailVerified,
		ClaimMappings: &tokenv1.ClaimMappings{Subject: r.Claims.Subject, Email: r.Claims.Email, Name: r.Claims.Name, Groups: r.Claims.Groups},
	}
	if r.SecretFile != "" {
		o.ClientSecretSource = &tokenv1.OidcConnectorConfig_ClientSecretFile{ClientSecretFile: r.SecretFile}
	}
	c := &tokenv1.Connector{
		ConnectorId: r.ID, DisplayName: r.DisplayName, Enabled: r.Enabled,
		Config:              &tokenv1.Connector_Oidc{Oidc: o},
		AllowedEmailDomains: slices.Clone(r.AllowedDomains), AllowedGroups: slices.Clone(r.AllowedGroups),
		HomeRealmDomains: slices.Clone(r.HomeRealmDomains), GroupsPrefix: r.GroupsPrefix,
		RedirectUri: CallbackURL(issuer, r.ID),
		CreateTime:  timestamppb.New(r.Created), UpdateTime: timestamppb.New(r.Updated),
	}
	for _, m := range r.RoleMappings {
		role := tokenv1.OperatorRole_OPERATOR_ROLE_ADMIN
		if m.Role == "auditor" {
			role = tokenv1.OperatorRole_OPERATOR_ROLE_AUDITOR
		}
		c.RoleMappings = append(c.RoleMappings, &tokenv1.GroupRoleMapping{Group: m.Group, Role: role})
	}
	return c
}

// CallbackPath is the per-connector redirect path registered upstream.
func CallbackPath(id string) string { return "/oauth2/callback/" + id }

// CallbackURL is the redirect URI to register at the upstream IdP.
func CallbackURL(issuer, id string) string {
	return strings.TrimRight(issuer, "/") + CallbackPath(id)
}

func errNotFound(id string) error {
	return apierr.New(codes.NotFound, tokenv1.ErrorReason_ERROR_REASON_CONNECTOR_NOT_FOUND.String(), "no connector %q", id)
}

func errDomainTaken(domain, other string) error {
	return apierr.New(codes.AlreadyExists, tokenv1.ErrorReason_ERROR_REASON_HOME_REALM_DOMAIN_TAKEN.String(),
		"home-realm domain %q belongs to connector %q", domain, other)
}

func errDiscovery(err error) error {
	return apierr.New(codes.FailedPrecondition, tokenv1.ErrorReason_ERROR_REASON_CONNECTOR_DISCOVERY_FAILED.String(),
		"the issuer's discovery document could not be used: %s", describe(err)).WithCause(err)
}

func errSecretFile(err error) error {
	return apierr.New(codes.FailedPrecondition, tokenv1.ErrorReason_ERROR_REASON_CONNECTOR_SECRET_FILE_UNREADABLE.String(),
		"client_secret_file cannot be used: it must name a regular file of at most %d bytes in the token service's connector secrets directory (connector-secrets-dir); otherwise send client_secret",
		MaxSecretFileSize).WithCause(err)
}

// describe is a short, safe description of a discovery failure (no
// response bodies).
func describe(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return fmt.Sprintf("%q", s)
}
