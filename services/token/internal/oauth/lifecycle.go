package oauth

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// The token lifecycle (issue 8): the grant inventory, revocation of grants by
// grant, user, client or resource with "issued before" watermarks, and
// remembered consents. Access tokens are never stored: a grant revocation
// publishes the grant_id, a bulk revocation a watermark, and every follower
// of the revocation feed rejects the matching tokens.

func grantNotFound(id string) error {
	return apierr.New(codes.NotFound, tokenv1.ErrorReason_ERROR_REASON_GRANT_NOT_FOUND.String(), "no live grant %q", id)
}

func pageErr2(err error) error {
	if errors.Is(err, etcdstore.ErrInvalidPageToken) || errors.Is(err, etcdstore.ErrPageTokenExpired) {
		return apierr.New(codes.InvalidArgument, apierr.ReasonPageTokenInvalid, "page_token is invalid or expired")
	}
	return storeErr(err)
}

// GetGrant returns a live grant.
func (s *Service) GetGrant(ctx context.Context, id string) (*store.Grant, error) {
	vg, err := s.d.Store.GetGrant(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, grantNotFound(id)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	return vg.Value, nil
}

// ListGrants lists live grants, one page.
func (s *Service) ListGrants(ctx context.Context, f store.GrantFilter, pageSize int, pageToken string) ([]*store.Grant, string, error) {
	gs, next, err := s.d.Store.ListGrants(ctx, f, pageSize, pageToken)
	if err != nil {
		return nil, "", pageErr2(err)
	}
	return gs, next, nil
}

// RevokeSelector names what RevokeGrants revokes: exactly one field is set.
type RevokeSelector struct {
	GrantID, UserID, ClientID, Resource string
}

// RevokeResult reports a revocation.
type RevokeResult struct {
	// Revision is the etcd revision of the revocation entry; a feed
	// follower at or past it rejects the revoked tokens.
	Revision int64
	// IssuedBefore is the watermark (zero for a single grant).
	IssuedBefore time.Time
	// Grants is how many grant records were deleted.
	Grants int
}

// watermark is the "issued before" time of a revocation made now: the next
// whole second after now plus the clock skew margin, so a token issued in
// the same second (iat has second precision) is rejected too, and so is one
// minted a moment earlier by a replica whose clock runs ahead by up to the
// margin.
func (s *Service) watermark() time.Time {
	return s.d.Now().UTC().Add(s.cfg.RevocationSkew).Truncate(time.Second).Add(time.Second)
}

// RevokeGrants revokes one grant, or every grant of a user, client or
// resource together with a watermark. It is idempotent: a retry finishes a
// partial revocation, and revoking again sets a new watermark.
func (s *Service) RevokeGrants(ctx context.Context, actor *auditv1.Actor, sel RevokeSelector, reason string) (RevokeResult, error) {
	if sel.GrantID != "" {
		g, err := s.GetGrant(ctx, sel.GrantID)
		if err != nil {
			return RevokeResult{}, err
		}
		op, err := s.d.Events.Op(ctx, events.GrantRevoked(actor, "grant", reason, g.UserID, g.ClientID, g.Resource, g.ID, 1))
		if err != nil {
			return RevokeResult{}, err
		}
		found, rev, err := s.d.Store.RevokeGrant(ctx, g.ID, s.revocationFor(g.ID, g.Resource), op)
		if err != nil {
			return RevokeResult{}, storeErr(err)
		}
		s.awaitRevocation(ctx, rev)
		n := 0
		if found {
			n = 1
		}
		return RevokeResult{Revision: rev, Grants: n}, nil
	}
	var by, id, kind string
	switch {
	case sel.UserID != "":
		if _, err := s.d.Store.GetUser(ctx, sel.UserID); err != nil {
			return RevokeResult{}, userStoreErr(sel.UserID, err)
		}
		by, id, kind = store.ByUser, sel.UserID, store.RevokeUser
	case sel.ClientID != "":
		by, id, kind = store.ByClient, sel.ClientID, store.RevokeClient
	case sel.Resource != "":
		by, id, kind = store.ByResource, sel.Resource, store.RevokeResource
	default:
		return RevokeResult{}, apierr.New(codes.InvalidArgument, apierr.ReasonInvalidField, "a selector is required").WithMetadata("field", "selector")
	}
	// The audit event rides in the watermark's transaction (a state change
	// and its event commit together); it counts the grants held when the
	// revocation was decided.
	held, err := s.d.Store.ListGrantIDs(ctx, by, id)
	if err != nil {
		return RevokeResult{}, storeErr(err)
	}
	ev := events.GrantRevoked(actor, by, reason, "", "", "", "", len(held))
	switch kind {
	case store.RevokeUser:
		ev.UserId = id
	case store.RevokeClient:
		ev.ClientId = id
	case store.RevokeResource:
		ev.Resource = id
	}
	op, err := s.d.Events.Op(ctx, ev)
	if err != nil {
		return RevokeResult{}, err
	}
	// The watermark first, then the grants: a code redemption or refresh
	// that commits after the grant listing below reads the watermark back
	// after its commit (CutoffRevision) and undoes itself; one that
	// committed before it is listed and deleted here.
	before := s.watermark()
	rev, err := s.d.Store.PutRevocation(ctx, &store.Revocation{
		Kind: kind, ID: id, IssuedBefore: before, Expires: before.Add(s.maxTokTTL + time.Minute),
	}, op)
	if err != nil {
		return RevokeResult{}, storeErr(err)
	}
	ids, err := s.d.Store.ListGrantIDs(ctx, by, id)
	if err != nil {
		return RevokeResult{}, storeErr(err)
	}
	n := 0
	for _, gid := range ids {
		found, err := s.d.Store.DeleteGrant(ctx, gid)
		if err != nil {
			return RevokeResult{}, storeErr(err)
		}
		if found {
			n++
		}
	}
	s.awaitRevocation(ctx, rev)
	return RevokeResult{Revision: rev, IssuedBefore: before, Grants: n}, nil
}

// ListConsents lists remembered consents, one page.
func (s *Service) ListConsents(ctx context.Context, f store.ConsentFilter, pageSize int, pageToken string) ([]*store.Consent, string, error) {
	cs, next, err := s.d.Store.ListConsents(ctx, f, pageSize, pageToken)
	if err != nil {
		return nil, "", pageErr2(err)
	}
	return cs, next, nil
}

// ConsentSelector names what RevokeConsents forgets: one consent (all three
// fields), every consent of a user (UserID only) or of a client (ClientID
// only).
type ConsentSelector struct {
	UserID, ClientID, Resource string
}

// ConsentResult reports a consent revocation.
type ConsentResult struct {
	Consents, Grants int
	// Revision of the last grant revocation written (0 if none).
	Revision int64
}

// RevokeConsents forgets consents and, unless keepGrants, revokes the
// authorization_code grants of the same (user, client, resource) triples by
// grant_id. Idempotent.
func (s *Service) RevokeConsents(ctx context.Context, actor *auditv1.Actor, sel ConsentSelector, keepGrants bool, reason string) (ConsentResult, error) {
	var targets []*store.Consent
	switch {
	case sel.UserID != "" && sel.ClientID != "" && sel.Resource != "":
		c, err := s.d.Store.GetConsent(ctx, sel.UserID, sel.ClientID, sel.Resource)
		if errors.Is(err, store.ErrNotFound) {
			return ConsentResult{}, apierr.New(codes.NotFound, tokenv1.ErrorReason_ERROR_REASON_CONSENT_NOT_FOUND.String(), "no such consent")
		}
		if err != nil {
			return ConsentResult{}, storeErr(err)
		}
		targets = []*store.Consent{c}
	case sel.UserID != "" || sel.ClientID != "":
		if sel.UserID != "" {
			if _, err := s.d.Store.GetUser(ctx, sel.UserID); err != nil {
				return ConsentResult{}, userStoreErr(sel.UserID, err)
			}
		}
		f := store.ConsentFilter{UserID: sel.UserID, ClientID: sel.ClientID}
		token := ""
		for {
			cs, next, err := s.d.Store.ListConsents(ctx, f, etcdstore.MaxPageSize, token)
			if err != nil {
				return ConsentResult{}, storeErr(err)
			}
			targets = append(targets, cs...)
			if next == "" {
				break
			}
			token = next
		}
	default:
		return ConsentResult{}, apierr.New(codes.InvalidArgument, apierr.ReasonInvalidField, "a selector is required").WithMetadata("field", "selector")
	}
	var res ConsentResult
	for _, c := range targets {
		op, err := s.d.Events.Op(ctx, events.ConsentRevoked(actor, c.UserID, c.ClientID, c.Resource, reason, keepGrants))
		if err != nil {
			return res, err
		}
		found, err := s.d.Store.DeleteConsent(ctx, c.UserID, c.ClientID, c.Resource, op)
		if err != nil {
			return res, storeErr(err)
		}
		if found {
			res.Consents++
		}
	}
	if keepGrants {
		return res, nil
	}
	if err := s.cutCodes(ctx, sel.UserID, sel.ClientID, sel.Resource); err != nil {
		return res, err
	}
	g, err := s.revokeTripleGrants(ctx, actor, sel, reason)
	g.Consents = res.Consents
	return g, err
}

// revokeTripleGrants revokes, each by grant_id, the authorization_code grants
// matching sel (user and/or client, optionally one resource).
func (s *Service) revokeTripleGrants(ctx context.Context, actor *auditv1.Actor, sel ConsentSelector, reason string) (ConsentResult, error) {
	var res ConsentResult
	// The grants of the same triples: found through the user or client
	// index, whichever the selector names.
	by, id := store.ByUser, sel.UserID
	if id == "" {
		by, id = store.ByClient, sel.ClientID
	}
	ids, err := s.d.Store.ListGrantIDs(ctx, by, id)
	if err != nil {
		return res, storeErr(err)
	}
	for _, gid := range ids {
		vg, err := s.d.Store.GetGrant(ctx, gid)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return res, storeErr(err)
		}
		g := vg.Value
		if g.Type != store.GrantAuthorizationCode || (sel.ClientID != "" && g.ClientID != sel.ClientID) ||
			(sel.Resource != "" && g.Resource != sel.Resource) {
			continue
		}
		op, err := s.d.Events.Op(ctx, events.GrantRevoked(actor, "consent", reason, g.UserID, g.ClientID, g.Resource, g.ID, 1))
		if err != nil {
			return res, err
		}
		found, rev, err := s.d.Store.RevokeGrant(ctx, g.ID, s.revocationFor(g.ID, g.Resource), op)
		if err != nil {
			return res, storeErr(err)
		}
		if found {
			res.Grants++
		}
		res.Revision = rev
	}
	s.awaitRevocation(ctx, res.Revision)
	return res, nil
}

// cutCodes stops the authorization codes of (user, client, resource) issued
// so far (an empty field matches all): written before the grants are
// revoked, so a redemption either created its grant in time to be revoked
// or reads the cut-off after its commit and undoes itself.
func (s *Service) cutCodes(ctx context.Context, userID, clientID, res string) error {
	// The selectors are a triple, a user or a client: the three shapes
	// CutoffRevision reads.
	if userID == "" && clientID == "" {
		return nil
	}
	if err := s.d.Store.PutCodeCutoff(ctx, userID, clientID, res, s.d.Now().UTC().Add(s.cfg.CodeTTL+time.Minute)); err != nil {
		return storeErr(err)
	}
	return nil
}

// undoIfRevoked is the second half of the revocation handshake for a grant
// this call has just created or rotated: when a USER, CLIENT or RESOURCE
// watermark or a code cut-off of the grant was written after issuedRev (the
// code's or the grant's creation revision), the revocation raced this call;
// its grant listing may have missed the grant, so the grant is deleted here
// and the call answers invalid_grant.
func (s *Service) undoIfRevoked(ctx context.Context, g *store.Grant, issuedRev int64) error {
	cut, err := s.d.Store.CutoffRevision(ctx, g.UserID, g.ClientID, g.Resource)
	if err != nil {
		return storeErr(err)
	}
	if cut <= issuedRev {
		return nil
	}
	if _, err := s.d.Store.DeleteGrant(ctx, g.ID); err != nil {
		return storeErr(err)
	}
	return oauthErr("invalid_grant", "the grant was revoked")
}
