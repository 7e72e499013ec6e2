package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/resource"
	"github.com/mcpid/mcpid/services/token/internal/accesstoken"
	"github.com/mcpid/mcpid/services/token/internal/catalog"
	"github.com/mcpid/mcpid/services/token/internal/clients"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// codeVerifierRe is RFC 7636 section 4.1: 43 to 128 unreserved characters.
var codeVerifierRe = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)

// maxRefreshAttempts bounds re-evaluation of a refresh after a concurrent
// change of its grant.
const maxRefreshAttempts = 3

// TokenInput is a token endpoint request.
type TokenInput struct {
	Req *tokenv1.TokenRequest
	// Authorization is the HTTP Authorization header (Basic), if any.
	Authorization string
}

func (s *Service) authenticate(ctx context.Context, authz, clientID, secret, assertionType, assertion, endpoint string) (*clients.Authenticated, error) {
	creds, err := clients.Extract(clients.Presented{
		Authorization: authz, ClientID: clientID, ClientSecret: secret, AssertionType: assertionType, Assertion: assertion,
	}, s.URL(endpoint))
	if err != nil {
		return nil, err
	}
	return s.d.Clients.Authenticate(ctx, creds)
}

// Token serves the token endpoint.
func (s *Service) Token(ctx context.Context, in TokenInput) (*tokenv1.TokenResponse, error) {
	r := in.Req
	switch r.GetGrantType() {
	case "authorization_code", "refresh_token", "client_credentials":
	case "":
		return nil, oauthErr("invalid_request", "grant_type is required")
	default:
		return nil, oauthErr("unsupported_grant_type", "grant_type %s is not supported", truncate(r.GetGrantType(), 64))
	}
	// Parameter checks that need no client come first: they are cheap and
	// leave nothing changed.
	switch r.GetGrantType() {
	case "authorization_code":
		switch {
		case r.GetCode() == "":
			return nil, oauthErr("invalid_request", "code is required")
		case r.GetRedirectUri() == "":
			return nil, oauthErr("invalid_request", "redirect_uri is required")
		case r.GetCodeVerifier() == "":
			return nil, oauthErr("invalid_request", "code_verifier is required (PKCE)")
		case !codeVerifierRe.MatchString(r.GetCodeVerifier()):
			return nil, oauthErr("invalid_request", "code_verifier must be 43 to 128 unreserved characters")
		}
	case "refresh_token":
		if r.GetRefreshToken() == "" {
			return nil, oauthErr("invalid_request", "refresh_token is required")
		}
	}
	cl, err := s.authenticate(ctx, in.Authorization, r.GetClientId(), r.GetClientSecret(), r.GetClientAssertionType(), r.GetClientAssertion(), PathToken)
	if err != nil {
		return nil, err
	}
	switch r.GetGrantType() {
	case "authorization_code":
		return s.redeemCode(ctx, cl, r)
	case "refresh_token":
		return s.refresh(ctx, cl, r)
	default:
		return s.clientCredentials(ctx, cl, r)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// canonicalTarget canonicalizes an optional resource parameter. The
// reserved urn:mcpid:* audiences are not URLs: they pass as they are (the
// caller decides who may have them).
func canonicalTarget(raw string) (string, error) {
	if raw == "" || principal.IsReservedAudience(raw) {
		return raw, nil
	}
	res, err := resource.Canonicalize(raw)
	if err != nil {
		return "", oauthErr("invalid_target", "resource is not a valid absolute URI")
	}
	return res, nil
}

// s256 is the PKCE S256 transform.
func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// withoutOffline is the scope list of an access token.
func withoutOffline(scopes []string) []string {
	out := make([]string, 0, len(scopes))
	for _, s := range scopes {
		if s != OfflineAccess {
			out = append(out, s)
		}
	}
	return out
}

// userForGrant returns the grant's user if it may still receive tokens.
func (s *Service) userForGrant(ctx context.Context, userID string) (*store.User, error) {
	u, err := s.d.Store.GetUser(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, oauthErr("invalid_grant", "the user no longer exists")
	}
	if err != nil {
		return nil, storeErr(err)
	}
	if u.Disabled {
		return nil, oauthErr("invalid_grant", "the user is disabled")
	}
	return u, nil
}

// userTokenSpec is the access token of a user grant for client cl (as just
// authenticated: its verification status is current).
func (s *Service) userTokenSpec(g *store.Grant, u *store.User, cl *registrationv1.Client, scopes []string) accesstoken.Spec {
	spec := accesstoken.Spec{
		Subject: g.UserID, Audience: g.Resource, ClientID: g.ClientID, Scopes: withoutOffline(scopes),
		GrantID: g.ID, AuthTime: g.AuthTime, Groups: u.Groups, TTL: s.accessTTL(g.Resource),
	}
	if g.Resource == principal.AdminAudience {
		spec.Roles = s.rolesNow(u)
	}
	withClient(&spec, cl)
	return spec
}

// withClient puts the client's verification status and application type
// into spec (the client_verified and client_application_type claims the
// policy service decides client.verified and require_verified_client on).
// cl comes from AuthenticateClient in this request, never from a cache, so
// a client that lost VERIFIED gets false from then on; its earlier tokens
// die by the CLIENT watermark the registration service sets at that change.
func withClient(spec *accesstoken.Spec, cl *registrationv1.Client) {
	spec.ClientVerified = cl.GetVerification().GetStatus() == registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED
	switch cl.GetMetadata().GetApplicationType() {
	case registrationv1.ApplicationType_APPLICATION_TYPE_WEB:
		spec.ClientApplicationType = "web"
	case registrationv1.ApplicationType_APPLICATION_TYPE_NATIVE:
		spec.ClientApplicationType = "native"
	}
}

// revocationFor is the GRANT revocation entry for grant: it must outlive
// every access token the grant may have produced.
func (s *Service) revocationFor(grantID, res string) *store.Revocation {
	return &store.Revocation{Kind: store.RevokeGrant, ID: grantID, Resource: res,
		Expires: s.d.Now().UTC().Add(s.maxTokTTL + time.Minute)}
}

func (s *Service) redeemCode(ctx context.Context, cl *clients.Authenticated, r *tokenv1.TokenRequest) (*tokenv1.TokenResponse, error) {
	if !clients.HasGrant(cl.Client, registrationv1.GrantType_GRANT_TYPE_AUTHORIZATION_CODE) {
		return nil, oauthErr("unauthorized_client", "the client is not registered for the authorization_code grant")
	}
	codeHash := Hash(r.GetCode())
	vc, err := s.d.Store.GetCode(ctx, codeHash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, s.codeNotFound(ctx, codeHash, cl)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	c := vc.Value
	switch {
	case c.ClientID != cl.Client.GetClientId():
		return nil, oauthErr("invalid_grant", "the code was issued to another client")
	case r.GetRedirectUri() != c.RedirectURI:
		return nil, oauthErr("invalid_grant", "redirect_uri does not match the authorization request")
	case !equalSecret(s256(r.GetCodeVerifier()), c.CodeChallenge):
		return nil, oauthErr("invalid_grant", "code_verifier does not match the code_challenge")
	}
	res, err := canonicalTarget(r.GetResource())
	if err != nil {
		return nil, err
	}
	if res != "" && res != c.Resource {
		return nil, oauthErr("invalid_target", "resource differs from the authorization request")
	}
	u, err := s.userForGrant(ctx, c.UserID)
	if err != nil {
		return nil, err
	}
	if err := s.connectorLive(c.ConnectorID); err != nil {
		return nil, err
	}
	if c.Resource == principal.AdminAudience && len(s.rolesNow(u)) == 0 {
		return nil, oauthErr("invalid_grant", "the user holds no operator role")
	}
	now := s.d.Now().UTC()
	g := &store.Grant{
		ID: c.GrantID, Type: store.GrantAuthorizationCode, UserID: c.UserID, ClientID: c.ClientID, Resource: c.Resource,
		Scopes: c.Scopes, ClientAuthMethod: clients.AuthMethodName(cl.Method), ConnectorID: c.ConnectorID,
		AuthTime: c.AuthTime, Created: now, LastUse: now,
	}
	refresh := ""
	if s.issuesRefresh(cl.Client, c.Scopes) {
		secret, err := RandomToken()
		if err != nil {
			return nil, err
		}
		refresh = g.ID + "." + secret
		g.Refresh = &store.RefreshState{Hash: Hash(refresh)}
		g.Expires = now.Add(s.cfg.GrantLifetime)
	} else {
		// Without a refresh token the grant lives as long as its token.
		g.Expires = now.Add(s.accessTTL(c.Resource) + time.Minute)
	}
	minted, err := s.d.Minter.Mint(s.userTokenSpec(g, u, cl.Client, c.Scopes))
	if err != nil {
		return nil, err
	}
	ttl := int(minted.Expires.Sub(minted.Issued) / time.Second)
	op, err := s.d.Events.Op(ctx, events.TokenIssued("authorization_code", g.UserID, g.ClientID, g.Resource, g.ID, minted.JTI,
		withoutOffline(g.Scopes), ttl, refresh != ""))
	if err != nil {
		return nil, err
	}
	usedUntil := now.Add(s.cfg.GrantLifetime)
	if refresh == "" {
		usedUntil = g.Expires
	}
	if err := s.d.Store.RedeemCode(ctx, codeHash, vc.ModRevision, usedUntil, g, op); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Redeemed concurrently: this is the replay.
			return nil, s.codeNotFound(ctx, codeHash, cl)
		}
		return nil, storeErr(err)
	}
	// A revocation of the user, client or resource, or of this consent,
	// written after the code was issued: the code dies with it.
	if err := s.undoIfRevoked(ctx, g, vc.CreateRevision); err != nil {
		return nil, err
	}
	return &tokenv1.TokenResponse{
		AccessToken: minted.Token, TokenType: "Bearer", ExpiresIn: int32(ttl),
		RefreshToken: refresh, Scope: proto.String(strings.Join(withoutOffline(g.Scopes), " ")),
	}, nil
}

// connectorLive refuses a grant of a federated user whose connector has
// been disabled or deleted (the registry lists only enabled connectors):
// the upstream identity provider no longer vouches for the user.
func (s *Service) connectorLive(id string) error {
	if id == "" {
		return nil
	}
	if _, ok := s.d.Connectors.Get(id); !ok {
		return oauthErr("invalid_grant", "the user's identity provider connector is disabled or deleted")
	}
	return nil
}

// codeNotFound answers an unknown code; a code that was redeemed before is
// a replay: what it produced is revoked (RFC 6749 section 4.1.2).
func (s *Service) codeNotFound(ctx context.Context, codeHash string, cl *clients.Authenticated) error {
	used, err := s.d.Store.GetUsedCode(ctx, codeHash)
	if errors.Is(err, store.ErrNotFound) {
		return oauthErr("invalid_grant", "the code is unknown, expired or already used")
	}
	if err != nil {
		return storeErr(err)
	}
	if used.ClientID != cl.Client.GetClientId() {
		// Another client replaying someone's code learns nothing and
		// changes nothing.
		return oauthErr("invalid_grant", "the code is unknown, expired or already used")
	}
	g, err := s.d.Store.GetGrant(ctx, used.GrantID)
	res, userID := "", ""
	if err == nil {
		res, userID = g.Value.Resource, g.Value.UserID
	} else if !errors.Is(err, store.ErrNotFound) {
		return storeErr(err)
	}
	if err == nil || !s.d.Revocations.GrantRevoked(used.GrantID) {
		op, err := s.d.Events.Op(ctx, events.CodeReplayed(userID, used.ClientID, res, used.GrantID))
		if err != nil {
			return err
		}
		_, rev, err := s.d.Store.RevokeGrant(ctx, used.GrantID, s.revocationFor(used.GrantID, res), op)
		if err != nil {
			return storeErr(err)
		}
		s.awaitRevocation(ctx, rev)
	}
	return oauthErr("invalid_grant", "the code is unknown, expired or already used")
}

// issuesRefresh decides whether a refresh token comes with the grant.
func (s *Service) issuesRefresh(cl *registrationv1.Client, scopes []string) bool {
	if !clients.HasGrant(cl, registrationv1.GrantType_GRANT_TYPE_REFRESH_TOKEN) {
		return false
	}
	return s.cfg.RefreshIssuance == RefreshRegistered || slices.Contains(scopes, OfflineAccess)
}

// splitRefresh returns the grant id of a refresh token ("<grant_id>.<secret>").
func splitRefresh(tok string) (string, bool) {
	id, secret, ok := strings.Cut(tok, ".")
	if !ok || !strings.HasPrefix(id, "grt_") || len(id) > 64 || len(secret) < 32 || strings.Contains(secret, ".") {
		return "", false
	}
	return id, true
}

func (s *Service) refresh(ctx context.Context, cl *clients.Authenticated, r *tokenv1.TokenRequest) (*tokenv1.TokenResponse, error) {
	if !clients.HasGrant(cl.Client, registrationv1.GrantType_GRANT_TYPE_REFRESH_TOKEN) {
		return nil, oauthErr("unauthorized_client", "the client is not registered for the refresh_token grant")
	}
	grantID, ok := splitRefresh(r.GetRefreshToken())
	if !ok {
		return nil, oauthErr("invalid_grant", "the refresh token is unknown, expired or revoked")
	}
	res, err := canonicalTarget(r.GetResource())
	if err != nil {
		return nil, err
	}
	presented := Hash(r.GetRefreshToken())
	for attempt := 1; ; attempt++ {
		vg, err := s.d.Store.GetGrant(ctx, grantID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, oauthErr("invalid_grant", "the refresh token is unknown, expired or revoked")
		}
		if err != nil {
			return nil, storeErr(err)
		}
		g := vg.Value
		if g.Refresh == nil || g.ClientID != cl.Client.GetClientId() {
			return nil, oauthErr("invalid_grant", "the refresh token is unknown, expired or revoked")
		}
		now := s.d.Now().UTC()
		switch {
		case equalSecret(presented, g.Refresh.Hash):
		case s.cfg.RefreshGrace > 0 && len(g.Refresh.Rotated) > 0 && equalSecret(presented, g.Refresh.Rotated[0]) &&
			now.Sub(g.Refresh.RotatedAt) <= s.cfg.RefreshGrace:
			// The immediately previous token within the grace period (a
			// client that lost the response): rotate again.
		case slices.Contains(g.Refresh.Rotated, presented):
			return nil, s.refreshReuse(ctx, g)
		default:
			return nil, oauthErr("invalid_grant", "the refresh token is unknown, expired or revoked")
		}
		if res != "" && res != g.Resource {
			return nil, oauthErr("invalid_target", "resource differs from the grant's")
		}
		scopes := g.Scopes
		if raw := r.GetScope(); raw != "" {
			scopes = dedupeSorted(strings.Fields(raw))
			for _, sc := range scopes {
				if !slices.Contains(g.Scopes, sc) {
					return nil, oauthErr("invalid_scope", "scope %s exceeds the grant", truncate(sc, 128))
				}
			}
		}
		u, err := s.userForGrant(ctx, g.UserID)
		if err != nil {
			return nil, err
		}
		if err := s.connectorLive(g.ConnectorID); err != nil {
			return nil, err
		}
		if g.Resource == principal.AdminAudience && len(s.rolesNow(u)) == 0 {
			return nil, oauthErr("invalid_grant", "the user holds no operator role")
		}
		secret, err := RandomToken()
		if err != nil {
			return nil, err
		}
		refresh := g.ID + "." + secret
		next := *g
		rs := *g.Refresh
		// The current token becomes the newest rotated one; after a grace
		// rotation that is the token the client never received.
		rs.Rotated = dedupeKeepOrder(append([]string{g.Refresh.Hash}, g.Refresh.Rotated...))
		if len(rs.Rotated) > store.MaxRotatedHashes {
			rs.Rotated = rs.Rotated[:store.MaxRotatedHashes]
		}
		rs.Hash, rs.RotatedAt = Hash(refresh), now
		next.Refresh, next.LastRefresh, next.LastUse = &rs, now, now
		minted, err := s.d.Minter.Mint(s.userTokenSpec(&next, u, cl.Client, scopes))
		if err != nil {
			return nil, err
		}
		ttl := int(minted.Expires.Sub(minted.Issued) / time.Second)
		op, err := s.d.Events.Op(ctx, events.TokenRefreshed(g.UserID, g.ClientID, g.Resource, g.ID, minted.JTI, withoutOffline(scopes), ttl))
		if err != nil {
			return nil, err
		}
		err = s.d.Store.UpdateGrant(ctx, &next, vg.ModRevision, op)
		if errors.Is(err, store.ErrConflict) && attempt < maxRefreshAttempts {
			// Rotated (or revoked) concurrently: decide again on the new
			// state, where this token is now a rotated one.
			continue
		}
		if err != nil {
			return nil, storeErr(err)
		}
		// A USER, CLIENT or RESOURCE revocation that raced this rotation
		// (its grant listing may have run before the commit, and the token
		// just minted may carry an iat past its watermark) ends the grant.
		if err := s.undoIfRevoked(ctx, &next, vg.CreateRevision); err != nil {
			return nil, err
		}
		return &tokenv1.TokenResponse{
			AccessToken: minted.Token, TokenType: "Bearer", ExpiresIn: int32(ttl),
			RefreshToken: refresh, Scope: proto.String(strings.Join(withoutOffline(scopes), " ")),
		}, nil
	}
}

func dedupeKeepOrder(ss []string) []string {
	seen := map[string]bool{}
	out := ss[:0:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// refreshReuse revokes the whole grant when a rotated refresh token is
// presented again.
func (s *Service) refreshReuse(ctx context.Context, g *store.Grant) error {
	op, err := s.d.Events.Op(ctx, events.RefreshReuse(g.UserID, g.ClientID, g.Resource, g.ID))
	if err != nil {
		return err
	}
	_, rev, err := s.d.Store.RevokeGrant(ctx, g.ID, s.revocationFor(g.ID, g.Resource), op)
	if err != nil {
		return storeErr(err)
	}
	s.awaitRevocation(ctx, rev)
	return oauthErr("invalid_grant", "the refresh token was already used; the grant is revoked")
}

// ccGrantID is the deterministic grant id of generation gen of the
// client_credentials grant of (client, resource). Generation 0 is the id
// earlier versions used.
func ccGrantID(clientID, res string, gen int) string {
	in := "client_credentials\x00" + clientID + "\x00" + res
	if gen > 0 {
		in += "\x00" + strconv.Itoa(gen)
	}
	sum := sha256.Sum256([]byte(in))
	return "grt_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:16]))
}

// maxCCGenerations bounds the client_credentials grant generations: how
// many times one (client, resource) grant may be revoked by grant_id within
// the longest access token lifetime (plus a minute).
const maxCCGenerations = 32

// ccStaleSweep is how many generations above the current one are cleared
// when a generation's record is (re)created.
const ccStaleSweep = 4

// ccGeneration picks the grant id a client_credentials token carries: the
// lowest generation without a live GRANT revocation. Revoking a
// client_credentials grant by grant_id therefore kills the tokens issued
// before it (they carry the revoked id) while the next issuance carries the
// next generation's id and works: the revocation acts as an "issued
// before" cut-off for the (client, resource) pair that every follower of
// the feed already understands. Every replica derives the same id from its
// revocation set; one that has not yet heard of a revocation (the feed
// delay, milliseconds) may still issue a token with the revoked id, which
// is then rejected like the ones issued before.
func (s *Service) ccGeneration(clientID, res string) (int, error) {
	for gen := range maxCCGenerations {
		if !s.d.Revocations.GrantRevoked(ccGrantID(clientID, res, gen)) {
			return gen, nil
		}
	}
	return 0, oauthErr("invalid_grant", "this client's grant for the resource was revoked too often; try again later")
}

func (s *Service) clientCredentials(ctx context.Context, cl *clients.Authenticated, r *tokenv1.TokenRequest) (*tokenv1.TokenResponse, error) {
	c := cl.Client
	if !clients.HasGrant(c, registrationv1.GrantType_GRANT_TYPE_CLIENT_CREDENTIALS) {
		return nil, oauthErr("unauthorized_client", "the client may not use the client_credentials grant")
	}
	if r.GetResource() == "" {
		return nil, oauthErr("invalid_target", "resource is required")
	}
	res, err := canonicalTarget(r.GetResource())
	if err != nil {
		return nil, err
	}
	requested := dedupeSorted(strings.Fields(r.GetScope()))
	for _, sc := range requested {
		if principal.IsReservedScope(sc) {
			return nil, oauthErr("invalid_scope", "scope %s is reserved", truncate(sc, 128))
		}
		if sc == OfflineAccess {
			return nil, oauthErr("invalid_scope", "offline_access is not available with client_credentials")
		}
	}
	spec := accesstoken.Spec{Subject: c.GetClientId(), Audience: res, ClientID: c.GetClientId(), TTL: s.accessTTL(res)}
	withClient(&spec, c)
	var scopes []string
	switch {
	case res == principal.PolicyAudience:
		if !clients.MayGetReservedAudience(c, principal.PolicyAudience) || c.GetResourceServer() == "" {
			return nil, oauthErr("invalid_target", "this client may not obtain tokens for %s", principal.PolicyAudience)
		}
		if len(requested) > 0 {
			return nil, oauthErr("invalid_scope", "no scopes are available for %s", principal.PolicyAudience)
		}
		spec.Resource = c.GetResourceServer()
	case principal.IsReservedAudience(res):
		return nil, oauthErr("invalid_target", "this resource cannot be requested with client_credentials")
	default:
		allowed, ok := clients.AllowedResource(c, res)
		if !ok {
			return nil, oauthErr("invalid_target", "the client may not obtain tokens for this resource")
		}
		cat, err := s.d.Catalogs.Lookup(res)
		switch {
		case errors.Is(err, catalog.ErrUnknownResource):
			return nil, oauthErr("invalid_target", "unknown resource")
		case err != nil:
			return nil, unavailable("the resource catalogue", err)
		}
		if len(requested) == 0 {
			for _, sc := range allowed.GetScopes() {
				if _, ok := cat.Scope(sc); ok {
					scopes = append(scopes, sc)
				}
			}
			slices.Sort(scopes)
		} else {
			for _, sc := range requested {
				if !slices.Contains(allowed.GetScopes(), sc) {
					return nil, oauthErr("invalid_scope", "scope %s is not allowed for this client", truncate(sc, 128))
				}
				if _, ok := cat.Scope(sc); !ok {
					return nil, oauthErr("invalid_scope", "scope %s is not offered by this resource", truncate(sc, 128))
				}
			}
			scopes = requested
		}
	}
	spec.Scopes = scopes
	gen, err := s.ccGeneration(c.GetClientId(), res)
	if err != nil {
		return nil, err
	}
	spec.GrantID = ccGrantID(c.GetClientId(), res, gen)
	if err := s.recordClientCredentialsGrant(ctx, gen, c.GetClientId(), res, scopes, cl.Method); err != nil {
		return nil, err
	}
	minted, err := s.d.Minter.Mint(spec)
	if err != nil {
		return nil, err
	}
	ttl := int(minted.Expires.Sub(minted.Issued) / time.Second)
	s.d.Events.Emit(ctx, events.TokenIssued("client_credentials", "", c.GetClientId(), res, spec.GrantID, minted.JTI, scopes, ttl, false))
	return &tokenv1.TokenResponse{AccessToken: minted.Token, TokenType: "Bearer", ExpiresIn: int32(ttl), Scope: proto.String(strings.Join(scopes, " "))}, nil
}

// lastUseEvery bounds the writes of a grant's last use: at most one per
// grant per minute (a per-replica throttle, then a compare-and-swap on the
// stored time across replicas).
const lastUseEvery = time.Minute

// recordClientCredentialsGrant records the (client, resource) grant of
// generation gen at its first issuance and its last use at most once a
// minute; issuances in between, remembered per replica for a minute, write
// nothing. A CLIENT or RESOURCE watermark set since the replica remembered
// the grant (which deleted the record) makes it record the grant again, so
// the inventory shows a client that is still getting tokens.
func (s *Service) recordClientCredentialsGrant(ctx context.Context, gen int, clientID, res string, scopes []string, m registrationv1.TokenEndpointAuthMethod) error {
	id := ccGrantID(clientID, res, gen)
	key := id + "\x00" + strings.Join(scopes, " ")
	if at, ok := s.ccGrants.since(key); ok && !s.cutSince(clientID, res, at) {
		return nil
	}
	now := s.d.Now().UTC()
	created, err := s.d.Store.EnsureClientCredentialsGrant(ctx, &store.Grant{
		ID: id, Type: store.GrantClientCredentials, ClientID: clientID, Resource: res, Scopes: scopes,
		ClientAuthMethod: clients.AuthMethodName(m), Created: now, LastUse: now,
	})
	if err != nil {
		return storeErr(err)
	}
	if created {
		// Generations above this one whose revocation is not live any more
		// are records of an earlier run of revocations: gone from use.
		var stale []string
		for g := gen + 1; g <= gen+ccStaleSweep && g < maxCCGenerations; g++ {
			if sid := ccGrantID(clientID, res, g); !s.d.Revocations.GrantRevoked(sid) {
				stale = append(stale, sid)
			}
		}
		if err := s.d.Store.DeleteCCGrants(ctx, clientID, res, stale); err != nil {
			return storeErr(err)
		}
	} else if _, err := s.d.Store.TouchGrant(ctx, id, now, lastUseEvery); err != nil {
		return storeErr(err)
	}
	s.ccGrants.add(key)
	return nil
}

// cutSince reports whether a live CLIENT or RESOURCE watermark of the pair
// is later than at (the grant record may have been deleted since).
func (s *Service) cutSince(clientID, res string, at time.Time) bool {
	for _, w := range [][2]string{{store.RevokeClient, clientID}, {store.RevokeResource, res}} {
		if before, ok := s.d.Revocations.Watermark(w[0], w[1]); ok && before.After(at) {
			return true
		}
	}
	return false
}
