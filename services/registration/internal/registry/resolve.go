package registry

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/services/registration/internal/cimd"
	"github.com/mcpid/mcpid/services/registration/internal/store"
)

// Resolve answers ResolveClient: the stored client, or the CIMD client,
// fetched when its cached document is stale.
func (s *Service) Resolve(ctx context.Context, c Caller, id string) (*registrationv1.Client, error) {
	rec, err := s.resolve(ctx, c, id)
	if err != nil {
		return nil, err
	}
	if err := s.recordUse(ctx, rec); err != nil {
		return nil, err
	}
	return s.clientView(rec), nil
}

// resolve finds a client by id, resolving CIMD URLs.
func (s *Service) resolve(ctx context.Context, c Caller, id string) (*store.Client, error) {
	if id == "" || len(id) > maxClientIDLen {
		return nil, fieldErr("client_id", "required, at most %d characters", maxClientIDLen)
	}
	if cimd.IsURL(id) {
		if s.CIMD == nil {
			return nil, mcpidErr(codes.NotFound, rNotFound, "no client %q (metadata documents are disabled)", clip(id))
		}
		return s.resolveCIMD(ctx, c, id)
	}
	rec, err := s.Clients.GetClient(ctx, id)
	if err != nil {
		return nil, storeErr(err, id)
	}
	if rec.Expired(s.Now()) {
		return nil, storeErr(store.ErrNotFound, id)
	}
	return rec, nil
}

func cimdErr(err error) error {
	var e *cimd.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Kind {
	case cimd.KindNotTrusted:
		return mcpidErr(codes.PermissionDenied, rCIMDNotTrusted, "%s", e.Message)
	case cimd.KindRefused:
		return mcpidErr(codes.FailedPrecondition, rCIMDRefused, "%s", e.Message).WithCause(e)
	case cimd.KindInvalid:
		return mcpidErr(codes.FailedPrecondition, rCIMDInvalid, "%s", e.Message).WithCause(e)
	}
	return mcpidErr(codes.Unavailable, rCIMDFailed, "%s", e.Message).WithCause(e)
}

// resolveCIMD returns the client of a metadata document URL.
func (s *Service) resolveCIMD(ctx context.Context, c Caller, id string) (*store.Client, error) {
	if _, err := cimd.CheckURL(id); err != nil {
		s.rejected(ctx, c, "", store.SourceCIMD, cimdErr(err))
		return nil, cimdErr(err)
	}
	now := s.Now()
	rec, err := s.Store.GetClient(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		rec = nil
	case err != nil:
		return nil, err
	case rec.Source != store.SourceCIMD:
		// Only this package creates URL client_ids, all as CIMD clients.
		return nil, storeErr(store.ErrNotFound, id)
	case rec.Expired(now):
		// Its lease ran out and the expiry worker has not removed it yet:
		// finish the expiry, then resolve afresh.
		if err := s.ExpireClient(ctx, id, 0); err != nil {
			return nil, err
		}
		rec = nil
	case rec.CIMD != nil && now.Before(rec.CIMD.StaleTime):
		return rec, nil
	}

	doc, err := s.CIMD.Fetch(ctx, id)
	if err != nil {
		var ce *cimd.Error
		if errors.As(err, &ce) && ce.Kind == cimd.KindFailed && rec != nil && rec.CIMD != nil &&
			now.Before(rec.CIMD.FetchTime.Add(s.cfg.CIMDMaxStale)) {
			s.Logger.WarnContext(ctx, "serving a stale metadata document", "client_id", id, "error", err)
			return rec, nil
		}
		mapped := cimdErr(err)
		if !errors.As(err, &ce) || ce.Kind != cimd.KindFailed {
			s.rejected(ctx, c, id, store.SourceCIMD, mapped)
		}
		return nil, mapped
	}
	if rec == nil {
		return s.createCIMD(ctx, c, id, doc)
	}
	return s.refreshCIMD(ctx, c, id, doc)
}

func (s *Service) domainVerification(doc *cimd.Document, id string) store.Verification {
	now := s.Now()
	host, _ := cimd.CheckURL(id)
	if doc.Verified() {
		return store.Verification{Status: store.StatusVerified, Method: store.MethodTrustedCIMDDomain, UpdatedBy: whoService, UpdateTime: now, Reason: "trusted CIMD domain " + host}
	}
	reason := "metadata document"
	if doc.Trust == cimd.Trusted {
		reason = "trusted CIMD domain " + host + ", but every redirect URI is local"
	}
	return store.Verification{Status: store.StatusUnverified, UpdatedBy: whoService, UpdateTime: now, Reason: reason}
}

func (s *Service) createCIMD(ctx context.Context, c Caller, id string, doc *cimd.Document) (*store.Client, error) {
	if err := s.checkCap(ctx); err != nil {
		return nil, err
	}
	if err := s.checkJWKSURI(ctx, doc.Metadata, ""); err != nil {
		err = mcpidErr(codes.FailedPrecondition, rCIMDInvalid, "the metadata document's jwks_uri serves no usable key")
		s.rejected(ctx, c, id, store.SourceCIMD, err)
		return nil, err
	}
	now := s.Now()
	rec := &store.Client{
		ClientID:     id,
		Source:       store.SourceCIMD,
		Metadata:     *doc.Metadata,
		Verification: s.domainVerification(doc, id),
		CIMD:         &store.CIMDDocument{FetchTime: doc.FetchTime, StaleTime: doc.StaleTime, DocumentSHA256: doc.SHA256},
		CreatedBy:    whoService,
		CreateTime:   now,
		UpdateTime:   now,
	}
	rec.ExpireTime, rec.IdleExpiry = s.idleExpiry(now)
	ops, err := s.outboxOps(ctx, noCaller.event(auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED, actorService, id, "", registeredDetails(rec)))
	if err != nil {
		return nil, err
	}
	if _, err := s.Store.CreateClient(ctx, rec, store.CreateOptions{Extra: ops}); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			// Another replica resolved it at the same moment.
			return s.Store.GetClient(ctx, id)
		}
		return nil, err
	}
	return rec, nil
}

// refreshCIMD applies a re-fetched document. The same document only moves
// the fetch times; a changed one replaces the metadata (a change of
// redirect URIs starts a new consent epoch and re-derives verification;
// an operator's suspension, and an operator's verification while the
// redirect URIs stay, are kept).
func (s *Service) refreshCIMD(ctx context.Context, c Caller, id string, doc *cimd.Document) (*store.Client, error) {
	if err := s.checkJWKSURI(ctx, doc.Metadata, ""); err != nil {
		return nil, mcpidErr(codes.FailedPrecondition, rCIMDInvalid, "the metadata document's jwks_uri serves no usable key")
	}
	rec, err := s.updateClient(ctx, id, func(rec *store.Client) ([]etcdstore.Op, error) {
		same := rec.CIMD != nil && rec.CIMD.DocumentSHA256 == doc.SHA256
		rec.CIMD = &store.CIMDDocument{FetchTime: doc.FetchTime, StaleTime: doc.StaleTime, DocumentSHA256: doc.SHA256}
		if same {
			return nil, nil
		}
		evs, _ := s.applyMetadata(noCaller, rec, doc.Metadata, nil, false)
		for _, ev := range evs {
			ev.Actor = actorService
		}
		prev := rec.Verification
		byDomain := prev.Status == store.StatusVerified && prev.Method == store.MethodTrustedCIMDDomain
		if prev.Status == store.StatusUnverified || byDomain {
			next := s.domainVerification(doc, id)
			if next.Status != prev.Status {
				rec.Verification = next
				evs = append(evs, verificationEvent(noCaller, actorService, rec, "trusted_cimd_domain"))
			}
		}
		return s.outboxOps(ctx, evs...)
	})
	if err != nil {
		return nil, storeErr(err, id)
	}
	return rec, nil
}
