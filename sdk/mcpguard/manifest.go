package mcpguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
)

func jsonUnmarshal(b []byte, v any) error {
	if len(b) == 0 {
		return fmt.Errorf("empty")
	}
	return json.Unmarshal(b, v)
}

// Manifest is the tool manifest the guard publishes, built from Config.
func (g *Guard) Manifest() *policyv1.Manifest {
	m := &policyv1.Manifest{Resource: g.cfg.Resource, DisplayName: g.cfg.DisplayName, ServerVersion: g.cfg.ServerVersion}
	for _, s := range g.cfg.Scopes {
		m.Scopes = append(m.Scopes, &policyv1.Scope{Name: s.Name, Description: s.Description, Sensitive: s.Sensitive, Implies: s.Implies})
	}
	for _, t := range g.cfg.Tools {
		pt := &policyv1.Tool{Name: t.Name, Description: t.Description, RequiredScopes: t.Scopes,
			Destructive: t.Destructive, RequireVerifiedClient: t.RequireVerifiedClient}
		for _, c := range t.Conditions {
			pt.Conditions = append(pt.Conditions, &policyv1.Condition{Expression: c.Expression, Message: c.Message})
		}
		m.Tools = append(m.Tools, pt)
	}
	return m
}

// Publish publishes the manifest once for the guard's own resource.
func (g *Guard) Publish(ctx context.Context) (*policyv1.PublishManifestResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, max(g.cfg.PolicyTimeout, 5*time.Second))
	defer cancel()
	resp, err := g.decider.client.PublishManifest(cctx, &policyv1.PublishManifestRequest{Manifest: g.Manifest()})
	if err != nil {
		return nil, fmt.Errorf("mcpguard: publishing the tool manifest: %w", err)
	}
	return resp, nil
}

// Run publishes the manifest at start-up and, when Config.Token is set (and
// Config.Revocations is not), follows the token service's revocation feed
// for this resource. Publishing retries (with backoff up to
// DefaultPublishInterval × 16) while the policy service cannot take it; a
// manifest the policy service rejects as invalid is returned as an error at
// once (retrying cannot help), which also stops the feed, so requests then
// fail closed. Without the feed Run returns once the manifest is published;
// with it Run returns when ctx ends, with ctx's error. Call it once.
func (g *Guard) Run(ctx context.Context) error {
	if g.feed == nil {
		return g.publishLoop(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	feedDone := make(chan error, 1)
	go func() { feedDone <- g.feed.Run(ctx) }()
	if err := g.publishLoop(ctx); err != nil {
		cancel()
		// The feed ends with ctx's error; the publish error is the one
		// to report.
		if ferr := <-feedDone; ferr != nil && !errors.Is(ferr, context.Canceled) {
			g.cfg.Logger.Warn("mcpguard: revocation feed stopped", "error", ferr)
		}
		return err
	}
	return <-feedDone
}

// publishLoop publishes the manifest, retrying until it is taken, rejected,
// or ctx ends.
func (g *Guard) publishLoop(ctx context.Context) error {
	wait := DefaultPublishInterval / 4
	for {
		resp, err := g.Publish(ctx)
		if err == nil {
			if resp.GetState() != policyv1.ResourceState_RESOURCE_STATE_ACTIVE {
				g.cfg.Logger.Warn("mcpguard: manifest published, but the resource has no operator policy yet: an operator must apply one before tokens can be issued",
					"resource", g.cfg.Resource)
			} else {
				g.cfg.Logger.Info("mcpguard: manifest published", "resource", g.cfg.Resource, "changed", resp.GetChanged(), "drift", resp.GetDriftCount())
			}
			return nil
		}
		if permanent(err) {
			return err
		}
		g.cfg.Logger.Warn("mcpguard: cannot publish the manifest yet; retrying", "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, DefaultPublishInterval*16)
	}
}
