package server_test

import (
	"context"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/audit/server"
)

func TestServesWithEtcd(t *testing.T) {
	etcd := etcdtest.Start(t)
	srv, err := server.Config{Flags: servicetest.Flags(etcd.Endpoints())}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	servicetest.WaitReady(t, srv, server.Name)

	// Only services may append events.
	_, err = auditv1.NewAuditServiceClient(servicetest.Dial(t, srv)).AppendEvents(context.Background(), &auditv1.AppendEventsRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous AppendEvents: %v, want Unauthenticated", err)
	}
	// The read-only REST routes are closed to anonymous callers too.
	code, _ := servicetest.HTTP(t, http.MethodGet, "http://"+srv.HTTPAddr().String()+"/v1/audit/events", "", "")
	if code != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /v1/audit/events = %d, want 401", code)
	}
}
