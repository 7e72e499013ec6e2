// Package api implements the PolicyService gRPC contract on the domain
// packages: caller checks beyond the method allowlist (an MCP server acts on
// its own resource only), request validation, the mapping of domain errors
// to statuses, and audit events (decisions through the batched emitter,
// changes through the store's outbox).
package api

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/lib/resource"
	"github.com/mcpid/mcpid/services/policy/internal/condition"
	"github.com/mcpid/mcpid/services/policy/internal/decision"
	"github.com/mcpid/mcpid/services/policy/internal/document"
	"github.com/mcpid/mcpid/services/policy/internal/store"
)

// Config configures a Server.
type Config struct {
	Store     store.Store
	Index     *store.Index
	Engine    *decision.Engine
	Env       *condition.Env
	Validator *document.Validator
	// Batcher receives decision events; nil when no audit service is
	// configured.
	Batcher *auditemit.Batcher
	// StrictAudit: an allow whose event audit did not acknowledge is
	// turned into a denial (the batcher is strict too).
	StrictAudit bool
	// AllowSampleEvery sends one ALLOW decision in N to audit (weight N);
	// 0 or 1 sends every one. Denials and allows of destructive tools are
	// always sent.
	AllowSampleEvery int
	// StoreTimeout bounds each etcd call of a request.
	StoreTimeout time.Duration
	// ProgressInterval is the longest quiet time on a catalogue watch
	// before a progress message.
	ProgressInterval time.Duration
	Logger           *slog.Logger
	Now              func() time.Time
}

// Server implements policyv1.PolicyServiceServer.
type Server struct {
	policyv1.UnimplementedPolicyServiceServer
	cfg         Config
	log         *slog.Logger
	sampleEvery uint64
	allows      atomic.Uint64
}

var _ policyv1.PolicyServiceServer = (*Server)(nil)

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = 10 * time.Second
	}
	if cfg.ProgressInterval <= 0 {
		// The contract promises a message at least every 5 s of quiet.
		cfg.ProgressInterval = 2500 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Sampling keeps one allow in N, with weight N, so inventory counts stay
	// right on average.
	return &Server{cfg: cfg, log: log, sampleEvery: uint64(max(cfg.AllowSampleEvery, 1))}
}

// canonical canonicalizes a request's resource field.
func canonical(field, raw string) (string, error) {
	if raw == "" {
		return "", invalidField(field, "required")
	}
	c, err := resource.Canonicalize(raw)
	if err != nil {
		return "", invalidField(field, "not a resource URI: %v", err)
	}
	return c, nil
}

// ownResource refuses an MCP server that names a resource other than its own.
func ownResource(ctx context.Context, canon string) error {
	p, _ := principal.FromContext(ctx)
	if p.Kind != principal.KindMCPServer || p.Resource == canon {
		return nil
	}
	mine, err := resource.Canonicalize(p.Resource)
	if err != nil || mine != canon {
		return resourceMismatch(canon)
	}
	return nil
}

func (s *Server) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.StoreTimeout)
}
