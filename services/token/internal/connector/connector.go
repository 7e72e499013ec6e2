// Package connector is the plug point for sign-in through upstream identity
// providers (SSO for employees, federation for partners). The login page
// lists the enabled connectors beside the built-in directory; choosing one
// hands the pending authorization request to the connector, whose callback
// returns an Identity, which the directory links to a user (by connector and
// upstream subject) before the flow continues exactly as after a password
// sign-in: same session rotation, same consent.
//
// The OIDC connectors (package sso) implement Connector; this package holds
// the contract, the failures a connector reports, and a static registry.
package connector

import (
	"context"
	"errors"
	"net/http"
)

// Identity is what an upstream IdP asserted about a user.
type Identity struct {
	// ConnectorID names the connector.
	ConnectorID string
	// Subject is the stable upstream user id (with ConnectorID, the link).
	Subject string
	// Email and EmailVerified as asserted; Name is the display name.
	Email         string
	EmailVerified bool
	Name          string
	// Groups are the upstream groups with the connector's prefix applied.
	Groups []string
	// UpstreamGroups are the groups as the upstream named them (no
	// prefix): the role mappings' input, kept with the user's identity so
	// that a change of the mappings can be applied without a sign-in.
	UpstreamGroups []string
	// Roles are the operator roles the connector's group mappings give.
	Roles []string
}

// RoleMapper is implemented by connectors whose group mappings give
// operator roles: RolesFor returns the roles the connector's current
// mappings give to members of the upstream groups.
type RoleMapper interface {
	RolesFor(upstreamGroups []string) []string
}

// Flow identifies the pending authorization request a sign-in belongs to.
// Connectors bind their upstream state to it and hand it back at the
// callback; the flow continues from the stored request, never from URL
// parameters.
type Flow struct {
	// RequestID is the pending authorization request's id.
	RequestID string
	// BrowserHash binds the flow to the browser that started it.
	BrowserHash string
	// LoginHint is an email the user typed (home-realm discovery), if any.
	LoginHint string
}

// Connector is one upstream identity provider.
type Connector interface {
	// ID is the connector id (the callback path is
	// /oauth2/callback/<ID>).
	ID() string
	// DisplayName is shown on the login page ("Sign in with ...").
	DisplayName() string
	// Begin starts an upstream sign-in for flow and returns the URL to send
	// the browser to.
	Begin(ctx context.Context, flow Flow) (string, error)
	// Complete handles the upstream's redirect to the callback path and
	// returns the flow it belongs to and the verified identity. Errors are
	// shown on an error page; nothing is signed in. A *Failure says what
	// went wrong in words for the user and a reason for the audit trail;
	// the Flow is returned with it when the state was valid.
	Complete(ctx context.Context, r *http.Request) (Flow, Identity, error)
	// FormTargets are the origins the browser is sent to when the login
	// form starts this connector (the upstream authorization endpoint), for
	// the page's Content-Security-Policy form-action. Empty while the
	// upstream's discovery document is not known.
	FormTargets(ctx context.Context) []string
}

// Failure reasons (the audit event's reason, stable strings).
const (
	ReasonStateMismatch   = "state_mismatch"
	ReasonUpstreamDenied  = "upstream_denied"
	ReasonUpstreamError   = "upstream_error"
	ReasonUnavailable     = "idp_unavailable"
	ReasonIssuerMismatch  = "issuer_mismatch"
	ReasonIDTokenInvalid  = "id_token_invalid"
	ReasonNonceMismatch   = "nonce_mismatch"
	ReasonEmailUnverified = "email_not_verified"
	ReasonDomainNotAllow  = "email_domain_not_allowed"
	ReasonGroupNotAllowed = "group_not_allowed"
	ReasonUserDisabled    = "user_disabled"
	ReasonUnknown         = "unknown_connector"
)

// Failure is an upstream sign-in that did not produce an identity.
type Failure struct {
	// Reason is one of the Reason constants.
	Reason string
	// Message is shown to the user; it never carries upstream text (an
	// IdP's error_description is attacker-influenced).
	Message string
	// Subject is the upstream subject when known (audit).
	Subject string
	// Err is the cause, for the logs.
	Err error
}

func (f *Failure) Error() string {
	if f.Err != nil {
		return "connector: " + f.Reason + ": " + f.Err.Error()
	}
	return "connector: " + f.Reason
}

func (f *Failure) Unwrap() error { return f.Err }

// AsFailure returns err's *Failure, if any.
func AsFailure(err error) (*Failure, bool) {
	var f *Failure
	ok := errors.As(err, &f)
	return f, ok
}

// Registry lists the enabled connectors. Implementations follow
// configuration changes (etcd watch) without restart.
type Registry interface {
	// Enabled returns the connectors offered at sign-in, in display order.
	Enabled() []Connector
	// Get returns an enabled connector by id.
	Get(id string) (Connector, bool)
	// ForEmail returns the connector whose home-realm domains include the
	// email's domain.
	ForEmail(email string) (Connector, bool)
	// PasswordLogin reports whether the built-in directory's username and
	// password form is offered (an operator may turn it off when every
	// user signs in through SSO).
	PasswordLogin() bool
}

// Static is a fixed registry (empty by default: built-in directory only).
type Static []Connector

// Enabled implements Registry.
func (s Static) Enabled() []Connector { return s }

// Get implements Registry.
func (s Static) Get(id string) (Connector, bool) {
	for _, c := range s {
		if c.ID() == id {
			return c, true
		}
	}
	return nil, false
}

// ForEmail implements Registry; a static registry has no home realms.
func (s Static) ForEmail(string) (Connector, bool) { return nil, false }

// PasswordLogin implements Registry: a static registry keeps the built-in
// directory on.
func (s Static) PasswordLogin() bool { return true }
