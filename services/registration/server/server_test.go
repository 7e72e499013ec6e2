package server_test

import (
	"context"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/registration/server"
)

func TestServesWithEtcd(t *testing.T) {
	etcd := etcdtest.Start(t)
	srv, err := server.Config{Flags: servicetest.Flags(etcd.Endpoints())}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	servicetest.WaitReady(t, srv, server.Name)

	base := "http://" + srv.HTTPAddr().String()
	code, body := servicetest.HTTP(t, http.MethodPost, base+"/oauth2/register", "application/json", `{"redirect_uris":["http://127.0.0.1/cb"]}`)
	if code != http.StatusNotImplemented || body != `{"error":"server_error","error_description":"not implemented"}`+"\n" {
		t.Fatalf("POST /oauth2/register = %d %q", code, body)
	}
	// RFC 7591 requires JSON: the edge refuses a form before any handler runs.
	code, body = servicetest.HTTP(t, http.MethodPost, base+"/oauth2/register", "application/x-www-form-urlencoded", "client_name=x")
	if code != http.StatusBadRequest || body != `{"error":"invalid_request","error_description":"Content-Type must be application/json"}`+"\n" {
		t.Fatalf("form POST /oauth2/register = %d %q", code, body)
	}
	// Only the token service may authenticate clients.
	_, err = registrationv1.NewRegistrationServiceClient(servicetest.Dial(t, srv)).AuthenticateClient(context.Background(), &registrationv1.AuthenticateClientRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous AuthenticateClient: %v, want Unauthenticated", err)
	}
}
