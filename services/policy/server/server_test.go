package server_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/policy/server"
)

func TestServesWithEtcd(t *testing.T) {
	etcd := etcdtest.Start(t)
	srv, err := server.Config{Flags: servicetest.Flags(etcd.Endpoints())}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	servicetest.WaitReady(t, srv, server.Name)

	// Check is for MCP servers and operators: an anonymous caller is refused
	// (never an ALLOW by accident).
	_, err = policyv1.NewPolicyServiceClient(servicetest.Dial(t, srv)).Check(context.Background(), &policyv1.CheckRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous Check: %v, want Unauthenticated", err)
	}
}

// TestAllowlistOverMTLS: the real allowlist over real TLS — an MCP server
// certificate reaches Check (and its empty request is refused by the
// handler), a service that may not call it is refused.
func TestAllowlistOverMTLS(t *testing.T) {
	etcd := etcdtest.Start(t)
	pki := servicetest.NewPKI(t)
	srv, err := server.Config{
		Flags:      pki.ServeTLS(t, server.Name, servicetest.Flags(etcd.Endpoints())),
		GatewayTLS: pki.GatewayTLS(server.Name),
	}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)

	asServer := policyv1.NewPolicyServiceClient(pki.Dial(t, srv, server.Name, pki.AsMCPServer(t, "https://crm.example.com/mcp")))
	if _, err := asServer.Check(context.Background(), &policyv1.CheckRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("MCP server Check: %v, want InvalidArgument (allowed through)", err)
	}
	asAudit := policyv1.NewPolicyServiceClient(pki.Dial(t, srv, server.Name, pki.AsService(t, "audit")))
	if _, err := asAudit.Check(context.Background(), &policyv1.CheckRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("audit service Check: %v, want PermissionDenied", err)
	}
}
