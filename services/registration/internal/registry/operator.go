package registry

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/resource"
	"github.com/mcpid/mcpid/services/registration/internal/metadata"
	"github.com/mcpid/mcpid/services/registration/internal/secret"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// Operator API limits.
const (
	maxAllowedResources = 100
	maxScopesPerRes     = 100
	maxScopeLen         = 200
	maxReasonLen        = 1024
	maxGrace            = 30 * 24 * time.Hour
	minSecretLifetime   = time.Hour
	maxSecretLifetime   = 2 * 365 * 24 * time.Hour
	maxPageSize         = 1000
	// maxExpiry bounds expire_time: it becomes an etcd lease, and etcd
	// refuses leases longer than about 285 years.
	maxExpiry       = 100 * 365 * 24 * time.Hour
	defaultPageSize = 100
	// maxFilterScan bounds the records one filtered List call examines, so
	// a rare filter cannot turn a call into a scan of every client: the
	// page may come back short, with a token to continue.
	maxFilterScan = 10 * maxPageSize
)

var operatorClientID = regexp.MustCompile(`^[A-Za-z0-9._~-]{3,128}$`)

// CreateClient creates an operator client.
func (s *Service) CreateClient(ctx context.Context, c Caller, req *registrationv1.CreateClientRequest) (*registrationv1.Client, string, error) {
	id := req.GetClientId()
	if id == "" {
		id = secret.RandomID(dcrClientIDBytes)
	} else if !operatorClientID.MatchString(id) {
		return nil, "", fieldErr("client_id", "3 to 128 characters from [A-Za-z0-9._~-]")
	}
	if req.GetMetadata() == nil {
		return nil, "", fieldErr("metadata", "required")
	}
	md, err := s.validateOperatorMetadata(req.GetMetadata())
	if err != nil {
		return nil, "", err
	}
	allowed, err := allowedResources(req.GetAllowedResources())
	if err != nil {
		return nil, "", err
	}
	rs, err := resourceServer(req.GetResourceServer())
	if err != nil {
		return nil, "", err
	}
	if err := machineRules(md, allowed, rs, true); err != nil {
		return nil, "", err
	}
	now := s.Now()
	var expire time.Time
	if req.GetExpireTime() != nil {
		if err := req.GetExpireTime().CheckValid(); err != nil {
			return nil, "", fieldErr("expire_time", "invalid timestamp")
		}
		expire = req.GetExpireTime().AsTime()
		if !expire.After(now) || expire.Sub(now) > maxExpiry {
			return nil, "", fieldErr("expire_time", "must be in the future, within 100 years")
		}
	}
	lifetime, err := secretLifetime(req.GetSecretLifetime(), "secret_lifetime")
	if err != nil {
		return nil, "", err
	}
	if err := s.checkJWKSURI(ctx, md, ""); err != nil {
		return nil, "", metadataErrFromOAuth(err)
	}
	if err := s.checkCap(ctx); err != nil {
		return nil, "", err
	}
	who := c.Who()
	rec := &store.Client{
		ClientID:                   id,
		Source:                     store.SourceOperator,
		Metadata:                   *md,
		Verification:               store.Verification{Status: store.StatusVerified, Method: store.MethodOperator, UpdatedBy: who, UpdateTime: now, Reason: "created by an operator"},
		AllowedResources:           allowed,
		ResourceServer:             rs,
		ClientCredentialsPermitted: md.Confidential(),
		CreatedBy:                  who,
		CreateTime:                 now,
		UpdateTime:                 now,
		ExpireTime:                 expire,
	}
	var clientSecret string
	if md.UsesSecret() {
		clientSecret = secret.Generate()
		rec.Secret = s.newSecret(clientSecret, now, lifetime)
	}
	ops, err := s.outboxOps(ctx, c.event(auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED, c.actor(""), id, "", registeredDetails(rec)))
	if err != nil {
		return nil, "", err
	}
	if _, err := s.Store.CreateClient(ctx, rec, store.CreateOptions{Extra: ops}); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil, "", mcpidErr(codes.AlreadyExists, rExists, "client %q already exists", id)
		}
		return nil, "", err
	}
	return s.clientView(rec), clientSecret, nil
}

func (s *Service) validateOperatorMetadata(m *registrationv1.ClientMetadata) (*metadata.Metadata, error) {
	in, err := metadata.FromClientMetadata(m)
	if err != nil {
		return nil, metadataErr(err)
	}
	md, err := metadata.Validate(in, metadata.Policy{RedirectHosts: s.cfg.RedirectHosts})
	if err != nil {
		return nil, metadataErr(err)
	}
	return md, nil
}

// metadataErrFromOAuth turns the jwks_uri check's RFC error into the
// operator API's.
func metadataErrFromOAuth(err error) error {
	if err == nil {
		return nil
	}
	return mcpidErr(codes.InvalidArgument, rMetadata, "jwks_uri: no usable signature key could be fetched from it")
}

// machineRules: client_credentials, an allow-list or a resource server
// identity need a confidential client; the allow-list and identity need the
// client_credentials grant.
func machineRules(md *metadata.Metadata, allowed []store.AllowedResource, rs string, permitted bool) error {
	cc := md.HasGrant(metadata.GrantClientCredentials)
	switch {
	case (cc || len(allowed) > 0 || rs != "") && !md.Confidential():
		return mcpidErr(codes.FailedPrecondition, rCCNotPermitted, "client_credentials, allowed_resources and resource_server need a confidential client")
	case cc && !permitted:
		return mcpidErr(codes.FailedPrecondition, rCCNotPermitted, "this client may not use client_credentials")
	case (len(allowed) > 0 || rs != "") && !cc:
		return mcpidErr(codes.FailedPrecondition, rCCNotPermitted, "allowed_resources and resource_server need the client_credentials grant type")
	}
	return nil
}

// allowedResources validates a client_credentials allow-list.
func allowedResources(in []*registrationv1.AllowedResource) ([]store.AllowedResource, error) {
	if len(in) > maxAllowedResources {
		return nil, fieldErr("allowed_resources", "at most %d entries", maxAllowedResources)
	}
	out := make([]store.AllowedResource, 0, len(in))
	seen := map[string]bool{}
	for _, r := range in {
		res, err := canonicalResource(r.GetResource(), "allowed_resources.resource")
		if err != nil {
			return nil, err
		}
		if seen[res] {
			return nil, fieldErr("allowed_resources", "%q listed twice", clip(res))
		}
		seen[res] = true
		if len(r.GetScopes()) > maxScopesPerRes {
			return nil, fieldErr("allowed_resources.scopes", "at most %d scopes per resource", maxScopesPerRes)
		}
		var scopes []string
		for _, sc := range r.GetScopes() {
			if principal.IsReservedScope(sc) {
				return nil, mcpidErr(codes.InvalidArgument, rReservedScope, "scope %q is reserved", clip(sc))
			}
			if sc == "" || len(sc) > maxScopeLen || strings.ContainsAny(sc, " \"\\") || !printableASCII(sc) {
				return nil, fieldErr("allowed_resources.scopes", "%q is not a valid scope", clip(sc))
			}
			if !slices.Contains(scopes, sc) {
				scopes = append(scopes, sc)
			}
		}
		out = append(out, store.AllowedResource{Resource: res, Scopes: scopes})
	}
	return out, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// canonicalResource requires a resource URI already in canonical form, and
// never a reserved audience.
func canonicalResource(raw, field string) (string, error) {
	if principal.IsReservedAudience(raw) {
		return "", mcpidErr(codes.InvalidArgument, rReservedAudience, "%s: %q is a reserved audience", field, clip(raw))
	}
	c, err := resource.Canonicalize(raw)
	if err != nil || c != raw {
		return "", mcpidErr(codes.InvalidArgument, rInvalidResource, "%s: %q is not a canonical http(s) resource URI", field, clip(raw))
	}
	return c, nil
}

func resourceServer(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	return canonicalResource(raw, "resource_server")
}

func secretLifetime(d *durationpb.Duration, field string) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fieldErr(field, "invalid duration")
	}
	v := d.AsDuration()
	if v < minSecretLifetime || v > maxSecretLifetime {
		return 0, fieldErr(field, "must be between 1 hour and 2 years")
	}
	return v, nil
}

// GetClient returns a client as stored.
func (s *Service) GetClient(ctx context.Context, id string) (*registrationv1.Client, error) {
	if id == "" {
		return nil, fieldErr("client_id", "required")
	}
	rec, err := s.Store.GetClient(ctx, id)
	if err != nil {
		return nil, storeErr(err, id)
	}
	if rec.Expired(s.Now()) {
		return nil, storeErr(store.ErrNotFound, id)
	}
	return s.clientView(rec), nil
}

// ListClients lists clients with filters. The page token wraps the store's
// with the filters it was issued for.
func (s *Service) ListClients(ctx context.Context, req *registrationv1.ListClientsRequest) ([]*registrationv1.Client, string, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, "", fieldErr("page_size", "must not be negative")
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	filter := strconv.Itoa(int(req.GetSource())) + "." + strconv.Itoa(int(req.GetVerificationStatus()))
	token := ""
	if t := req.GetPageToken(); t != "" {
		f, inner, ok := strings.Cut(t, "~")
		if !ok || f != filter || inner == "" {
			return nil, "", mcpidErr(codes.InvalidArgument, rPageToken, "page_token is invalid or was issued for other filters")
		}
		token = inner
	}
	now := s.Now()
	var out []*registrationv1.Client
	scanned := 0
	for {
		// Ask for exactly what is missing, so that every record read is
		// either returned or skipped: the store's token then resumes
		// right after it.
		recs, next, err := s.Store.ListClients(ctx, size-len(out), token)
		if errors.Is(err, store.ErrInvalidPageToken) {
			return nil, "", mcpidErr(codes.InvalidArgument, rPageToken, "page_token is invalid or expired")
		}
		if err != nil {
			return nil, "", err
		}
		scanned += len(recs)
		for _, rec := range recs {
			v := s.clientView(rec)
			if rec.Expired(now) ||
				(req.GetSource() != 0 && v.GetSource() != req.GetSource()) ||
				(req.GetVerificationStatus() != 0 && v.GetVerification().GetStatus() != req.GetVerificationStatus()) {
				continue
			}
			out = append(out, v)
		}
		token = next
		if token == "" || len(out) >= size || scanned >= maxFilterScan {
			break
		}
	}
	if token != "" {
		token = filter + "~" + token
	}
	return out, token, nil
}

// updatablePaths are the update_mask paths of UpdateClient.
var metadataPaths = map[string]bool{
	"redirect_uris": true, "token_endpoint_auth_method": true, "grant_types": true, "application_type": true,
	"client_name": true, "client_uri": true, "logo_uri": true, "scope": true, "contacts": true, "tos_uri": true,
	"policy_uri": true, "jwks_uri": true, "jwks": true, "software_id": true, "software_version": true,
}

// UpdateClient applies an operator's field-masked update.
func (s *Service) UpdateClient(ctx context.Context, c Caller, req *registrationv1.UpdateClientRequest) (*registrationv1.Client, string, error) {
	in := req.GetClient()
	id := in.GetClientId()
	if id == "" {
		return nil, "", fieldErr("client.client_id", "required")
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		return nil, "", mcpidErr(codes.InvalidArgument, rFieldMask, "update_mask is required")
	}
	var (
		setMeta, setAllowed, setRS, setExpire bool
		metaFields                            []string
	)
	for _, p := range paths {
		switch {
		case p == "metadata":
			setMeta = true
		case strings.HasPrefix(p, "metadata.") && metadataPaths[strings.TrimPrefix(p, "metadata.")]:
			metaFields = append(metaFields, strings.TrimPrefix(p, "metadata."))
		case p == "allowed_resources":
			setAllowed = true
		case p == "resource_server":
			setRS = true
		case p == "expire_time":
			setExpire = true
		default:
			return nil, "", mcpidErr(codes.InvalidArgument, rFieldMask, "update_mask path %q is not updatable", clip(p))
		}
	}
	allowed, err := allowedResources(in.GetAllowedResources())
	if err != nil {
		return nil, "", err
	}
	rs, err := resourceServer(in.GetResourceServer())
	if err != nil {
		return nil, "", err
	}
	var expire time.Time
	if setExpire && in.GetExpireTime() != nil {
		if err := in.GetExpireTime().CheckValid(); err != nil {
			return nil, "", fieldErr("expire_time", "invalid timestamp")
		}
		if expire = in.GetExpireTime().AsTime(); !expire.After(s.Now()) || expire.Sub(s.Now()) > maxExpiry {
			return nil, "", fieldErr("expire_time", "must be in the future, within 100 years")
		}
	}
	cur, err := s.Store.GetClient(ctx, id)
	if err != nil {
		return nil, "", storeErr(err, id)
	}
	if err := editable(cur); err != nil {
		return nil, "", err
	}
	if (setExpire || setRS) && cur.Source != store.SourceOperator {
		if setExpire {
			return nil, "", mcpidErr(codes.InvalidArgument, rFieldMask, "expire_time applies to operator clients only")
		}
		return nil, "", mcpidErr(codes.FailedPrecondition, rCCNotPermitted, "resource_server applies to operator clients only")
	}
	md := &cur.Metadata
	if setMeta || len(metaFields) > 0 {
		md, err = s.mergeMetadata(cur, in.GetMetadata(), setMeta, metaFields)
		if err != nil {
			return nil, "", err
		}
	}
	if err := s.checkJWKSURI(ctx, md, cur.Metadata.JWKSURI); err != nil {
		return nil, "", metadataErrFromOAuth(err)
	}
	var newSecret string
	rec, err := s.updateClient(ctx, id, func(rec *store.Client) ([]etcdstore.Op, error) {
		if err := checkEtag(rec, in.GetEtag()); err != nil {
			return nil, err
		}
		if err := editable(rec); err != nil {
			return nil, err
		}
		newAllowed, newRS := rec.AllowedResources, rec.ResourceServer
		if setAllowed {
			newAllowed = allowed
		}
		if setRS {
			newRS = rs
		}
		if err := machineRules(md, newAllowed, newRS, rec.ClientCredentialsPermitted); err != nil {
			return nil, err
		}
		evs, sec := s.applyMetadata(c, rec, md, rec.SoftwareStatement, false)
		newSecret = sec
		var extra []string
		if setAllowed && !slices.EqualFunc(rec.AllowedResources, newAllowed, sameAllowed) {
			rec.AllowedResources = newAllowed
			extra = append(extra, "allowed_resources")
		}
		if setRS && rec.ResourceServer != newRS {
			rec.ResourceServer = newRS
			extra = append(extra, "resource_server")
		}
		if setExpire && !rec.ExpireTime.Equal(expire) {
			rec.ExpireTime = expire
			extra = append(extra, "expire_time")
		}
		if len(extra) > 0 {
			rec.UpdateTime = s.Now()
			if len(evs) == 0 {
				evs = append(evs, c.event(auditv1.EventType_EVENT_TYPE_CLIENT_UPDATED, c.actor(""), rec.ClientID, "",
					map[string]any{"changed_fields": anyList(extra), "consents_revoked": false}))
			} else {
				fields := evs[0].GetDetails().GetFields()["changed_fields"].GetListValue()
				for _, f := range extra {
					fields.Values = append(fields.Values, structpb.NewStringValue(f))
				}
			}
		}
		return s.outboxOps(ctx, evs...)
	})
	if err != nil {
		return nil, "", storeErr(err, id)
	}
	return s.clientView(rec), newSecret, nil
}

func sameAllowed(a, b store.AllowedResource) bool {
	return a.Resource == b.Resource && slices.Equal(a.Scopes, b.Scopes)
}

// mergeMetadata builds the new metadata of an operator update: all of it,
// or the named fields over the current ones.
func (s *Service) mergeMetadata(cur *store.Client, m *registrationv1.ClientMetadata, all bool, fields []string) (*metadata.Metadata, error) {
	if m == nil {
		m = &registrationv1.ClientMetadata{}
	}
	next, err := metadata.FromClientMetadata(m)
	if err != nil {
		return nil, metadataErr(err)
	}
	in := next
	if !all {
		in = cur.Metadata.Input()
		for _, f := range fields {
			switch f {
			case "redirect_uris":
				in.RedirectURIs = next.RedirectURIs
			case "token_endpoint_auth_method":
				in.TokenEndpointAuthMethod = next.TokenEndpointAuthMethod
			case "grant_types":
				in.GrantTypes = next.GrantTypes
			case "application_type":
				in.ApplicationType = next.ApplicationType
			case "client_name":
				in.ClientName = next.ClientName
			case "client_uri":
				in.ClientURI = next.ClientURI
			case "logo_uri":
				in.LogoURI = next.LogoURI
			case "scope":
				in.Scope = next.Scope
			case "contacts":
				in.Contacts = next.Contacts
			case "tos_uri":
				in.TOSURI = next.TOSURI
			case "policy_uri":
				in.PolicyURI = next.PolicyURI
			case "jwks_uri":
				in.JWKSURI = next.JWKSURI
			case "jwks":
				in.JWKS = next.JWKS
			case "software_id":
				in.SoftwareID = next.SoftwareID
			case "software_version":
				in.SoftwareVersion = next.SoftwareVersion
			}
		}
	}
	md, err := metadata.Validate(in, metadata.Policy{RedirectHosts: s.cfg.RedirectHosts})
	if err != nil {
		return nil, metadataErr(err)
	}
	return md, nil
}

// editable refuses changes to clients whose metadata is not ours to edit.
func editable(rec *store.Client) error {
	switch rec.Source {
	case store.SourcePreRegistered:
		return mcpidErr(codes.FailedPrecondition, rManagedByConfig, "client %q is declared in the service configuration", clip(rec.ClientID))
	case store.SourceCIMD:
		return mcpidErr(codes.FailedPrecondition, rFromDocument, "client %q follows its metadata document", clip(rec.ClientID))
	}
	return nil
}

func checkEtag(rec *store.Client, etag string) error {
	if etag != "" && etag != strconv.FormatInt(rec.Revision, 10) {
		return mcpidErr(codes.Aborted, rEtag, "client %q changed since it was read", clip(rec.ClientID))
	}
	return nil
}

// DeleteClient deletes a client as an operator.
func (s *Service) DeleteClient(ctx context.Context, c Caller, id, etag string) error {
	if id == "" {
		return fieldErr("client_id", "required")
	}
	_, err := s.Store.DeleteClient(ctx, id, func(rec *store.Client) ([]etcdstore.Op, error) {
		if err := checkEtag(rec, etag); err != nil {
			return nil, err
		}
		if rec.Source == store.SourcePreRegistered {
			return nil, editable(rec)
		}
		return s.deleteOps(ctx, c, c.actor(""), rec, auditv1.EventType_EVENT_TYPE_CLIENT_DELETED, "deleted")
	})
	return storeErr(err, id)
}

// updateClient is Store.UpdateClient with the rule that keeps the token
// service's client_verified claim honest: when fn takes a client from
// VERIFIED to UNVERIFIED (an operator's decision, changed redirect URIs, a
// CIMD domain no longer trusted) the same transaction records a pending
// revocation of its grants and consents, which sets a CLIENT watermark at
// the token service, so every token claiming client_verified=true dies at
// once at the policy service. Suspension records its own (SetVerification).
func (s *Service) updateClient(ctx context.Context, id string, fn func(rec *store.Client) ([]etcdstore.Op, error)) (*store.Client, error) {
	return s.Store.UpdateClient(ctx, id, func(rec *store.Client) ([]etcdstore.Op, error) {
		prev := rec.Verification.Status
		ops, err := fn(rec)
		if err != nil {
			return nil, err
		}
		if prev == store.StatusVerified && rec.Verification.Status == store.StatusUnverified {
			rev, err := s.Store.RevocationOp(rec.ClientID, "unverified", s.Now())
			if err != nil {
				return nil, err
			}
			ops = append(ops, rev)
		}
		return ops, nil
	})
}

// SetVerification sets a client's verification status.
func (s *Service) SetVerification(ctx context.Context, c Caller, req *registrationv1.SetClientVerificationRequest) (*registrationv1.Client, error) {
	id := req.GetClientId()
	if id == "" {
		return nil, fieldErr("client_id", "required")
	}
	status, ok := map[registrationv1.VerificationStatus]string{
		registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED:   store.StatusVerified,
		registrationv1.VerificationStatus_VERIFICATION_STATUS_UNVERIFIED: store.StatusUnverified,
		registrationv1.VerificationStatus_VERIFICATION_STATUS_SUSPENDED:  store.StatusSuspended,
	}[req.GetStatus()]
	if !ok {
		return nil, fieldErr("status", "must be VERIFIED, UNVERIFIED or SUSPENDED")
	}
	reason := req.GetReason()
	if strings.TrimSpace(reason) == "" || len([]rune(reason)) > maxReasonLen {
		return nil, mcpidErr(codes.InvalidArgument, rReasonRequired, "reason is required (1 to %d characters)", maxReasonLen)
	}
	rec, err := s.updateClient(ctx, id, func(rec *store.Client) ([]etcdstore.Op, error) {
		if err := checkEtag(rec, req.GetEtag()); err != nil {
			return nil, err
		}
		if rec.Source == store.SourcePreRegistered {
			return nil, editable(rec)
		}
		prev := rec.Verification.Status
		now := s.Now()
		rec.Verification = store.Verification{Status: status, UpdatedBy: c.Who(), UpdateTime: now, Reason: reason}
		if status == store.StatusVerified {
			rec.Verification.Method = store.MethodOperator
		}
		rec.UpdateTime = now
		// The operator's reason is free text (it may name people); the
		// event's reason is a code, the text stays on the client record.
		ops, err := s.outboxOps(ctx, verificationEvent(c, c.actor(""), rec, "operator_decision"))
		if err != nil {
			return nil, err
		}
		if status == store.StatusSuspended && prev != store.StatusSuspended {
			rev, err := s.Store.RevocationOp(rec.ClientID, "suspended", now)
			if err != nil {
				return nil, err
			}
			ops = append(ops, rev)
		}
		return ops, nil
	})
	if err != nil {
		return nil, storeErr(err, id)
	}
	return s.clientView(rec), nil
}

// RotateSecret issues a new client secret.
func (s *Service) RotateSecret(ctx context.Context, c Caller, req *registrationv1.RotateClientSecretRequest) (*registrationv1.Client, string, error) {
	id := req.GetClientId()
	if id == "" {
		return nil, "", fieldErr("client_id", "required")
	}
	var grace time.Duration
	if g := req.GetPreviousSecretGrace(); g != nil {
		if err := g.CheckValid(); err != nil || g.AsDuration() < 0 || g.AsDuration() > maxGrace {
			return nil, "", fieldErr("previous_secret_grace", "must be between 0 and 30 days")
		}
		grace = g.AsDuration()
	}
	lifetime, err := secretLifetime(req.GetSecretLifetime(), "secret_lifetime")
	if err != nil {
		return nil, "", err
	}
	value := secret.Generate()
	rec, err := s.updateClient(ctx, id, func(rec *store.Client) ([]etcdstore.Op, error) {
		if err := checkEtag(rec, req.GetEtag()); err != nil {
			return nil, err
		}
		if rec.Source == store.SourcePreRegistered {
			return nil, editable(rec)
		}
		if !rec.Metadata.UsesSecret() {
			return nil, mcpidErr(codes.FailedPrecondition, rNoSecret, "client %q does not authenticate with a secret", clip(id))
		}
		now := s.Now()
		next := s.newSecret(value, now, lifetime)
		details := map[string]any{}
		if grace > 0 && rec.Secret != nil && len(rec.Secret.Hash) > 0 {
			prevExpire := now.Add(grace)
			if !rec.Secret.ExpireTime.IsZero() && rec.Secret.ExpireTime.Before(prevExpire) {
				prevExpire = rec.Secret.ExpireTime // grace never extends a secret's life
			}
			next.PreviousHash, next.PreviousExpireTime = rec.Secret.Hash, prevExpire
			details["previous_secret_expires_at"] = prevExpire.UTC().Format(time.RFC3339)
		}
		rec.Secret = next
		rec.UpdateTime = now
		return s.outboxOps(ctx, c.event(auditv1.EventType_EVENT_TYPE_CLIENT_SECRET_ROTATED, c.actor(""), id, "", details))
	})
	if err != nil {
		return nil, "", storeErr(err, id)
	}
	return s.clientView(rec), value, nil
}
