package server_test

import (
	"context"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/token/server"
)

// TestServesWithDefaults runs the service as `mcpid dev` builds it: only
// the common flags (no KEK file, no registration or policy address).
func TestServesWithDefaults(t *testing.T) {
	etcd := etcdtest.Start(t)
	srv, err := server.Config{Flags: servicetest.Flags(etcd.Endpoints())}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	servicetest.WaitReady(t, srv, server.Name)

	base := "http://" + srv.HTTPAddr().String()
	code, body := servicetest.HTTP(t, http.MethodPost, base+"/oauth2/token",
		"application/x-www-form-urlencoded", "grant_type=client_credentials&client_id=x&client_secret=y")
	if code != http.StatusUnauthorized || body != `{"error":"invalid_client","error_description":"unknown client"}`+"\n" {
		t.Fatalf("POST /oauth2/token = %d %q", code, body)
	}
	if code, body := servicetest.HTTP(t, http.MethodGet, base+"/oauth2/jwks", "", ""); code != http.StatusOK {
		t.Fatalf("GET /oauth2/jwks = %d %q", code, body)
	}
	// Operator methods are closed to anonymous callers.
	_, err = tokenv1.NewTokenServiceClient(servicetest.Dial(t, srv)).ListGrants(context.Background(), &tokenv1.ListGrantsRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous ListGrants: %v, want Unauthenticated", err)
	}
}
