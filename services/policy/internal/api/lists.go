package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/services/policy/internal/effective"
	"github.com/mcpid/mcpid/services/policy/internal/store"
)

// Page sizes of the list methods (contract).
const (
	defaultPolicyPage  = 100
	maxPolicyPage      = 500
	defaultCatalogPage = 100
	maxCatalogPage     = 500
	defaultDriftPage   = 50
	maxDriftPage       = 200
)

func pageSize(n int32, def, maxN int) int {
	switch {
	case n <= 0:
		return def
	case int(n) > maxN:
		return maxN
	default:
		return int(n)
	}
}

// ListPolicies lists resources from etcd, filtered by state. The store's
// page token is bound to the filter by a prefix.
func (s *Server) ListPolicies(ctx context.Context, req *policyv1.ListPoliciesRequest) (*policyv1.ListPoliciesResponse, error) {
	state := req.GetState()
	if _, known := policyv1.ResourceState_name[int32(state)]; !known {
		return nil, invalidField("state", "unknown state %d", state)
	}
	want := pageSize(req.GetPageSize(), defaultPolicyPage, maxPolicyPage)
	tag := strconv.Itoa(int(state)) + "."
	inner := ""
	if t := req.GetPageToken(); t != "" {
		var ok bool
		if inner, ok = strings.CutPrefix(t, tag); !ok || inner == "" {
			return nil, pageTokenInvalid()
		}
	}
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	resp := &policyv1.ListPoliciesResponse{}
	for {
		recs, next, err := s.cfg.Store.List(sctx, want-len(resp.Policies), inner)
		if errors.Is(err, store.ErrCompacted) {
			return nil, pageTokenInvalid() // the listing's revision expired: start again
		}
		if err != nil {
			return nil, storeError(err)
		}
		for _, rec := range recs {
			sum := effective.Build(rec.Resource, rec.Policy, rec.Manifest, nil).Summary
			if state == policyv1.ResourceState_RESOURCE_STATE_UNSPECIFIED || sum.GetState() == state {
				resp.Policies = append(resp.Policies, sum)
			}
		}
		inner = next
		if next == "" || len(resp.Policies) >= want {
			break
		}
	}
	if inner != "" {
		resp.NextPageToken = tag + inner
	}
	return resp, nil
}

// GetScopeCatalog returns an ACTIVE resource's catalogue from the index.
func (s *Server) GetScopeCatalog(ctx context.Context, req *policyv1.GetScopeCatalogRequest) (*policyv1.GetScopeCatalogResponse, error) {
	r, err := s.indexed(ctx, req.GetResource(), true)
	if err != nil {
		return nil, err
	}
	if r.Catalog == nil {
		return nil, notFound(policyv1.ErrorReason_ERROR_REASON_RESOURCE_NOT_FOUND, "the resource is not active (no operator policy)")
	}
	return &policyv1.GetScopeCatalogResponse{Catalog: r.Catalog}, nil
}

// catalogToken is ListScopeCatalogs' page token: the listing's revision and
// the last resource returned.
type catalogToken struct {
	Kind     string `json:"k"`
	Revision int64  `json:"r"`
	After    string `json:"a"`
}

const catalogTokenKind = "catalogs/1"

// ListScopeCatalogs reads the catalogues of ACTIVE resources at one
// revision, from etcd.
func (s *Server) ListScopeCatalogs(ctx context.Context, req *policyv1.ListScopeCatalogsRequest) (*policyv1.ListScopeCatalogsResponse, error) {
	limit := pageSize(req.GetPageSize(), defaultCatalogPage, maxCatalogPage)
	var tok catalogToken
	if t := req.GetPageToken(); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		if err != nil || json.Unmarshal(b, &tok) != nil || tok.Kind != catalogTokenKind || tok.Revision <= 0 || tok.After == "" {
			return nil, pageTokenInvalid()
		}
	}
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	resp := &policyv1.ListScopeCatalogsResponse{}
	rev, after := tok.Revision, tok.After
	for {
		recs, readRev, more, err := s.cfg.Store.ListAt(sctx, rev, after, limit-len(resp.Catalogs))
		if errors.Is(err, store.ErrFutureRevision) {
			return nil, pageTokenInvalid()
		}
		if err != nil {
			return nil, storeError(err)
		}
		rev = readRev
		for _, rec := range recs {
			after = rec.Resource
			if c := effective.Build(rec.Resource, rec.Policy, rec.Manifest, nil).Catalog; c != nil {
				resp.Catalogs = append(resp.Catalogs, c)
			}
		}
		if !more || len(recs) == 0 {
			after = ""
			break
		}
		if len(resp.Catalogs) >= limit {
			break
		}
	}
	resp.Revision = rev
	if after != "" {
		b, _ := json.Marshal(catalogToken{Kind: catalogTokenKind, Revision: rev, After: after})
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString(b)
	}
	return resp, nil
}

// WatchScopeCatalogs streams catalogue changes from a revision.
func (s *Server) WatchScopeCatalogs(req *policyv1.WatchScopeCatalogsRequest, stream grpc.ServerStreamingServer[policyv1.WatchScopeCatalogsResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	start := req.GetStartRevision()
	if start < 0 {
		return invalidField("start_revision", "must not be negative")
	}
	sctx, scancel := s.storeCtx(ctx)
	cur, err := s.cfg.Store.CurrentRevision(sctx)
	scancel()
	if err != nil {
		return storeError(err)
	}
	if start == 0 {
		start = cur + 1
	}
	if start > cur+1 {
		return storeError(&store.RevisionError{Err: store.ErrFutureRevision, Revision: cur})
	}

	// The watch callback and the heartbeat both send; a stream allows one
	// sender at a time.
	var mu sync.Mutex
	last := start - 1
	sent := make(chan struct{}, 1)
	send := func(m *policyv1.WatchScopeCatalogsResponse) error {
		mu.Lock()
		defer mu.Unlock()
		if m.GetRevision() < last {
			return nil // a progress notification behind what was sent
		}
		if err := stream.Send(m); err != nil {
			return err
		}
		last = m.GetRevision()
		select {
		case sent <- struct{}{}:
		default:
		}
		return nil
	}
	// Everything before start is what the caller listed: say so at once, so
	// it knows the stream is established.
	if err := send(&policyv1.WatchScopeCatalogsResponse{Revision: start - 1}); err != nil {
		return err
	}
	go s.heartbeat(ctx, sent, func() error {
		mu.Lock()
		rev := last
		mu.Unlock()
		return send(&policyv1.WatchScopeCatalogsResponse{Revision: rev})
	})

	err = s.cfg.Store.Watch(ctx, start, func(wr store.WatchResponse) error {
		msg := &policyv1.WatchScopeCatalogsResponse{Revision: wr.Revision}
		for _, ch := range wr.Changes {
			var now, before *policyv1.ScopeCatalog
			if ch.Record != nil {
				now = effective.Build(ch.Record.Resource, ch.Record.Policy, ch.Record.Manifest, nil).Catalog
			}
			if ch.Prev != nil {
				before = effective.Build(ch.Prev.Resource, ch.Prev.Policy, ch.Prev.Manifest, nil).Catalog
			}
			if now == nil && before == nil {
				continue // a PENDING resource: never known to the token service
			}
			msg.Changes = append(msg.Changes, &policyv1.ScopeCatalogChange{Resource: ch.Resource, Catalog: now})
		}
		return send(msg)
	})
	if ctx.Err() != nil {
		return nil //nolint:nilerr // the caller went away or the server stops
	}
	var re *store.RevisionError
	if errors.As(err, &re) {
		return storeError(err)
	}
	// The watch broke (etcd unreachable, leader lost): the caller resumes
	// from its last revision + 1.
	return apierr.New(codes.Unavailable, reason(policyv1.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE),
		"the catalogue watch ended; resume from the last revision + 1").WithCause(err)
}

// heartbeat keeps a quiet catalogue stream talking: after each quiet
// interval it asks etcd for a progress notification (which brings the
// revision forward once etcd has moved past the watch's start) and sends
// the revision already delivered, which is always true and tells the
// follower the stream is alive.
func (s *Server) heartbeat(ctx context.Context, sent <-chan struct{}, beat func() error) {
	t := time.NewTimer(s.cfg.ProgressInterval)
	defer t.Stop()
	progress, _ := s.cfg.Store.(interface {
		RequestProgress(context.Context) error
	})
	for {
		select {
		case <-ctx.Done():
			return
		case <-sent:
		case <-t.C:
			if progress != nil {
				_ = progress.RequestProgress(ctx)
			}
			if beat() != nil {
				return
			}
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(s.cfg.ProgressInterval)
	}
}

// GetDrift reports a resource's drift from the index.
func (s *Server) GetDrift(ctx context.Context, req *policyv1.GetDriftRequest) (*policyv1.GetDriftResponse, error) {
	r, err := s.indexed(ctx, req.GetResource(), false)
	if err != nil {
		return nil, err
	}
	return &policyv1.GetDriftResponse{Report: r.Drift}, nil
}

const driftTokenPrefix = "drift/1."

// ListDrift pages through the resources with drift, from the index.
func (s *Server) ListDrift(_ context.Context, req *policyv1.ListDriftRequest) (*policyv1.ListDriftResponse, error) {
	limit := pageSize(req.GetPageSize(), defaultDriftPage, maxDriftPage)
	after := ""
	if t := req.GetPageToken(); t != "" {
		enc, ok := strings.CutPrefix(t, driftTokenPrefix)
		b, err := base64.RawURLEncoding.DecodeString(enc)
		if !ok || err != nil || len(b) == 0 {
			return nil, pageTokenInvalid()
		}
		after = string(b)
	}
	if !s.cfg.Index.Ready() {
		return nil, notSynced()
	}
	all, _ := s.cfg.Index.Snapshot()
	resp := &policyv1.ListDriftResponse{}
	for _, r := range all {
		if r.Name <= after || len(r.Drift.GetItems()) == 0 {
			continue
		}
		if len(resp.Reports) == limit {
			resp.NextPageToken = driftTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(resp.Reports[limit-1].GetResource()))
			break
		}
		resp.Reports = append(resp.Reports, r.Drift)
	}
	return resp, nil
}
