package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/policy/internal/document"
	"github.com/mcpid/mcpid/services/policy/internal/effective"
	"github.com/mcpid/mcpid/services/policy/internal/store"
)

func normalizePolicy(p *policyv1.Policy) *policyv1.Policy       { return document.NormalizePolicy(p) }
func normalizeManifest(m *policyv1.Manifest) *policyv1.Manifest { return document.NormalizeManifest(m) }

// readYourWrite is how long a write waits for this replica's index to show
// it, so that a Check right after an apply on the same replica sees it. The
// write has committed either way.
const readYourWrite = 2 * time.Second

func (s *Server) awaitIndex(ctx context.Context, rev int64) {
	if rev == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, readYourWrite)
	defer cancel()
	_ = s.cfg.Index.WaitForRevision(wctx, rev)
}

// by is how the caller is recorded as a document's author.
func by(p principal.Principal) string {
	if p.Kind == principal.KindMCPServer {
		return "resource:" + p.Resource
	}
	return p.String()
}

// PublishManifest stores the caller's manifest.
func (s *Server) PublishManifest(ctx context.Context, req *policyv1.PublishManifestRequest) (*policyv1.PublishManifestResponse, error) {
	if req.GetManifest() == nil {
		return nil, invalidField("manifest", "required")
	}
	m := normalizeManifest(req.GetManifest())
	if document.ValidResource(m.GetResource()) {
		if err := ownResource(ctx, m.GetResource()); err != nil {
			return nil, err
		}
	}
	if vs := s.cfg.Validator.ValidateManifest(m, "manifest"); len(vs) > 0 {
		return nil, invalidDocument(policyv1.ErrorReason_ERROR_REASON_MANIFEST_INVALID, "manifest", vs)
	}
	p, _ := principal.FromContext(ctx)
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	res, err := s.cfg.Store.PublishManifest(sctx, store.PublishManifestRequest{
		Manifest: m,
		By:       by(p),
		Now:      s.cfg.Now(),
		Event: func(_, updated *store.Record) (*auditv1.Event, error) {
			eff := effective.Build(updated.Resource, updated.Policy, updated.Manifest, nil)
			return &auditv1.Event{
				Type:     auditv1.EventType_EVENT_TYPE_TOOL_MANIFEST_PUBLISHED,
				Actor:    actorOf(p),
				Resource: updated.Resource,
				Details: details(map[string]any{
					"version": m.GetServerVersion(),
					"drift":   len(eff.Drift.GetItems()) > 0 && updated.Policy != nil,
				}),
			}, nil
		},
	})
	if err != nil {
		return nil, storeError(err)
	}
	if res.Changed {
		s.awaitIndex(ctx, res.Revision)
	}
	eff := effective.Build(res.Record.Resource, res.Record.Policy, res.Record.Manifest, nil)
	return &policyv1.PublishManifestResponse{
		Manifest:   res.Record.Manifest,
		Changed:    res.Changed,
		State:      eff.Effective.GetState(),
		DriftCount: int32(len(eff.Drift.GetItems())), //nolint:gosec // bounded by the document limits
	}, nil
}

func details(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil
	}
	return s
}

// GetManifest returns the stored manifest.
func (s *Server) GetManifest(ctx context.Context, req *policyv1.GetManifestRequest) (*policyv1.GetManifestResponse, error) {
	res, err := canonical("resource", req.GetResource())
	if err != nil {
		return nil, err
	}
	if err := ownResource(ctx, res); err != nil {
		return nil, err
	}
	rec, err := s.get(ctx, res)
	if err != nil {
		return nil, err
	}
	if rec == nil || rec.Manifest == nil {
		return nil, notFound(policyv1.ErrorReason_ERROR_REASON_MANIFEST_NOT_FOUND, "the resource has no published manifest")
	}
	return &policyv1.GetManifestResponse{Manifest: rec.Manifest}, nil
}

// get reads a record from etcd; nil when there is none.
func (s *Server) get(ctx context.Context, res string) (*store.Record, error) {
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	rec, err := s.cfg.Store.Get(sctx, res)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil //nolint:nilnil // absent is not an error here
	}
	if err != nil {
		return nil, storeError(err)
	}
	return rec, nil
}

// PutPolicy creates or replaces an operator policy.
func (s *Server) PutPolicy(ctx context.Context, req *policyv1.PutPolicyRequest) (*policyv1.PutPolicyResponse, error) {
	if req.GetPolicy() == nil {
		return nil, invalidField("policy", "required")
	}
	pol := normalizePolicy(req.GetPolicy())
	if !document.ValidResource(pol.GetResource()) {
		// Without a resource there is no record to validate against.
		return nil, invalidDocument(policyv1.ErrorReason_ERROR_REASON_POLICY_INVALID, "policy", s.cfg.Validator.ValidatePolicy(pol, nil, "policy"))
	}
	if exp := req.ExpectedRevision; exp != nil && *exp < 0 {
		return nil, invalidField("expected_revision", "must not be negative")
	}
	p, _ := principal.FromContext(ctx)
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	res, err := s.cfg.Store.PutPolicy(sctx, store.PutPolicyRequest{
		Policy:           pol,
		ExpectedRevision: req.ExpectedRevision,
		ValidateOnly:     req.GetValidateOnly(),
		Validate: func(man *policyv1.Manifest) error {
			if vs := s.cfg.Validator.ValidatePolicy(pol, man, "policy"); len(vs) > 0 {
				return invalidDocument(policyv1.ErrorReason_ERROR_REASON_POLICY_INVALID, "policy", vs)
			}
			return nil
		},
		By:  by(p),
		Now: s.cfg.Now(),
		Event: func(old, _ *store.Record) (*auditv1.Event, error) {
			d := map[string]any{
				"version": digest(pol),
				"tools":   float64(len(pol.GetTools())),
				"scopes":  float64(len(pol.GetScopes())),
			}
			if old != nil && old.Policy != nil {
				d["previous_revision"] = float64(old.Policy.GetRevision())
			}
			return &auditv1.Event{
				Type:     auditv1.EventType_EVENT_TYPE_POLICY_UPDATED,
				Actor:    actorOf(p),
				Resource: pol.GetResource(),
				Details:  details(d),
			}, nil
		},
	})
	if err != nil {
		return nil, storeError(err)
	}
	if res.Changed && !req.GetValidateOnly() {
		s.awaitIndex(ctx, res.Revision)
	}
	eff := effective.Build(res.Record.Resource, res.Record.Policy, res.Record.Manifest, nil)
	return &policyv1.PutPolicyResponse{
		Policy:     res.Record.Policy,
		Effective:  eff.Effective,
		Changed:    res.Changed,
		DriftCount: int32(len(eff.Drift.GetItems())), //nolint:gosec // bounded by the document limits
	}, nil
}

// digest identifies a policy's content in audit events: the revision of the
// write is not known inside its own transaction.
func digest(p *policyv1.Policy) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// GetPolicy returns the stored operator policy.
func (s *Server) GetPolicy(ctx context.Context, req *policyv1.GetPolicyRequest) (*policyv1.GetPolicyResponse, error) {
	res, err := canonical("resource", req.GetResource())
	if err != nil {
		return nil, err
	}
	rec, err := s.get(ctx, res)
	if err != nil {
		return nil, err
	}
	if rec == nil || rec.Policy == nil {
		return nil, notFound(policyv1.ErrorReason_ERROR_REASON_POLICY_NOT_FOUND, "the resource has no operator policy")
	}
	return &policyv1.GetPolicyResponse{Policy: rec.Policy}, nil
}

// DeletePolicy removes a resource's policy and manifest.
func (s *Server) DeletePolicy(ctx context.Context, req *policyv1.DeletePolicyRequest) (*policyv1.DeletePolicyResponse, error) {
	res, err := canonical("resource", req.GetResource())
	if err != nil {
		return nil, err
	}
	if exp := req.ExpectedRevision; exp != nil && *exp < 0 {
		return nil, invalidField("expected_revision", "must not be negative")
	}
	p, _ := principal.FromContext(ctx)
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	out, err := s.cfg.Store.Delete(sctx, store.DeleteRequest{
		Resource:         res,
		ExpectedRevision: req.ExpectedRevision,
		Event: func(old *store.Record) (*auditv1.Event, error) {
			d := map[string]any{}
			if old.Policy != nil {
				d["policy_revision"] = float64(old.Policy.GetRevision())
			}
			if old.Manifest != nil {
				d["manifest_revision"] = float64(old.Manifest.GetRevision())
			}
			return &auditv1.Event{
				Type:     auditv1.EventType_EVENT_TYPE_POLICY_DELETED,
				Actor:    actorOf(p),
				Resource: res,
				Details:  details(d),
			}, nil
		},
	})
	if err != nil {
		return nil, storeError(err)
	}
	s.awaitIndex(ctx, out.Revision)
	return &policyv1.DeletePolicyResponse{}, nil
}

// GetEffectivePolicy returns the merged policy from this replica's index.
func (s *Server) GetEffectivePolicy(ctx context.Context, req *policyv1.GetEffectivePolicyRequest) (*policyv1.GetEffectivePolicyResponse, error) {
	r, err := s.indexed(ctx, req.GetResource(), true)
	if err != nil {
		return nil, err
	}
	return &policyv1.GetEffectivePolicyResponse{Effective: r.Effective}, nil
}

// indexed returns a resource from the index, checking the request's
// resource and, when own, that an MCP server asks about its own.
func (s *Server) indexed(ctx context.Context, raw string, own bool) (*effective.Resource, error) {
	res, err := canonical("resource", raw)
	if err != nil {
		return nil, err
	}
	if own {
		if err := ownResource(ctx, res); err != nil {
			return nil, err
		}
	}
	if !s.cfg.Index.Ready() {
		return nil, notSynced()
	}
	r, ok := s.cfg.Index.Get(res)
	if !ok {
		return nil, notFound(policyv1.ErrorReason_ERROR_REASON_RESOURCE_NOT_FOUND, "the resource has neither an operator policy nor a manifest")
	}
	return r, nil
}
