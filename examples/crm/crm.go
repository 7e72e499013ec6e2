// Package crm is the example CRM MCP server protected by sdk/mcpguard: three
// tools over an in-memory book of contacts and deals, each with the scope it
// needs, and the operator policy that goes with it. `mcpid dev` runs it
// in-process; cmd/crm runs it on its own.
package crm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/sdk/mcpguard"
)

// Scopes of the CRM.
const (
	ScopeContactsRead   = "crm:contacts.read"
	ScopeDealsWrite     = "crm:deals.write"
	ScopeContactsExport = "crm:contacts.export"
)

// Version is the server version published in the manifest.
const Version = "1.0.0"

// Config configures the CRM server.
type Config struct {
	// Resource is the canonical URL of the MCP endpoint, for example
	// http://127.0.0.1:8090/mcp. Required.
	Resource string
	// Issuer is the mcpid issuer. Required.
	Issuer string
	// Policy is a connection to the policy service authenticated as
	// Resource (its MCP-server mTLS certificate). Required.
	Policy grpc.ClientConnInterface
	// Token is a connection to the token service authenticated as Resource
	// (the same MCP-server certificate): the guard follows the revocation
	// feed of the CRM through it, so a revoked grant stops working within
	// a second (see mcpguard.Config.Token). Optional but recommended.
	Token grpc.ClientConnInterface
	// Revocations overrides the feed Token gives (see
	// mcpguard.Config.Revocations).
	Revocations mcpguard.Revocations
	// JWKSURL overrides Issuer + /oauth2/jwks.
	JWKSURL string
	Logger  *slog.Logger
}

// Server is the CRM MCP server.
type Server struct {
	guard   *mcpguard.Guard
	handler http.Handler
	log     *slog.Logger
}

// GuardConfig is the mcpguard configuration of the CRM: its scopes and
// tools as declared in code (the manifest).
func GuardConfig(c Config) mcpguard.Config {
	return mcpguard.Config{
		Resource:      c.Resource,
		Issuer:        c.Issuer,
		JWKSURL:       c.JWKSURL,
		Policy:        c.Policy,
		Token:         c.Token,
		Revocations:   c.Revocations,
		DisplayName:   "Acme CRM",
		ServerVersion: Version,
		Scopes: []mcpguard.Scope{
			{Name: ScopeContactsRead, Description: "Read your contacts"},
			{Name: ScopeDealsWrite, Description: "Change your deals"},
			{Name: ScopeContactsExport, Description: "Export your whole contact list", Sensitive: true},
		},
		Tools: []mcpguard.Tool{
			{Name: "list_contacts", Description: "List contacts", Scopes: []string{ScopeContactsRead}},
			{Name: "update_deal", Description: "Change a deal's stage", Scopes: []string{ScopeDealsWrite}, Destructive: true},
			{Name: "export_contacts", Description: "Export every contact as CSV", Scopes: []string{ScopeContactsExport}},
		},
		// A first session reads contacts; writing deals is a step-up.
		ChallengeScopes: []string{ScopeContactsRead},
		Logger:          c.Logger,
	}
}

// Policy is the CRM's operator policy: it activates the resource and allows
// exports only to verified agents, by a CEL condition.
func Policy(resource string) *policyv1.Policy {
	return &policyv1.Policy{
		Resource:    resource,
		DisplayName: "Acme CRM",
		Tools: []*policyv1.Tool{
			{Name: "list_contacts"},
			{Name: "update_deal"},
			{Name: "export_contacts", Conditions: []*policyv1.Condition{{
				Expression: "client.verified",
				Message:    "exports are allowed only to verified agents",
			}}},
		},
	}
}

// New builds the server. It contacts nothing until Run.
func New(c Config) (*Server, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	g, err := mcpguard.New(GuardConfig(c))
	if err != nil {
		return nil, err
	}
	s := &Server{guard: g, log: c.Logger}
	s.handler = g.Handler(newMCPServer(newBook()), nil)
	return s, nil
}

// Guard is the server's guard.
func (s *Server) Guard() *mcpguard.Guard { return s.guard }

// Handler serves the MCP endpoint and the protected resource metadata.
func (s *Server) Handler() http.Handler { return s.handler }

// Run publishes the manifest (in the background, retrying until the policy
// service takes it), follows the revocation feed when Config.Token is set,
// and serves on lis until ctx ends, then shuts down within 5 s.
func (s *Server) Run(ctx context.Context, lis net.Listener) error {
	defer s.guard.Close()
	guardCtx, cancelGuard := context.WithCancel(ctx)
	guardDone := make(chan struct{})
	go func() {
		defer close(guardDone)
		if err := s.guard.Run(guardCtx); err != nil && !errors.Is(err, context.Canceled) {
			// The manifest was refused: the feed stops too, so requests
			// fail closed until the server is fixed and restarted.
			s.log.Error("crm: guard stopped", "error", err)
		}
	}()
	defer func() { cancelGuard(); <-guardDone }()
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("crm: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("crm: shutdown: %w", err)
	}
	return nil
}
