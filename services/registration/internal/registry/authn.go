package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/services/registration/internal/metadata"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// Client authentication limits (RFC 7523 and the contract).
const (
	assertionTypeJWT   = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	maxAssertionSize   = 8 << 10
	maxSecretLen       = 512
	maxClientIDLen     = 2048
	maxAssertionWindow = 5 * time.Minute
	maxJTILen          = 256
	assertionSkew      = time.Minute
)

// assertionAlgorithms are the asymmetric algorithms a client may sign
// assertions with (never none or HMAC: lib/jose refuses those anyway).
var assertionAlgorithms = []string{jose.ES256, jose.ES384, jose.ES512, jose.EdDSA, jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512}

func invalidClient(reason registrationv1.ErrorReason, description string) error {
	return oauthErr("invalid_client", reason, description)
}

func invalidRequest(description string) error {
	return oauthErr("invalid_request", rInvalidField, description)
}

// Authenticate checks a client's credential for the token service. It
// returns the client and whether a previous secret (in its rotation grace
// period) was used.
func (s *Service) Authenticate(ctx context.Context, c Caller, req *registrationv1.AuthenticateClientRequest) (*registrationv1.Client, bool, error) {
	method, err := metadata.AuthMethodString(req.GetAuthMethod())
	if err != nil || method == "" {
		return nil, false, invalidRequest("auth_method is required")
	}
	hasSecret := req.GetClientSecret() != ""
	hasAssertion := req.GetClientAssertion() != "" || req.GetClientAssertionType() != ""
	switch {
	case len(req.GetClientId()) > maxClientIDLen:
		return nil, false, invalidRequest("client_id is too long")
	case (method == metadata.AuthClientSecretBasic || method == metadata.AuthClientSecretPost) && hasAssertion,
		method == metadata.AuthPrivateKeyJWT && hasSecret,
		method == metadata.AuthNone && (hasSecret || hasAssertion):
		return nil, false, invalidRequest("credentials of more than one authentication method")
	case method == metadata.AuthPrivateKeyJWT && req.GetEndpointUrl() == "":
		return nil, false, invalidRequest("endpoint_url is required with private_key_jwt")
	}
	clientID := req.GetClientId()
	if clientID == "" && method == metadata.AuthPrivateKeyJWT {
		clientID = unverifiedSubject(req.GetClientAssertion())
	}
	if clientID == "" {
		return nil, false, invalidRequest("no client_id")
	}
	rec, err := s.resolve(ctx, c, clientID)
	if err != nil {
		return nil, false, asInvalidClient(err)
	}
	if rec.Verification.Status == store.StatusSuspended {
		return nil, false, invalidClient(rSuspended, "the client is suspended")
	}
	if rec.Metadata.TokenEndpointAuthMethod != method {
		return nil, false, invalidClient(rMethodMismatch, "the client is not registered for this authentication method")
	}
	previous := false
	switch method {
	case metadata.AuthClientSecretBasic, metadata.AuthClientSecretPost:
		if previous, err = s.checkSecret(rec, req.GetClientSecret()); err != nil {
			return nil, false, err
		}
	case metadata.AuthPrivateKeyJWT:
		if err := s.checkAssertion(ctx, rec, req); err != nil {
			return nil, false, err
		}
	}
	if err := s.recordUse(ctx, rec); err != nil {
		return nil, false, asInvalidClient(err)
	}
	return s.clientView(rec), previous, nil
}

// asInvalidClient turns a resolution failure into the invalid_client answer
// carrying the same reason (store failures stay internal).
func asInvalidClient(err error) error {
	info := apierr.Info(err)
	if info == nil || info.GetDomain() != apierr.DomainMCPID {
		return err
	}
	if info.GetReason() == rInvalidField.String() {
		return invalidRequest("invalid client_id")
	}
	if code := registrationv1.ErrorReason_value[info.GetReason()]; code != 0 && info.GetReason() != apierr.ReasonInternal && info.GetReason() != apierr.ReasonStoreUnavailable {
		return invalidClient(registrationv1.ErrorReason(code), "client authentication failed")
	}
	return err
}

// checkSecret compares a presented secret with the stored digests, in
// constant time.
func (s *Service) checkSecret(rec *store.Client, presented string) (bool, error) {
	bad := invalidClient(rBadSecret, "client authentication failed")
	if presented == "" || len(presented) > maxSecretLen || rec.Secret == nil {
		return false, bad
	}
	now := s.Now()
	sec := rec.Secret
	current := sec.Hash.Matches(presented)
	previous := len(sec.PreviousHash) > 0 && now.Before(sec.PreviousExpireTime) && sec.PreviousHash.Matches(presented)
	switch {
	case current && !sec.ExpireTime.IsZero() && !now.Before(sec.ExpireTime):
		return false, invalidClient(rSecretExpired, "the client secret has expired")
	case current:
		return false, nil
	case previous:
		return true, nil
	}
	return false, bad
}

// checkAssertion verifies an RFC 7523 private_key_jwt assertion.
func (s *Service) checkAssertion(ctx context.Context, rec *store.Client, req *registrationv1.AuthenticateClientRequest) error {
	bad := func(msg string) error { return invalidClient(rBadAssertion, msg) }
	if req.GetClientAssertionType() != assertionTypeJWT {
		return bad("client_assertion_type must be " + assertionTypeJWT)
	}
	assertion := req.GetClientAssertion()
	if assertion == "" || len(assertion) > maxAssertionSize {
		return bad("client_assertion is missing or too large")
	}
	var keys jose.KeySource
	switch {
	case len(rec.Metadata.JWKS) > 0:
		set, err := s.Keys.Inline(rec.Metadata.JWKS)
		if err != nil {
			return bad("the client has no usable keys")
		}
		keys = set
	case rec.Metadata.JWKSURI != "":
		keys = s.Keys.Remote(rec.Metadata.JWKSURI)
	default:
		return bad("the client has no keys")
	}
	v, err := jose.NewVerifier(keys, jose.VerifierOptions{
		Algorithms:   assertionAlgorithms,
		Issuer:       rec.ClientID,
		ClockSkew:    assertionSkew,
		MaxTokenSize: maxAssertionSize,
		Now:          s.Now,
	})
	if err != nil {
		return err
	}
	var claims jose.RegisteredClaims
	if _, err := v.Verify(ctx, assertion, &claims); err != nil {
		s.Logger.DebugContext(ctx, "client assertion refused", "client_id", rec.ClientID, "error", err)
		return bad("the client assertion is invalid")
	}
	aud := claims.Audience.Contains(s.cfg.Issuer) ||
		(s.cfg.AssertionAudienceCompat && claims.Audience.Contains(req.GetEndpointUrl()))
	switch {
	case claims.Subject != rec.ClientID:
		return bad("the assertion's sub must be the client_id")
	case req.GetClientId() != "" && req.GetClientId() != rec.ClientID:
		return bad("the assertion is for another client")
	case !aud:
		return bad("the assertion's aud must be the issuer")
	case claims.Expiry == nil:
		return bad("the assertion has no exp")
	case claims.ID == "" || len(claims.ID) > maxJTILen:
		return bad("the assertion needs a jti")
	}
	from := s.Now()
	if claims.IssuedAt != nil {
		from = claims.IssuedAt.Time()
	}
	if claims.Expiry.Time().Sub(from) > maxAssertionWindow {
		return bad("the assertion's exp is more than 5 minutes after its iat")
	}
	err = s.Store.RememberJTI(ctx, rec.ClientID, claims.ID, claims.Expiry.Time().Add(assertionSkew))
	if errors.Is(err, store.ErrAlreadyExists) {
		return invalidClient(rReplayed, "the client assertion was already used")
	}
	return err
}

// unverifiedSubject reads the sub of an assertion to know which client's
// keys verify it; the signature check then confirms it.
func unverifiedSubject(assertion string) string {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 || len(assertion) > maxAssertionSize {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Sub
}
