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

func TestServesWithEtcd(t *testing.T) {
	etcd := etcdtest.Start(t)
	srv, err := server.Config{Flags: servicetest.Flags(etcd.Endpoints())}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	servicetest.WaitReady(t, srv, server.Name)

	// The OAuth surface is routed through the gateway and the OAuth edge:
	// not implemented yet, answered as an RFC 6749 error.
	code, body := servicetest.HTTP(t, http.MethodPost, "http://"+srv.HTTPAddr().String()+"/oauth2/token",
		"application/x-www-form-urlencoded", "grant_type=client_credentials")
	if code != http.StatusNotImplemented || body != `{"error":"server_error","error_description":"not implemented"}`+"\n" {
		t.Fatalf("POST /oauth2/token = %d %q", code, body)
	}
	// Operator methods are closed to anonymous callers.
	_, err = tokenv1.NewTokenServiceClient(servicetest.Dial(t, srv)).ListGrants(context.Background(), &tokenv1.ListGrantsRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous ListGrants: %v, want Unauthenticated", err)
	}
}
