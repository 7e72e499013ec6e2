package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/registration/internal/metadata"
	"github.com/mcpid/mcpid/services/registration/internal/secret"
	"github.com/mcpid/mcpid/services/registration/internal/softstmt"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// dcrClientIDBytes is the randomness of a DCR client_id (128 bits).
const dcrClientIDBytes = 16

// maxIATRetries bounds re-reading an initial access token that other
// registrations used concurrently.
const maxIATRetries = 8

// Register handles RFC 7591 POST /oauth2/register. A refusal emits
// client.registration_rejected with its reason.
func (s *Service) Register(ctx context.Context, c Caller, reg *registrationv1.ClientRegistration) (*registrationv1.ClientRegistration, error) {
	out, err := s.register(ctx, c, reg)
	if err != nil {
		s.rejected(ctx, c, "", store.SourceDCR, err)
		return nil, err
	}
	return out, nil
}

func (s *Service) register(ctx context.Context, c Caller, reg *registrationv1.ClientRegistration) (*registrationv1.ClientRegistration, error) {
	// The source network first (the contract's order): outsiders learn
	// nothing else about the configuration.
	if len(s.cfg.DCRAllowedCIDRs) > 0 && !s.cfg.DCRAllowedCIDRs.Contains(c.Source) {
		return nil, mcpidErr(codes.PermissionDenied, rSourceNotAllowed, "dynamic client registration is not allowed from this network")
	}
	if !s.cfg.DCREnabled {
		return nil, mcpidErr(codes.PermissionDenied, rDCRDisabled, "dynamic client registration is disabled")
	}
	if ok, wait := s.Limiter.Allow(c.Source); !ok {
		return nil, retryErr(rRateLimited, wait, "too many registrations from this address; retry later")
	}
	if reg == nil {
		reg = &registrationv1.ClientRegistration{}
	}
	iat, err := s.initialAccessToken(ctx, c)
	if err != nil {
		return nil, err
	}
	md, stmt, err := s.validateDCR(ctx, reg)
	if err != nil {
		return nil, err
	}
	ccAllowed := (iat != nil && len(iat.Resources) > 0) || statementVerifies(stmt, md)
	if md.HasGrant(metadata.GrantClientCredentials) && !ccAllowed {
		return nil, oauthErr("invalid_client_metadata", rCCNotPermitted,
			"client_credentials requires an initial access token that allows it or a trusted software statement")
	}
	if err := s.checkJWKSURI(ctx, md, ""); err != nil {
		return nil, err
	}
	if err := s.checkCap(ctx); err != nil {
		return nil, err
	}
	slot, err := s.duplicateSlot(ctx, c, reg)
	if err != nil {
		return nil, err
	}

	now := s.Now()
	rat := secret.Generate()
	rec := &store.Client{
		ClientID:                   secret.RandomID(dcrClientIDBytes),
		Source:                     store.SourceDCR,
		Metadata:                   *md,
		Verification:               store.Verification{Status: store.StatusUnverified, UpdatedBy: whoService, UpdateTime: now, Reason: "dynamic registration"},
		ClientCredentialsPermitted: ccAllowed,
		RegistrationTokenHash:      secret.Hash(rat),
		RegistrationSourceAddress:  addrString(c),
		CreatedBy:                  "client",
		CreateTime:                 now,
		UpdateTime:                 now,
	}
	rec.ExpireTime, rec.IdleExpiry = s.idleExpiry(now)
	if stmt != nil {
		rec.SoftwareStatement = &store.SoftwareStatement{Issuer: stmt.Issuer, KeyID: stmt.KeyID, PinsRedirectURIs: stmt.PinsRedirectURIs(), Statement: stmt.Raw}
		if statementVerifies(stmt, md) {
			rec.Verification = store.Verification{Status: store.StatusVerified, Method: store.MethodSoftwareStatement, UpdatedBy: whoService, UpdateTime: now,
				Reason: "software statement from " + stmt.Issuer + " pins redirect_uris"}
		}
	}
	var clientSecret string
	if md.UsesSecret() {
		clientSecret = secret.Generate()
		rec.Secret = s.newSecret(clientSecret, now, 0)
	}
	if iat != nil {
		rec.InitialAccessTokenID = iat.ID
		if md.HasGrant(metadata.GrantClientCredentials) {
			rec.AllowedResources = iat.Resources
		}
	}
	if err := s.createDCR(ctx, c, rec, iat, slot); err != nil {
		return nil, err
	}
	return s.registrationView(rec, rat, clientSecret), nil
}

// createDCR commits the client with its event, consuming a use of the
// initial access token; another registration using the token at the same
// time makes it read the token again.
func (s *Service) createDCR(ctx context.Context, c Caller, rec *store.Client, iat *store.IAT, slot string) error {
	for attempt := 0; ; attempt++ {
		opts := store.CreateOptions{DuplicateSlot: slot, DuplicateWindow: s.cfg.DuplicateWindow}
		if iat != nil {
			used := *iat
			used.UseCount++
			used.LastUsedTime = s.Now()
			opts.IAT = &used
		}
		ev := c.event(auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED, c.actor(rec.ClientID), rec.ClientID, "", registeredDetails(rec))
		ops, err := s.outboxOps(ctx, ev)
		if err != nil {
			return err
		}
		opts.Extra = ops
		_, err = s.Store.CreateClient(ctx, rec, opts)
		if !errors.Is(err, store.ErrIATChanged) || attempt >= maxIATRetries {
			return err
		}
		if iat, err = s.usableIAT(ctx, iat.Hash); err != nil {
			return err
		}
	}
}

// validateDCR applies the software statement (if any) and the metadata
// rules to an RFC 7591 body.
func (s *Service) validateDCR(ctx context.Context, reg *registrationv1.ClientRegistration) (*metadata.Metadata, *softstmt.Statement, error) {
	in, err := metadata.FromRegistration(reg)
	if err != nil {
		return nil, nil, oauthMetadataErr(err)
	}
	var stmt *softstmt.Statement
	if raw := reg.GetSoftwareStatement(); raw != "" {
		stmt, err = s.Statements.Verify(ctx, raw)
		switch {
		case errors.Is(err, softstmt.ErrUnapproved):
			return nil, nil, oauthErr("unapproved_software_statement", rStatementUnapproved, "the software statement's issuer or key is not trusted")
		case err != nil:
			return nil, nil, oauthErr("invalid_software_statement", rStatementInvalid, "the software statement is malformed, expired or badly signed")
		}
		in = stmt.Merge(in)
	}
	md, err := metadata.Validate(in, metadata.Policy{DefaultAuthMethod: metadata.AuthClientSecretBasic, RedirectHosts: s.cfg.RedirectHosts})
	if err != nil {
		return nil, nil, oauthMetadataErr(err)
	}
	return md, stmt, nil
}

// statementVerifies reports whether a trusted statement verifies the client:
// it pins the redirect URIs (its redirect_uris claim won over the request's).
func statementVerifies(stmt *softstmt.Statement, _ *metadata.Metadata) bool {
	return stmt != nil && stmt.PinsRedirectURIs()
}

// checkJWKSURI fetches a new jwks_uri to make sure it serves keys.
func (s *Service) checkJWKSURI(ctx context.Context, md *metadata.Metadata, previous string) error {
	if md.JWKSURI == "" || md.JWKSURI == previous {
		return nil
	}
	if err := s.Keys.Check(ctx, md.JWKSURI); err != nil {
		s.Logger.InfoContext(ctx, "jwks_uri refused", "error", err)
		return oauthErr("invalid_client_metadata", rMetadata, "jwks_uri: no usable signature key could be fetched from it")
	}
	return nil
}

// initialAccessToken checks the Authorization header of a registration.
func (s *Service) initialAccessToken(ctx context.Context, c Caller) (*store.IAT, error) {
	if s.cfg.IATMode == IATOff {
		return nil, nil
	}
	if c.Bearer == "" && !c.BadAuthorization {
		if s.cfg.IATMode == IATRequired {
			return nil, oauthErr("invalid_token", rIATRequired, "an initial access token is required")
		}
		return nil, nil
	}
	if c.BadAuthorization {
		return nil, oauthErr("invalid_token", rIATInvalid, "the initial access token is invalid")
	}
	t, err := s.usableIAT(ctx, secret.Hash(c.Bearer))
	if err != nil {
		return nil, err
	}
	// Found by its digest; compared once more in constant time so that
	// no code path ever accepts a token by a variable-time comparison.
	if !t.Hash.Matches(c.Bearer) {
		return nil, oauthErr("invalid_token", rIATInvalid, "the initial access token is invalid, expired, revoked or used up")
	}
	return t, nil
}

// usableIAT returns the token with this digest if it can register a client.
func (s *Service) usableIAT(ctx context.Context, hash secret.Digest) (*store.IAT, error) {
	invalid := oauthErr("invalid_token", rIATInvalid, "the initial access token is invalid, expired, revoked or used up")
	t, err := s.Store.GetIATByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalid
	}
	if err != nil {
		return nil, err
	}
	now := s.Now()
	if !t.RevokeTime.IsZero() || t.UseCount >= t.MaxUses || !now.Before(t.ExpireTime) {
		return nil, invalid
	}
	return t, nil
}

// duplicateSlot bounds identical registrations from one source: the same
// address sending the same body (the fingerprint) gets a slot among
// DuplicateLimit per window. Every registration still gets a new client; the
// bound stops one party from filling the store with copies.
func (s *Service) duplicateSlot(ctx context.Context, c Caller, reg *registrationv1.ClientRegistration) (string, error) {
	if s.cfg.DuplicateLimit <= 0 {
		return "", nil
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(reg)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	h := sha256.New()
	h.Write([]byte(addrString(c)))
	h.Write([]byte{0})
	h.Write(body)
	slot, wait, err := s.Store.DuplicateSlot(ctx, hex.EncodeToString(h.Sum(nil)), s.cfg.DuplicateLimit)
	if errors.Is(err, store.ErrDuplicateLimit) {
		return "", retryErr(rDuplicateLimit, wait, "too many identical registrations from this address; retry later")
	}
	return slot, err
}

func addrString(c Caller) string {
	if !c.Source.IsValid() {
		return ""
	}
	return c.Source.String()
}

// newSecret is the stored form of a new client secret.
func (s *Service) newSecret(value string, now time.Time, lifetime time.Duration) *store.Secret {
	if lifetime <= 0 {
		lifetime = s.cfg.SecretLifetime
	}
	sec := &store.Secret{Hash: secret.Hash(value), CreateTime: now}
	if lifetime > 0 {
		sec.ExpireTime = now.Add(lifetime)
	}
	return sec
}

// --- RFC 7592 ---

// registrationClient authorizes an RFC 7592 request: the registration
// access token must match the client's. Every failure looks the same, so
// that the endpoint does not reveal which client_ids exist.
func (s *Service) registrationClient(ctx context.Context, c Caller, clientID string) (*store.Client, error) {
	invalid := oauthErr("invalid_token", rRATInvalid, "the registration access token is invalid")
	if c.Bearer == "" || clientID == "" || len(clientID) > 256 {
		return nil, invalid
	}
	rec, err := s.Store.GetClient(ctx, clientID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalid
	}
	if err != nil {
		return nil, err
	}
	if rec.Source != store.SourceDCR || !rec.RegistrationTokenHash.Matches(c.Bearer) || rec.Expired(s.Now()) {
		return nil, invalid
	}
	return rec, nil
}

// GetRegistration handles RFC 7592 GET.
func (s *Service) GetRegistration(ctx context.Context, c Caller, clientID string) (*registrationv1.ClientRegistration, error) {
	rec, err := s.registrationClient(ctx, c, clientID)
	if err != nil {
		return nil, err
	}
	return s.registrationView(rec, c.Bearer, ""), nil
}

// UpdateRegistration handles RFC 7592 PUT: the body is the complete new
// metadata.
func (s *Service) UpdateRegistration(ctx context.Context, c Caller, clientID string, reg *registrationv1.ClientRegistration) (*registrationv1.ClientRegistration, error) {
	if ok, wait := s.Limiter.Allow(c.Source); !ok {
		return nil, retryErr(rRateLimited, wait, "too many requests from this address; retry later")
	}
	cur, err := s.registrationClient(ctx, c, clientID)
	if err != nil {
		return nil, err
	}
	if reg == nil {
		reg = &registrationv1.ClientRegistration{}
	}
	if reg.GetClientId() != clientID {
		return nil, oauthErr("invalid_client_metadata", rMetadata, "client_id in the body must equal the one in the URL")
	}
	if reg.GetClientSecret() != "" && (cur.Secret == nil || !cur.Secret.Hash.Matches(reg.GetClientSecret())) {
		return nil, oauthErr("invalid_client_metadata", rMetadata, "client_secret does not match")
	}
	md, stmt, err := s.validateDCR(ctx, reg)
	if err != nil {
		return nil, err
	}
	verifies := statementVerifies(stmt, md)
	if md.HasGrant(metadata.GrantClientCredentials) && !cur.ClientCredentialsPermitted && !verifies {
		return nil, oauthErr("invalid_client_metadata", rCCNotPermitted, "client_credentials was not allowed at registration")
	}
	if err := s.checkJWKSURI(ctx, md, cur.Metadata.JWKSURI); err != nil {
		return nil, err
	}
	var newSecret string
	rec, err := s.updateClient(ctx, clientID, func(rec *store.Client) ([]etcdstore.Op, error) {
		if !rec.RegistrationTokenHash.Matches(c.Bearer) {
			return nil, oauthErr("invalid_token", rRATInvalid, "the registration access token is invalid")
		}
		var ss *store.SoftwareStatement
		if stmt != nil {
			ss = &store.SoftwareStatement{Issuer: stmt.Issuer, KeyID: stmt.KeyID, PinsRedirectURIs: stmt.PinsRedirectURIs(), Statement: stmt.Raw}
		}
		evs, sec := s.applyMetadata(c, rec, md, ss, verifies)
		newSecret = sec
		if verifies {
			rec.ClientCredentialsPermitted = true
		}
		return s.outboxOps(ctx, evs...)
	})
	if err != nil {
		return nil, storeErr(err, clientID)
	}
	return s.registrationView(rec, c.Bearer, newSecret), nil
}

// applyMetadata replaces rec's metadata with md, following the rules every
// metadata change shares: a change of redirect URIs starts a new consent
// epoch and resets a VERIFIED client to UNVERIFIED (unless a trusted
// software statement pins the new ones; SUSPENDED stays); switching to a
// secret method issues a secret (returned), switching away deletes it. It
// returns the events of the change.
func (s *Service) applyMetadata(c Caller, rec *store.Client, md *metadata.Metadata, ss *store.SoftwareStatement, statementVerifies bool) ([]*auditv1.Event, string) {
	now := s.Now()
	old := rec.Metadata
	changed := old.ChangedFields(md)
	redirectsChanged := metadata.RedirectURIsChanged(old.RedirectURIs, md.RedirectURIs)
	rec.Metadata = *md
	if rec.Source == store.SourceDCR {
		if (rec.SoftwareStatement == nil) != (ss == nil) || (ss != nil && ss.Statement != rec.SoftwareStatement.Statement) {
			changed = append(changed, "software_statement")
		}
		rec.SoftwareStatement = ss
	}
	var newSecret string
	switch {
	case md.UsesSecret() && (rec.Secret == nil || len(rec.Secret.Hash) == 0):
		newSecret = secret.Generate()
		rec.Secret = s.newSecret(newSecret, now, 0)
	case !md.UsesSecret():
		rec.Secret = nil
	}
	var evs []*auditv1.Event
	prevStatus := rec.Verification.Status
	if redirectsChanged {
		rec.ConsentEpoch = 0 // the revision of this write
		if rec.Verification.Status == store.StatusVerified {
			rec.Verification = store.Verification{Status: store.StatusUnverified, UpdatedBy: whoService, UpdateTime: now, Reason: "redirect_uris changed"}
		}
	}
	if statementVerifies && rec.Verification.Status != store.StatusSuspended {
		rec.Verification = store.Verification{Status: store.StatusVerified, Method: store.MethodSoftwareStatement, UpdatedBy: whoService, UpdateTime: now,
			Reason: "software statement from " + ss.Issuer + " pins redirect_uris"}
	}
	if len(changed) == 0 && newSecret == "" && prevStatus == rec.Verification.Status {
		return nil, ""
	}
	rec.UpdateTime = now
	evs = append(evs, c.event(auditv1.EventType_EVENT_TYPE_CLIENT_UPDATED, c.actor(rec.ClientID), rec.ClientID, "",
		map[string]any{"changed_fields": anyList(changed), "consents_revoked": redirectsChanged}))
	if prevStatus != rec.Verification.Status {
		reason := "redirect_uris_changed"
		if rec.Verification.Status == store.StatusVerified {
			reason = "software_statement"
		}
		evs = append(evs, verificationEvent(c, c.actor(rec.ClientID), rec, reason))
	}
	return evs, newSecret
}

// DeleteRegistration handles RFC 7592 DELETE.
func (s *Service) DeleteRegistration(ctx context.Context, c Caller, clientID string) error {
	if _, err := s.registrationClient(ctx, c, clientID); err != nil {
		return err
	}
	_, err := s.Store.DeleteClient(ctx, clientID, func(rec *store.Client) ([]etcdstore.Op, error) {
		if rec.Source != store.SourceDCR || !rec.RegistrationTokenHash.Matches(c.Bearer) {
			return nil, oauthErr("invalid_token", rRATInvalid, "the registration access token is invalid")
		}
		return s.deleteOps(ctx, c, c.actor(rec.ClientID), rec, auditv1.EventType_EVENT_TYPE_CLIENT_DELETED, "deleted")
	})
	if errors.Is(err, store.ErrNotFound) {
		return oauthErr("invalid_token", rRATInvalid, "the registration access token is invalid")
	}
	return err
}

// deleteOps are the operations that go with removing a client: its event
// and the pending revocation of its grants and consents at the token
// service.
func (s *Service) deleteOps(ctx context.Context, c Caller, actor *auditv1.Actor, rec *store.Client, t auditv1.EventType, reason string) ([]etcdstore.Op, error) {
	ops, err := s.outboxOps(ctx, c.event(t, actor, rec.ClientID, reason, map[string]any{"source": rec.Source}))
	if err != nil {
		return nil, err
	}
	rev, err := s.Store.RevocationOp(rec.ClientID, reason, s.Now())
	if err != nil {
		return nil, err
	}
	return append(ops, rev), nil
}
