// Package cimd resolves Client ID Metadata Documents: a client_id that is an
// https URL names a JSON document describing the client, which this package
// fetches through lib/fetch's SSRF-safe fetcher and validates.
//
// The trusted-domain policy runs first, before any DNS lookup: a host is
// trusted (its clients may be verified), allowed (fetched, clients stay
// unverified) or rejected (never fetched).
package cimd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"time"

	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/services/registration/internal/metadata"
)

// MaxURLLen bounds a CIMD client_id.
const MaxURLLen = 2048

// Trust is what the trusted-domain policy says about a host.
type Trust int

// Trust levels.
const (
	Rejected Trust = iota
	Allowed
	Trusted
)

// Kind classifies a resolution failure (the contract's CIMD_* reasons).
type Kind int

// Kinds of failure.
const (
	// KindNotTrusted: the host is rejected by the trusted-domain policy.
	KindNotTrusted Kind = iota + 1
	// KindRefused: the fetcher refused the URL before or during connection
	// (not https, no path, forbidden address, redirect).
	KindRefused
	// KindFailed: the fetch failed (timeout, status, connection); transient.
	KindFailed
	// KindInvalid: the document is invalid.
	KindInvalid
)

// Error is a resolution failure; Message is safe to show.
type Error struct {
	Kind    Kind
	Message string
	cause   error
}

func (e *Error) Error() string {
	if e.cause != nil {
		return e.Message + ": " + e.cause.Error()
	}
	return e.Message
}

// Unwrap returns the fetch error, if any.
func (e *Error) Unwrap() error { return e.cause }

// Config configures a Resolver.
type Config struct {
	// TrustedDomains are host patterns ("example.com", "*.example.com")
	// whose documents may verify a client.
	TrustedDomains []string
	// AllowedDomains are host patterns whose documents are fetched but
	// leave the client unverified; "*" allows every host.
	AllowedDomains []string
	// RedirectHosts is the redirect host allowlist documents must obey.
	RedirectHosts metadata.HostPatterns
	// MinCache and MaxCache bound how long a document is used before it is
	// fetched again (from its HTTP cache headers).
	MinCache, MaxCache time.Duration
	// Fetch carries the fetcher's address policy and test hooks (Resolver,
	// DialContext, RootCAs, AllowPrivate, AllowedPorts, Timeout). Its host
	// policy, body limit and cache bounds are set here.
	Fetch fetch.Config
}

// Resolver fetches and validates documents.
type Resolver struct {
	trusted  metadata.HostPatterns
	allowed  metadata.HostPatterns
	anyHost  bool
	redirect metadata.HostPatterns
	minCache time.Duration
	fetcher  *fetch.Fetcher
}

// New returns a Resolver; errors name the bad setting.
func New(cfg Config) (*Resolver, error) {
	r := &Resolver{redirect: cfg.RedirectHosts, minCache: cfg.MinCache}
	var allowed []string
	for _, p := range cfg.AllowedDomains {
		if strings.TrimSpace(p) == "*" {
			r.anyHost = true
			continue
		}
		allowed = append(allowed, p)
	}
	var err error
	if r.trusted, err = metadata.ParseHostPatterns(cfg.TrustedDomains); err != nil {
		return nil, fmt.Errorf("trusted domains: %w", err)
	}
	if r.allowed, err = metadata.ParseHostPatterns(allowed); err != nil {
		return nil, fmt.Errorf("allowed domains: %w", err)
	}
	fc := cfg.Fetch
	fc.AllowedHosts, fc.AllowAnyHost = nil, false
	fc.HostPolicy = func(host string) bool { return r.Trust(host) != Rejected }
	fc.MaxBodyBytes = metadata.MaxCIMDBytes
	fc.MinTTL, fc.MaxTTL = cfg.MinCache, cfg.MaxCache
	if r.fetcher, err = fetch.New(fc); err != nil {
		return nil, err
	}
	return r, nil
}

// Close releases idle connections.
func (r *Resolver) Close() { r.fetcher.Close() }

// Trust applies the trusted-domain policy to a host.
func (r *Resolver) Trust(host string) Trust {
	host = strings.ToLower(host)
	switch {
	case r.trusted.Match(host):
		return Trusted
	case r.anyHost || r.allowed.Match(host):
		return Allowed
	}
	return Rejected
}

// IsURL reports whether a client_id is meant as a CIMD URL (as opposed to
// an opaque registered id, which never contains "://").
func IsURL(clientID string) bool {
	return strings.Contains(clientID, "://")
}

// CheckURL checks the form of a CIMD client_id and returns its host: https,
// a host, a path other than "/", no userinfo, no fragment, no dot segments.
func CheckURL(clientID string) (string, error) {
	refuse := func(msg string) (string, error) {
		return "", &Error{Kind: KindRefused, Message: "client_id URL " + msg}
	}
	if len(clientID) > MaxURLLen {
		return refuse("is too long")
	}
	u, err := url.Parse(clientID)
	switch {
	case err != nil:
		return refuse("is malformed")
	case u.Scheme != "https" || !strings.HasPrefix(clientID, "https://"):
		return refuse("must use https")
	case u.User != nil:
		return refuse("must not contain userinfo")
	case strings.Contains(clientID, "#"):
		return refuse("must not contain a fragment")
	case u.Hostname() == "":
		return refuse("has no host")
	case u.Path == "" || u.Path == "/":
		return refuse("must have a path")
	}
	for seg := range strings.SplitSeq(u.Path, "/") {
		if seg == "." || seg == ".." {
			return refuse("must not contain dot segments")
		}
	}
	return strings.ToLower(u.Hostname()), nil
}

// Document is a fetched, validated document.
type Document struct {
	Metadata  *metadata.Metadata
	SHA256    string
	FetchTime time.Time
	// StaleTime is when to fetch again: the HTTP freshness, clamped.
	StaleTime time.Time
	Trust     Trust
}

// Verified reports whether the document verifies its client: a trusted
// domain, and at least one redirect URI that is not local (a domain cannot
// vouch for whatever program listens on a loopback port).
func (d *Document) Verified() bool {
	return d.Trust == Trusted && !d.Metadata.LocalRedirectURIsOnly()
}

// Fetch checks the policy, fetches the document at clientID and validates
// it. Errors are *Error.
func (r *Resolver) Fetch(ctx context.Context, clientID string) (*Document, error) {
	host, err := CheckURL(clientID)
	if err != nil {
		return nil, err
	}
	trust := r.Trust(host)
	if trust == Rejected {
		return nil, &Error{Kind: KindNotTrusted, Message: "the client_id's host is not trusted for metadata documents"}
	}
	resp, err := r.fetcher.Get(ctx, clientID, "application/json")
	if err != nil {
		return nil, classify(err)
	}
	if !isJSON(resp.ContentType) {
		return nil, &Error{Kind: KindInvalid, Message: "the metadata document is not served as application/json"}
	}
	md, err := metadata.ParseCIMD(clientID, resp.Body, metadata.Policy{RedirectHosts: r.redirect})
	if err != nil {
		return nil, &Error{Kind: KindInvalid, Message: "invalid metadata document: " + err.Error()}
	}
	sum := sha256.Sum256(resp.Body)
	stale := resp.Expires
	if stale.IsZero() {
		stale = resp.FetchedAt.Add(r.minCache)
	}
	return &Document{Metadata: md, SHA256: hex.EncodeToString(sum[:]), FetchTime: resp.FetchedAt, StaleTime: stale, Trust: trust}, nil
}

func classify(err error) *Error {
	switch {
	case errors.Is(err, fetch.ErrTooLarge):
		return &Error{Kind: KindInvalid, Message: fmt.Sprintf("the metadata document is larger than %d bytes", metadata.MaxCIMDBytes), cause: err}
	case errors.Is(err, fetch.ErrInvalidURL), errors.Is(err, fetch.ErrSchemeNotAllowed),
		errors.Is(err, fetch.ErrHostNotTrusted), errors.Is(err, fetch.ErrForbiddenAddress):
		return &Error{Kind: KindRefused, Message: "fetching the metadata document was refused (address policy)", cause: err}
	case errors.Is(err, fetch.ErrRedirect):
		return &Error{Kind: KindRefused, Message: "the metadata document URL redirects; redirects are not followed", cause: err}
	}
	return &Error{Kind: KindFailed, Message: "the metadata document could not be fetched", cause: err}
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}
